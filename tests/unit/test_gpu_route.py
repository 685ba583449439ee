"""What a first CUDA run would hit, checked on CPU (issue 24): int8 quantizes a weight already on its
device, the int8 rung is weight-only, the dense base is not resident beside a built model, cache keys
carry device and dtype, and lm-eval gets a bounded context."""

import pytest
import torch

from autoqra.evaluate import EvalSettings, Evaluator
from autoqra.lmeval import DEFAULT_MAX_LENGTH, lm_eval_max_length
from autoqra.models import prepare_model
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant import BaseModel, QuantCache, build
from autoqra.quant.backends import bnb_layer, bnb_quantize, int8_dequantize
from autoqra.train import Fidelity, TrainSettings
from autoqra.train_memory import held_tensor_bytes

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("micro") / "m"
    prepare_model(MICRO, d, seed=0)
    return d


def test_int8_quantizes_a_weight_already_on_its_device(monkeypatch):
    """bnb's Int8Params.to() quantizes only when the data moves from the CPU: on CUDA a weight already
    there came back with SCB None. Emulate that here: the int8 path must not depend on it."""
    import bitsandbytes as bnb

    def to_like_on_cuda(self, *args, **kwargs):  # data already on the target device: no quantization
        return self

    monkeypatch.setattr(bnb.nn.Int8Params, "to", to_like_on_cuda)
    w = torch.randn(48, 64) * 0.05
    state = bnb_quantize(w, 8)
    assert state["weight"].dtype == torch.int8 and state["SCB"].shape == (48,)
    scale = state["SCB"] / 127.0
    err = (int8_dequantize(state["weight"], state["SCB"], torch.float32) - w).abs()
    assert torch.all(err <= scale.unsqueeze(1) * 0.5 + 1e-4)  # within half an int8 step per row
    assert torch.allclose(state["SCB"], w.abs().amax(1), rtol=1e-3)


def test_int8_rung_is_weight_only_in_eval_and_training():
    """bnb's own Linear8bitLt at threshold 0 quantizes the activations to int8 (W8A8) on CUDA; the
    rung computes x @ dequant(W).T in the compute dtype, the same in eval and training mode."""
    torch.manual_seed(0)
    w = torch.randn(32, 64) * 0.05
    layer = bnb_layer(bnb_quantize(w, 8), 8, "cpu", torch.float32)
    dense = int8_dequantize(layer.weight.data, layer.weight.SCB, torch.float32)
    x = torch.randn(3, 5, 64) * 4.0
    x[..., 7] = 40.0  # an outlier feature: int8 activations would crush the others
    for mode in (False, True):
        layer.train(mode)
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        assert torch.allclose(y, xi @ dense.T, atol=1e-5)
        y.pow(2).sum().backward()
        ref = x.clone().requires_grad_(True)
        (ref @ dense.T).pow(2).sum().backward()
        assert torch.allclose(xi.grad, ref.grad, rtol=1e-5, atol=1e-4)
    assert layer.weight.SCB is not None  # stays on the weight, where stored_bytes and the memory count read it


def test_dense_base_is_not_resident_once_a_model_is_built(model_dir, tmp_path):
    """The CUDA allocator sees every tensor on the GPU: base and built model together must hold no
    more than the built model alone (on CPU, the same count over held tensors)."""
    base = BaseModel(model_dir, device="cpu")
    plan = Plan.mapped((2, 4, 8, 16), (4, 8, 8, 4), {2: "hqq", 4: "nf4", 8: "int8", 16: "none"}, group_size=32)
    built = build(model_dir, plan, cache_dir=tmp_path, base=base)
    both = torch.nn.ModuleList([base.model, built.model])
    assert held_tensor_bytes(both) == held_tensor_bytes(built.model)
    assert all(base.model.get_submodule(projection_module(b, p)).weight.is_meta
               for b in range(4) for p in PROJECTIONS)
    # the same model as one built from a base that keeps its dense projections
    dense = BaseModel(model_dir, device="cpu", keep_dense=True)
    ref = build(model_dir, plan, cache_dir=tmp_path, base=dense)
    assert ref.info["cache_hits"] == 21 and ref.info["cache_misses"] == 0
    ids = torch.randint(0, 500, (2, 12))
    with torch.no_grad():
        assert torch.allclose(built.model(input_ids=ids).logits, ref.model(input_ids=ids).logits, atol=1e-5)
    for p in PROJECTIONS:
        assert torch.equal(base.dense_weight(3, p), dense.model.get_submodule(projection_module(3, p)).weight)


def test_cache_keys_differ_by_device_and_dtype(model_dir, tmp_path):
    paths = {QuantCache(tmp_path, "b", device=d, dtype=t).path("hqq", 32, 0, 4, 0, "q_proj")
             for d in ("cpu", "cuda", "cuda:1") for t in (torch.float32, torch.bfloat16)}
    assert len(paths) == 4  # the device index does not matter, its type does
    base = BaseModel(model_dir, device="cpu")
    assert QuantCache.for_base(tmp_path, base).path("nf4", 32, 0, 4, 0, "q_proj") == \
        QuantCache(tmp_path, base.base_id, device="cpu", dtype=torch.float32).path("nf4", 32, 0, 4, 0, "q_proj")
    keys = {}
    for device in ("cpu", "cuda"):  # the key is computed before any model is loaded
        ev = Evaluator(model_dir, _data(tmp_path), tmp_path / "c", fidelities={"lf": Fidelity("lf", steps=1)},
                       train=TrainSettings(), eval=EvalSettings(), device=device)
        key = ev.settings_key(ev.fidelity("lf"))
        keys[device] = (key["device"], key["compute_dtype"], ev.record_path(Plan.uniform(4, 4, 8), "lf", 0))
    assert keys["cpu"][:2] == ("cpu", "float32") and keys["cuda"][:2] == ("cuda", "bfloat16")
    assert keys["cpu"][2] != keys["cuda"][2]


def _data(root):
    from autoqra.data import prepare_data

    d = root / "data"
    if not d.exists():
        prepare_data({"source": "synthetic", "n_train": 8, "n_val": 4, "n_test": 4}, d, seed=0)
    return d


def test_lm_eval_context_is_bounded(model_dir):
    """HFLM without max_length takes the model's own (8,192 on Llama-3, 40,960 on Qwen3) for wikitext's
    rolling windows; run_lm_eval passes min(that, 2048) or lm_eval.max_length (test_finetune_lmeval
    checks that HFLM got it)."""
    model = BaseModel(model_dir, device="cpu").model
    assert lm_eval_max_length(model) == 512  # the micro model's max positions
    model.config.max_position_embeddings = 40960
    assert lm_eval_max_length(model) == DEFAULT_MAX_LENGTH == 2048
    assert lm_eval_max_length(model, 1024) == 1024
