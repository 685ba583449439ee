"""Exact sub-byte storage of HQQ codes: a rung stores what it says.

HQQ's optimiser chooses the codes (``hqq.core.quantize.Quantizer.quantize`` with ``bitpack=False``,
the settings of ``BaseQuantizeConfig``), so the reconstruction is bit-identical to HQQ's at the same
group size and axis. Only the storage differs from hqq 0.2.8, which packs ten 3-bit codes per int32
along the grouped view's first axis and pads it (4.0 bits per weight at g64 axis 0):

- codes, in HQQ's grouped-view order (axis 0: ``(g, n/g)``, axis 1: ``(n/g, g)``), flattened and packed
  little-endian: 2-bit 4 per byte, 3-bit 8 in 3 bytes, 4-bit 2 per byte, 8-bit 1 per byte; the only
  padding is the tensor's last partial word;
- metadata (``meta_bits``): 16 = fp16 scale and zero per group; 8 = scale (in log2) and zero each
  quantized to uint8 per block of :data:`META_BLOCK` groups with an fp16 (offset, step) per block.

Dequantization is plain vectorised torch (CPU and CUDA): metadata in float32, codes in float32,
``(code - zero) * scale``, and only then the cast to the compute dtype.
"""

from __future__ import annotations

import math

import torch

from autoqra.memory import HQQ_META_BLOCK as META_BLOCK
from autoqra.memory import HQQ_PACKING as PACKING
from autoqra.plan import META_BITS


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes of ``n`` packed ``bits``-bit codes (the last partial word padded)."""
    per, nbytes = PACKING[bits]
    return math.ceil(n / per) * nbytes


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` (any shape, read flat) into a flat uint8 tensor.

    Planar layout: with ``per`` codes per word and ``m = ceil(n / per)`` words, word ``j`` holds codes
    ``j, m + j, 2m + j, ...`` (code ``k·m + j`` at bit ``k·bits``); multi-byte words (3-bit) are stored
    as byte planes (all low bytes, then the middle ones, then the high ones). Unpacking then writes
    whole contiguous slices, which is what makes it as fast as HQQ's own unpacking.
    """
    if bits not in PACKING:
        raise ValueError(f"cannot pack {bits}-bit codes; expected one of {sorted(PACKING)}")
    flat = codes.reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes outside [0, {1 << bits}) cannot be packed in {bits} bits")
    per, nbytes = PACKING[bits]
    pad = -flat.numel() % per
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(per, device=flat.device, dtype=torch.int32)[:, None] * bits
    words = (flat.view(per, -1) << shifts).sum(0, dtype=torch.int32)
    byte_shifts = torch.arange(nbytes, device=flat.device, dtype=torch.int32)[:, None] * 8
    return ((words[None, :] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack_codes(packed: torch.Tensor, bits: int, n: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The first ``n`` codes of a :func:`pack_codes` tensor, as ``dtype`` (one vectorised op per code
    slot of a word, never a loop over elements)."""
    per, nbytes = PACKING[bits]
    if bits == 8:
        return packed[:n].to(dtype)
    if nbytes == 1:
        words = packed
    else:
        b = packed.view(nbytes, -1)
        words = b[0].to(torch.int32) | (b[1].to(torch.int32) << 8) | (b[2].to(torch.int32) << 16)
    mask = (1 << bits) - 1
    out = torch.empty(per, words.numel(), dtype=dtype, device=packed.device)
    for k in range(per):  # per <= 8 slices of m codes each
        out[k] = (words >> (k * bits)) & mask
    return out.view(-1)[:n]


def grouped_shape(out_features: int, in_features: int, group_size: int, axis: int) -> tuple[int, int]:
    """HQQ's grouped view of an (out, in) weight: axis 0 ``(g, n/g)``, axis 1 ``(n/g, g)``."""
    n = out_features * in_features
    return (group_size, n // group_size) if axis == 0 else (n // group_size, group_size)


def hqq_codes(weight: torch.Tensor, bits: int, group_size: int, axis: int) -> dict[str, torch.Tensor]:
    """HQQ's own codes and fp16 scale/zero for a (out, in) weight (optimiser on, as HQQLinear does).

    Returns ``codes`` (uint8, grouped view, flat), ``scale`` and ``zero`` (fp16, one per group).
    """
    from hqq.core.quantize import BaseQuantizeConfig, Quantizer

    params = dict(BaseQuantizeConfig(nbits=bits, group_size=group_size, axis=axis)["weight_quant_params"])
    params.pop("view_as_float", None)
    w_q, meta = Quantizer.quantize(weight.detach().float(), bitpack=False, compute_dtype=torch.float32,
                                   device=str(weight.device), **params)
    return {"codes": w_q.to(torch.uint8).reshape(-1), "scale": meta["scale"].reshape(-1).half(),
            "zero": meta["zero"].reshape(-1).half()}


def quantize_meta(values: torch.Tensor, log: bool, block: int = META_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 codes and per-block fp16 (offset, step) of a metadata vector (log2 domain if ``log``)."""
    v = values.float().reshape(-1)
    if log:
        v = torch.log2(v.abs().clamp_min(1e-30))
    pad = -v.numel() % block
    blocks = torch.cat([v, v[-1:].expand(pad)]).view(-1, block) if pad else v.view(-1, block)
    lo = blocks.min(1).values.half()
    step = ((blocks.max(1).values - lo.float()) / 255).clamp_min(1e-7).half()
    q = torch.round((blocks - lo.float()[:, None]) / step.float()[:, None]).clamp_(0, 255)
    return q.to(torch.uint8).reshape(-1)[: v.numel()], torch.stack([lo, step], 1)


def dequantize_meta(q: torch.Tensor, qmeta: torch.Tensor, log: bool, block: int = META_BLOCK) -> torch.Tensor:
    """float32 metadata from :func:`quantize_meta`'s output."""
    block = torch.arange(q.numel(), device=q.device) // block
    qm = qmeta.float()
    v = qm[block, 0] + q.float() * qm[block, 1]
    return torch.exp2(v) if log else v


def packed_state(weight: torch.Tensor, bits: int, group_size: int, axis: int,
                 meta_bits: int = 16) -> dict[str, torch.Tensor]:
    """The stored state of an exactly packed HQQ projection (what the cache keeps)."""
    codes = hqq_codes(weight, bits, group_size, axis)
    return state_from_codes(codes, bits, group_size, axis, meta_bits, tuple(weight.shape))


def state_from_codes(codes: dict[str, torch.Tensor], bits: int, group_size: int, axis: int, meta_bits: int,
                     shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Pack :func:`hqq_codes` output with ``meta_bits`` metadata."""
    if meta_bits not in META_BITS:
        raise ValueError(f"meta_bits must be one of {META_BITS}, got {meta_bits}")
    state = {"W_q": pack_codes(codes["codes"], bits),
             "layout": torch.tensor([bits, group_size, axis, meta_bits, shape[0], shape[1]], dtype=torch.int64)}
    if meta_bits == 16:
        state["scale"], state["zero"] = codes["scale"].half(), codes["zero"].half()
    else:
        state["scale_q"], state["scale_qmeta"] = quantize_meta(codes["scale"], log=True)
        state["zero_q"], state["zero_qmeta"] = quantize_meta(codes["zero"], log=False)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def with_meta_bits(state: dict[str, torch.Tensor], meta_bits: int) -> dict[str, torch.Tensor]:
    """A 16-bit-metadata state re-stored at ``meta_bits`` (same codes; no re-quantization of weights)."""
    bits, g, axis, mb, out_f, in_f = (int(x) for x in state["layout"].tolist())
    if mb == meta_bits:
        return state
    if mb != 16:
        raise ValueError(f"can only convert a 16-bit-metadata state, got meta_bits {mb}")
    codes = {"codes": unpack_codes(state["W_q"], bits, out_f * in_f), "scale": state["scale"],
             "zero": state["zero"]}
    return state_from_codes(codes, bits, g, axis, meta_bits, (out_f, in_f))


class _PackedMatmul(torch.autograd.Function):
    """``x @ W.T`` with W dequantized in forward and again in backward: nothing but the layer is
    kept for backward (frozen weights need no input), so no dense copy outlives the call."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return torch.nn.functional.linear(x, layer.dequantize(x.dtype))

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[0]:
            return None, None
        return grad_out @ ctx.layer.dequantize(grad_out.dtype), None


class PackedLinear(torch.nn.Module):
    """A frozen linear layer holding exactly packed HQQ codes and their metadata as buffers."""

    def __init__(self, state: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        bits, g, axis, meta_bits, out_f, in_f = (int(x) for x in state["layout"].tolist())
        self.bits, self.group_size, self.axis, self.meta_bits = bits, g, axis, meta_bits
        self.out_features, self.in_features = out_f, in_f
        self.compute_dtype = compute_dtype
        self.rows, self.cols = grouped_shape(out_f, in_f, g, axis)
        for k, v in state.items():
            if k != "layout":
                self.register_buffer(k, v.clone().to(device))
        self.bias = None

    @property
    def meta_keys(self) -> tuple[str, ...]:
        return ("scale", "zero") if self.meta_bits == 16 else ("scale_q", "scale_qmeta", "zero_q", "zero_qmeta")

    def layout(self) -> torch.Tensor:
        return torch.tensor([self.bits, self.group_size, self.axis, self.meta_bits, self.out_features,
                             self.in_features], dtype=torch.int64)

    def state(self) -> dict[str, torch.Tensor]:
        """The stored state (the inverse of the constructor)."""
        return {"W_q": self.W_q.cpu(), **{k: getattr(self, k).cpu() for k in self.meta_keys},
                "layout": self.layout()}

    def scale_zero(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 per-group scale and zero."""
        if self.meta_bits == 16:
            return self.scale.float(), self.zero.float()
        return (dequantize_meta(self.scale_q, self.scale_qmeta, log=True),
                dequantize_meta(self.zero_q, self.zero_qmeta, log=False))

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The (out, in) weight: metadata and arithmetic in float32, then cast to ``dtype``
        (default the compute dtype)."""
        scale, zero = self.scale_zero()
        view = (1, -1) if self.axis == 0 else (-1, 1)
        w = unpack_codes(self.W_q, self.bits, self.rows * self.cols, torch.float32).view(self.rows, self.cols)
        w = w.sub_(zero.view(view)).mul_(scale.view(view)).view(self.out_features, self.in_features)
        return w.to(dtype or self.compute_dtype)

    def stored_bytes(self) -> dict[str, int]:
        """Bytes of the packed codes and of the metadata buffers."""
        meta = sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in self.meta_keys)
        return {"weights": self.W_q.numel() * self.W_q.element_size(), "quant_meta": meta}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _PackedMatmul.apply(x, self)
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, axis={self.axis}, meta_bits={self.meta_bits}")
