"""SharedContextLM computes what lm-eval's HFLM computes, request by request (issue #23)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from autoqra.lmeval_model import SharedContextLM, _common_prefix  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXTS = ["The capital of France is", "Sort the numbers 3, 1, 2:", "Q: what is 6 minus 4?\nA:",
            "The capital of France is"]  # a context twice: its requests are one group
CHOICES = [[" Paris", " Lyon", " a city in the north", " Marseille"], [" 1, 2, 3", " 3, 2, 1", " 2"],
           ["\n2", "\n12", "\ntwo, since six minus four is two"], [" Nice"]]  # a shared leading newline


@pytest.fixture(scope="module")
def models(micro_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32).eval()
    return model, tok


def _lms(models, **kw):
    model, tok = models
    return (HFLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu", max_length=64, **kw),
            SharedContextLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu", max_length=64, **kw))


HEADER = "### Instruction:\n"  # a template header every context starts with: computed once


def _token_requests(lm, header=""):
    reqs = []
    for ctx, choices in zip(CONTEXTS, CHOICES, strict=True):
        for ch in choices:
            reqs.append(((header + ctx, ch), *lm._encode_pair(header + ctx, ch)))
    return reqs


@pytest.mark.parametrize(("attn", "head", "header"), [("sdpa", None, ""), ("sdpa", None, HEADER),
                                                     ("eager", None, HEADER), ("sdpa", False, HEADER)])
def test_loglikelihoods_match_hflm(models, attn, head, header):
    """head None: the output layer at the read cells only (checked against the model's own logits on
    the first forward); False: the model's own logits over the last columns. With the header, the
    contexts' common prefix is computed once and read from the cache."""
    model, _ = models
    model.set_attn_implementation(attn)
    try:
        ref, fast = _lms(models)
        fast._head_ok = head
        reqs = _token_requests(ref, header)
        assert fast._run_prefix(list({tuple(c) for _, c, _ in reqs}))[0] >= (2 if header else 0)
        newline = [tuple(cont[:-1]) for (ctx, _), _, cont in reqs if ctx.endswith("A:")]
        assert _common_prefix(newline)  # the choices' shared first token is computed once
        assert any(len(c) > 2 for _, _, c in reqs) and any(len(c) == 1 for _, _, c in reqs)
        want = ref._loglikelihood_tokens(reqs)
        got = fast._loglikelihood_tokens(reqs)
    finally:
        model.set_attn_implementation("sdpa")
    assert len(got) == len(want)
    for (lw, gw), (lg, gg) in zip(want, got, strict=True):
        assert lg == pytest.approx(lw, abs=1e-4)
        assert gg == gw
    assert fast._store, "the contexts' keys/values are stored for generation"
    assert fast._head_ok is (head is None)  # a Llama's logits are lm_head(final hidden state)


def test_rolling_loglikelihood_matches_hflm(models):
    ref, fast = _lms(models)
    texts = ["A short paragraph.", "A somewhat longer paragraph of text, " * 3, " ".join(f"w{i * 7 % 13}" for i in range(60))]
    # the last spans two windows of max_length 64 (distinct windows: HFLM reuses the logits of requests
    # whose tokens coincide, which degenerate repeated text can make differ from its own unbatched value)
    reqs = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)]
    assert len(ref.tok_encode(texts[2])) > 64
    want = ref.loglikelihood_rolling(reqs)
    got = fast.loglikelihood_rolling(reqs)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-3)


def test_greedy_generation_matches_hflm_with_and_without_stored_contexts(models):
    ref, fast = _lms(models)
    kwargs = {"until": ["\n", "."], "max_gen_toks": 7, "do_sample": False}
    prompts = [HEADER + c + "\n" for c in CONTEXTS[:3]] + ["Unseen prompt:"]
    reqs = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(kwargs)), idx=i)
            for i, p in enumerate(prompts)]
    want = ref.generate_until(reqs)
    assert fast.generate_until(reqs) == want  # nothing stored yet: plain prefill
    fast._loglikelihood_tokens(_token_requests(fast, HEADER))  # stores the contexts (header from the cache)
    assert max(fast._stored_prefix(tuple(fast.tok_encode(p))) for p in prompts) > 0
    assert fast.generate_until(reqs) == want


def test_single_requests_sampling_and_truncation(models, monkeypatch):
    ref, fast = _lms(models)
    calls = []
    monkeypatch.setattr(HFLM, "generate_until", lambda self, reqs, disable_tqdm=False: calls.append("gen") or ["x"])
    sampled = Instance(request_type="generate_until", doc={}, idx=0,
                       arguments=("Hi", {"until": ["\n"], "do_sample": True, "temperature": 0.7}))
    assert fast.generate_until([sampled]) == ["x"] and calls == ["gen"]
    single = [(None, [5, 6, 7], [8, 9, 10]), (None, [11, 12], [13])]  # a request per row: the 2-D mask path
    assert [a for a, _ in fast._loglikelihood_tokens(single)] == pytest.approx(
        [a for a, _ in ref._loglikelihood_tokens(single)], abs=1e-4)
    long_ctx = list(range(5, 5 + 70))  # longer than max_length: lm-eval truncates it, HFLM's own path
    reqs = [(None, long_ctx, [7, 8])]
    assert fast._loglikelihood_tokens(reqs)[0][0] == pytest.approx(ref._loglikelihood_tokens(reqs)[0][0], abs=1e-4)
