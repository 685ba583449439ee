"""lm-eval's HF model, computing each shared context once (issue #23).

lm-eval's ``HFLM`` scores a log-likelihood request ``(context, continuation)`` by one forward pass over
``context + continuation[:-1]``. A multiple-choice document sends its context once per choice, so a
4-choice task computes every prompt four times; rolling log-likelihood (wikitext-style perplexity)
batches its windows in document order and pads each batch to its longest window; greedy generation
runs every row of a batch until the whole batch is done. :class:`SharedContextLM` computes the same
numbers with less work:

1. **Packed rows.** The continuations of one context are packed into one row after it,
   ``[context | choice 1 | choice 2 | ...]``, with a tree-shaped attention mask (each choice sees the
   context and its own earlier tokens) and position ids that restart after the context for every
   choice: each token gets exactly the attention and position it has in HFLM's own row. The
   context is computed once, and only the last context token and the continuations go through the
   output layer. Rows are right-aligned (left padding), so a batch pads to its longest row. A row holds up to ``ROW_TOKENS`` tokens of continuations (more only for one long
   continuation), rows are sorted by length across the whole request list and ``batch_size`` of them
   make a forward; rolling windows thus pack several short paragraphs per row.
2. **Greedy generation** (``generate_until`` with ``do_sample: false``) starts from the longest stored
   context that prefixes its prompt (a generative task over the same prompts as a multiple-choice
   one, whose contexts step 1 stored, computes only the token(s) after it), and drops each row from
   the batch once its text holds a stop sequence or an end-of-text token or it has ``max_gen_toks``
   tokens. The text is cut at the first stop sequence by lm-eval's own post-processing, as in HFLM.
   A decoding step of a few rows costs about as much as reading the weights, so a generation batch
   holds ``batch_size × GEN_TOKENS`` tokens of prompt plus ``max_gen_toks`` (``batch_size`` rows of
   1,024 tokens, 16 times as many rows of 64): fewer, fuller decoding steps.

The log-likelihoods and generations are those of ``HFLM`` up to float rounding (tests/unit/
test_lmeval_model.py compares them request by request); everything else (tasks, metrics, logging) is
lm-eval's own. A call it cannot serve exactly (a seq2seq model, an attention implementation that takes
no custom 4-D mask, an automatic batch size, a request that lm-eval would truncate, sampling, a
generation config whose logits processors change the greedy choice) goes to ``HFLM``'s own path.
Stored contexts are kept up to ``context_store_bytes`` (``autoqra.lmeval.CONTEXT_STORE_BYTES``, 1 GiB) of
key/value tensors (~0.4 GB for the 300 synthetic test prompts on SmolLM2 in fp32).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lm_eval import utils
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)

from autoqra.lmeval import CONTEXT_STORE_BYTES


def _layer_kv(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers cache ([batch, heads, seq, dim] each)."""
    if hasattr(cache, "layers"):  # transformers >= 4.56 / 5
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]  # legacy tuple of tuples


ROW_TOKENS = 256  # continuation tokens packed per log-likelihood row
GEN_TOKENS = 1024  # a generation batch holds batch_size x GEN_TOKENS tokens of prompt + max_gen_toks
GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature"}
# generation-config fields that would make model.generate's greedy choice differ from the plain argmax
_PROCESSORS = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
               "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
               "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,),
               "forced_eos_token_id": (None,), "sequence_bias": (None,), "num_beams": (None, 1),
               "exponential_decay_length_penalty": (None,), "force_words_ids": (None,), "constraints": (None,)}


def _cache_of(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A transformers DynamicCache holding ``layers`` ((keys, values) per layer, [batch, heads, seq, dim])."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def _common_prefix(seqs: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The longest token sequence every one of ``seqs`` starts with."""
    first = min(seqs, key=len)
    n = len(first)
    for seq in seqs:
        while n and seq[:n] != first[:n]:
            n -= 1
    return first[:n]


class SharedContextLM(HFLM):
    """``HFLM`` whose log-likelihood requests share the computation of a common context, and whose
    greedy generation reuses stored contexts and stops each row when it is done."""

    def __init__(self, *args, context_store_bytes: int = CONTEXT_STORE_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self.context_store_bytes = int(context_store_bytes)
        self._store: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._store_lengths: set[int] = set()
        self._stored_bytes = 0
        self._head_ok: bool | None = None  # the output layer applied alone reproduces the logits (checked once)
        self.request_seconds: dict[str, float] = {}  # wall seconds per request type (loglikelihood, ...)

    def _timed(self, kind: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.request_seconds[kind] = self.request_seconds.get(kind, 0.0) + time.perf_counter() - t0

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._timed("loglikelihood", super().loglikelihood, requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        batch = override_bs if override_bs is not None else self.batch_size
        if (not self._packing_ok() or not isinstance(batch, int) or batch < 1
                or any(len(ctx) < 1 or len(cont) < 1 or len(ctx) + len(cont) > self.max_length + 1
                       for _, ctx, cont in requests)):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        return self._packed_loglikelihood(requests, batch)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._timed("loglikelihood_rolling", self._rolling, requests, disable_tqdm=disable_tqdm)

    def _rolling(self, requests, disable_tqdm: bool = False):
        """Every window of every document in one call (HFLM batches them in document order), so the
        windows are sorted by length across documents and packed."""
        if self.batch_size == "auto" or self.world_size > 1 or self.backend != "causal":
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        windows, owner = [], []
        for i, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=True), strict=True):
            totals[i] += logprob
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------------------------------------
    def _forward(self, **kwargs) -> Any:
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(**kwargs)

    def _packing_ok(self) -> bool:
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        return self.backend == "causal" and impl in ("sdpa", "eager")

    def _packed_loglikelihood(self, requests, batch: int) -> list[tuple[float, bool]]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, ctx, _) in enumerate(requests):
            groups.setdefault(tuple(ctx), []).append(i)
        rows: list[tuple[tuple[int, ...], list[int]]] = []  # (context, request indices) per packed row
        for ctx, members in groups.items():
            members = sorted(members, key=lambda r: -len(requests[r][2]))
            row, used = [], 0
            for r in members:
                need = len(requests[r][2]) - 1
                if row and used + need > ROW_TOKENS:
                    rows.append((ctx, row))
                    row, used = [], 0
                row.append(r)
                used += need
            rows.append((ctx, row))
        width = {id(row): len(ctx) + sum(len(requests[r][2]) - 1 for r in row) for ctx, row in rows}
        rows.sort(key=lambda cr: (-width[id(cr[1])], cr[0]))
        prefix = self._run_prefix(list(groups))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(rows), batch):
            self._score_rows(requests, rows[start:start + batch], results, prefix)
        return results  # type: ignore[return-value]

    def _run_prefix(self, contexts: list[tuple[int, ...]]):
        """(length, per-layer keys/values [1, heads, length, dim]) of the tokens every context starts
        with (a prompt template's header), computed once; (0, None) when shorter than 2 tokens. Each
        context keeps at least its last token outside it (its logits are read)."""
        head = _common_prefix(contexts)
        n = min(len(head), min(len(c) for c in contexts) - 1)
        if n < 2:
            return 0, None
        ids = torch.tensor([head[:n]], dtype=torch.long, device=self.device)
        out = self._forward(input_ids=ids, use_cache=True, logits_to_keep=1)
        return n, _layer_kv(out.past_key_values)

    def _score_rows(self, requests, rows, results, prefix) -> None:
        """One forward over packed rows ``[left pad | context | continuations]`` (the contexts' common
        ``prefix`` in the cache before them); fills ``results[request] = (log-likelihood, is greedy)``
        and stores the contexts' keys/values."""
        p, pkv = prefix
        n = len(rows)
        # a row's continuations share their common leading input tokens (e.g. the newline before every
        # choice): [context | shared | own tokens of choice 1 | own tokens of choice 2 | ...]
        shared = [_common_prefix([tuple(requests[r][2][:-1]) for r in row]) for _, row in rows]
        tails = [len(q) + sum(len(requests[r][2]) - 1 - len(q) for r in row) for (_, row), q in zip(rows, shared, strict=True)]
        total = max(len(ctx) - p + t for (ctx, _), t in zip(rows, tails, strict=True))
        keep = max(tails) + 1  # output-layer columns: the last context token and every continuation
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, total), pad, dtype=torch.long)
        positions = torch.zeros((n, total), dtype=torch.long)
        # one request per row (long rolling windows): plain causal rows, a 2-D padding mask; else a tree mask
        plain = not p and all(len(row) == 1 for _, row in rows)
        allowed = torch.zeros((n, total, p + total), dtype=torch.bool)
        allowed[:, :, :p] = True  # the common prefix, in the cache
        causal = torch.ones((total, total), dtype=torch.bool).tril()
        starts, spans = [], []  # per row: first context column; [(request, the columns predicting its tokens)]
        for i, ((ctx, row), tail, q) in enumerate(zip(rows, tails, shared, strict=True)):
            c0 = total - tail - (len(ctx) - p)
            c1 = total - tail
            ids[i, c0:c1] = torch.tensor(ctx[p:], dtype=torch.long)
            positions[i, c0:c1] = torch.arange(p, len(ctx))
            allowed[i, c0:c1, p + c0:p + c1] = causal[:c1 - c0, :c1 - c0]
            s0, s1 = c1, c1 + len(q)
            if q:
                ids[i, s0:s1] = torch.tensor(q, dtype=torch.long)
                positions[i, s0:s1] = torch.arange(len(ctx), len(ctx) + len(q))
                allowed[i, s0:s1, p + c0:p + s1] = causal[len(ctx) - p:len(ctx) - p + len(q), :s1 - c0]
            col, row_spans = s1, []
            for r in row:
                own = requests[r][2][len(q):-1]
                m = len(own)
                if m:
                    ids[i, col:col + m] = torch.tensor(own, dtype=torch.long)
                    positions[i, col:col + m] = torch.arange(len(ctx) + len(q), len(ctx) + len(q) + m)
                    allowed[i, col:col + m, p + c0:p + s1] = True
                    allowed[i, col:col + m, p + col:p + col + m] = causal[:m, :m]
                row_spans.append((r, [c1 - 1, *range(s0, s1), *range(col, col + m)]))
                col += m
            starts.append(c0)
            spans.append(row_spans)
        allowed[:, :, p:] |= torch.eye(total, dtype=torch.bool)  # a padding token sees itself (no empty row)
        if plain:
            mask = torch.stack([torch.arange(total) >= total - len(ctx) - t
                                for (ctx, _), t in zip(rows, tails, strict=True)]).long()
        elif self.model.config._attn_implementation == "eager":
            dtype = next(self.model.parameters()).dtype
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
        else:
            mask = allowed[:, None]
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                  "position_ids": positions.to(self.device), "use_cache": True}
        if p:
            kwargs["past_key_values"] = _cache_of([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in pkv])
        # the output layer only where a log-probability is read: each row's last context token and its
        # continuation tokens
        cells = sorted({(i, c) for i, row_spans in enumerate(spans) for _, cols in row_spans for c in cols})
        where = {cell: k for k, cell in enumerate(cells)}
        out, logits = self._logits_at(kwargs, cells, keep, total)
        logz = logits.logsumexp(-1)
        greedy = logits.argmax(-1)
        self._keep_contexts([ctx for ctx, _ in rows], _layer_kv(out.past_key_values), starts, p)
        for i, row_spans in enumerate(spans):
            for r, cols in row_spans:
                at = torch.tensor([where[i, c] for c in cols], device=logits.device)
                tgt = torch.tensor(requests[r][2], device=logits.device)
                answer = (float((logits[at, tgt] - logz[at]).sum()), bool((greedy[at] == tgt).all()))
                results[r] = answer
                if requests[r][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[r][0], answer)

    def _logits_at(self, kwargs: dict, cells: list[tuple[int, int]], keep: int, total: int):
        """(model output, float logits [len(cells), vocab] at the (row, column) ``cells``). The output
        layer is applied to the final hidden states at the cells only, once a first forward has shown
        that it reproduces the model's own logits (a model whose logits are not ``lm_head(last hidden
        state)``, e.g. soft-capped ones, gets ``logits_to_keep`` columns of the model's own logits)."""
        rows = torch.tensor([i for i, _ in cells], device=self.device)
        cols = torch.tensor([c for _, c in cells], device=self.device)
        if self._head_ok is not False:
            out = self._forward(**kwargs, logits_to_keep=1, output_hidden_states=True)
            head = self.model.get_output_embeddings()
            hidden = out.hidden_states[-1]
            with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                                 enabled=self.mixed_precision_dtype is not None):
                if self._head_ok is None:
                    own, mine = out.logits[:, -1].float(), head(hidden[:, -1]).float()
                    self._head_ok = bool(torch.allclose(mine, own, rtol=1e-4, atol=1e-4 * float(own.abs().max())))
                if self._head_ok:
                    return out, head(hidden[rows, cols]).float()
        out = self._forward(**kwargs, logits_to_keep=keep)
        return out, out.logits.float()[rows, cols - (total - keep)]

    # ---------------------------------------------------------------------------------------- store
    def _keep_contexts(self, contexts: list[tuple[int, ...]], kv, starts: list[int], p: int = 0) -> None:
        """Store each context's keys/values (row i: the ``p`` prefix columns, then its own from column
        ``p + starts[i]``) while under the byte cap."""
        for i, (c, c0) in enumerate(zip(contexts, starts, strict=True)):
            if c in self._store:
                continue
            cut = [torch.cat([x[i, :, :p], x[i, :, p + c0:c0 + len(c)]], dim=1) for pair in kv for x in pair]
            rows = list(zip(cut[0::2], cut[1::2], strict=True))
            size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in rows)
            if self._stored_bytes + size > self.context_store_bytes:
                return
            self._store[c] = rows
            self._store_lengths.add(len(c))
            self._stored_bytes += size

    def _stored_prefix(self, tokens: tuple[int, ...]) -> int:
        """Length of the longest stored context that is a proper prefix of ``tokens`` (0 if none)."""
        for n in sorted(self._store_lengths, reverse=True):
            if n < len(tokens) and tokens[:n] in self._store:
                return n
        return 0

    # ----------------------------------------------------------------------------------- generation
    def _greedy_ok(self, requests) -> bool:
        if self.backend != "causal" or not isinstance(self.batch_size, int) or self.think_end_token is not None:
            return False
        gc = getattr(self.model, "generation_config", None)
        if gc is not None and any(getattr(gc, k, None) not in ok for k, ok in _PROCESSORS.items()):
            return False
        for req in requests:
            kw = req.args[1]
            if not isinstance(kw, dict) or set(kw) - GREEDY_KWARGS or kw.get("temperature", 0.0) != 0.0:
                return False
            if kw.get("do_sample", False):
                return False
        return True

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._timed("generate_until", self._generate, requests, disable_tqdm=disable_tqdm)

    def _generate(self, requests, disable_tqdm: bool = False):
        if not self._greedy_ok(requests):
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        gc = getattr(self.model, "generation_config", None)
        eos_ids = {self.eot_token_id}
        own = getattr(gc, "eos_token_id", None)
        eos_ids |= set(own) if isinstance(own, list | tuple) else ({own} if own is not None else set())
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        for members in groups.values():
            kwargs = normalize_gen_kwargs(dict(requests[members[0]].args[1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            left = self.max_length - max_new
            enc = {i: tuple(self.tok_batch_encode([requests[i].args[0]], left_truncate_len=left,
                                                  truncation=self.truncation)[0][0].tolist()) for i in members}
            order = sorted(members, key=lambda i: (-len(enc[i]), requests[i].args[0]))
            start = 0
            while start < len(order):
                rows = order[start:start + self.batch_size * max(1, GEN_TOKENS // (len(enc[order[start]]) + max_new))]
                start += len(rows)
                for i, text in zip(rows, self._greedy_batch([enc[i] for i in rows], until, max_new, eos_ids),
                                   strict=True):
                    results[i] = postprocess_generated_text(generation=text, stop=until, think_end_token=None)
                    self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
        return results

    def _prefill(self, contexts: list[tuple[int, ...]]):
        """Prompt forward reusing stored prefixes: (cache, attention mask, next positions, last logits)."""
        n = len(contexts)
        plen = [self._stored_prefix(c) for c in contexts]
        width_p = max(plen)
        width_r = max(len(c) - p for c, p in zip(contexts, plen, strict=True))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, width_r), pad, dtype=torch.long)
        mask = torch.zeros((n, width_p + width_r), dtype=torch.long)
        positions = torch.zeros((n, width_r), dtype=torch.long)
        for i, (c, p) in enumerate(zip(contexts, plen, strict=True)):
            rest = c[p:]
            ids[i, width_r - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[i, width_p - p:width_p] = 1
            mask[i, width_p + width_r - len(rest):] = 1
            positions[i, width_r - len(rest):] = torch.arange(p, len(c))
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
        if width_p:  # each row's stored prefix, left-padded to the longest
            layers = []
            for layer in range(len(self._store[contexts[plen.index(width_p)][:width_p]])):
                kv = [self._store[c[:p]][layer] if p else self._empty_kv(layer) for c, p in zip(contexts, plen, strict=True)]
                layers.append(tuple(torch.stack([torch.nn.functional.pad(x[j], (0, 0, width_p - p, 0))
                                                 for x, p in zip(kv, plen, strict=True)]) for j in (0, 1)))
            kwargs["past_key_values"] = _cache_of(layers)
        try:
            out = self._forward(**kwargs, logits_to_keep=1)
        except TypeError:
            out = self._forward(**kwargs)
        return out.past_key_values, mask, positions[:, -1] + 1, out.logits[:, -1, :]

    def _empty_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = next(iter(self._store.values()))[layer]
        return k[:, :0], v[:, :0]

    def _greedy_batch(self, contexts: list[tuple[int, ...]], until: list[str], max_new: int, eos_ids: set[int]) -> list[str]:
        """Greedy continuations of ``contexts``, each row dropped from the batch once it is done."""
        cache, mask, nxt_pos, logits = self._prefill(contexts)
        generated: list[list[int]] = [[] for _ in contexts]
        alive = list(range(len(contexts)))
        token = logits.argmax(-1)
        for step in range(max_new):
            keep = []
            for j, row in enumerate(alive):
                t = int(token[j])
                generated[row].append(t)
                text = self.tok_decode(generated[row])
                if not (t in eos_ids or any(stop and stop in text for stop in until)):
                    keep.append(j)
            if not keep or step == max_new - 1:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                mask, nxt_pos, token = mask[idx], nxt_pos[idx], token[idx]
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self._forward(input_ids=token[:, None], attention_mask=mask, position_ids=nxt_pos[:, None],
                                past_key_values=cache, use_cache=True)
            cache, nxt_pos = out.past_key_values, nxt_pos + 1
            token = out.logits[:, -1, :].argmax(-1)
        return [self.tok_decode(g) for g in generated]
