"""Config loading and validation: JSON schema (defaults filled) plus the semantic checks a schema
cannot express (files exist, budget feasible for the model's real shapes).

Every error is a :class:`ConfigError` whose message names the key and what was expected, raised
before any job runs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from autoqra.errors import AutoQRAError, ConfigError, ModelError, PlanError
from autoqra.plan import check_quantizer

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML config file; ConfigError naming the file on syntax errors."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def _validator_with_defaults(schema: Mapping):
    import jsonschema

    base = jsonschema.Draft7Validator

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, Mapping) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": fill_defaults})
    return cls(schema)


# Keys that were replaced, and what replaced them (named in the "unknown key" error).
RENAMED = {"backend": "'backend' was replaced by a quantizer per bit-width: search_space.quantizers "
                      "(e.g. {2: hqq, 3: hqq, 4: nf4, 8: int8}) and, for a uniform method, 'quantizer' "
                      "(hqq, nf4, int8 or none)"}


def _format_error(err) -> str:
    key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        hint = f"; allowed keys: {allowed}" if allowed else ""
        renamed = "".join(f"; {RENAMED[k]}" for k in extra if k in RENAMED)
        return f"config key '{key}': unknown key(s) {extra}{renamed}{hint}"
    if err.validator == "required":
        return f"config key '{key}': {err.message}"
    if err.validator == "enum":
        return f"config key '{key}': {err.instance!r} is not allowed; expected one of {err.validator_value}"
    return f"config key '{key}': {err.message}"


def validate_schema(cfg: Mapping, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Schema-validate a copy of ``cfg`` and return it with defaults filled."""
    schema = load_yaml(schema_path)
    out = copy.deepcopy(dict(cfg))
    errors = sorted(_validator_with_defaults(schema).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [_format_error(e) for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return out


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def check_semantics(cfg: dict, base_dir: Path) -> None:
    """Checks beyond the schema: required companions, files on disk, model specs, budget."""
    from autoqra.memory import ModelShape, resolve_budget, space_memory_model
    from autoqra.models import check_model_spec
    from autoqra.models.peek import peek_config
    from autoqra.plan import Ladders

    data = cfg["data"]
    if data["source"] == "alpaca_file":
        if not data.get("path"):
            raise ConfigError("config key 'data.path': required when data.source is 'alpaca_file' (a .json/.jsonl file)")
        p = _resolve(data["path"], base_dir)
        if not p.is_file():
            raise ConfigError(f"config key 'data.path': file {p} does not exist; expected an Alpaca-format .json/.jsonl file")
    gsrc = data["general_text"]["source"]
    if gsrc != "python_docs":
        p = _resolve(gsrc, base_dir)
        if not p.is_file():
            raise ConfigError(f"config key 'data.general_text.source': {gsrc} is neither 'python_docs' nor an "
                              f"existing text file")
        data["general_text"]["source"] = str(p)
    if data["source"] == "hub" and not data.get("id"):
        raise ConfigError("config key 'data.id': required when data.source is 'hub' (a dataset id)")

    bud = cfg["budget"]
    if bud["type"] in ("bytes", "gb") and "value" not in bud:
        raise ConfigError(f"config key 'budget.value': required when budget.type is '{bud['type']}'")
    if bud["type"] in ("uniform", "between") and "value" in bud:
        raise ConfigError("config key 'budget.value': only allowed with budget.type 'bytes' or 'gb'")
    between_keys = {"low_bits", "high_bits", "fraction"} & set(bud)
    if bud["type"] == "between":
        for k in ("low_bits", "high_bits"):
            if k not in bud:
                raise ConfigError(f"config key 'budget.{k}': required when budget.type is 'between'")
        if bud["low_bits"] >= bud["high_bits"]:
            raise ConfigError(f"config key 'budget.low_bits': {bud['low_bits']} must be below budget.high_bits "
                              f"({bud['high_bits']})")
    elif between_keys:
        raise ConfigError(f"config key 'budget.{sorted(between_keys)[0]}': only allowed with budget.type 'between'")
    if "quantizer" in bud:
        if bud["type"] != "uniform":
            raise ConfigError("config key 'budget.quantizer': only allowed with budget.type 'uniform'")
        try:
            check_quantizer(bud["quantizer"], bud["bits"], where="config key 'budget.quantizer'")
        except PlanError as e:
            raise ConfigError(str(e)) from None

    for name, fid in cfg["fidelities"].items():
        has_steps = "steps" in fid
        has_frac = "data_fraction" in fid or "epochs" in fid
        if has_steps == has_frac or (has_frac and not ("data_fraction" in fid and "epochs" in fid)):
            raise ConfigError(f"config key 'fidelities.{name}': give either 'steps' or both 'data_fraction' "
                              f"and 'epochs', got {sorted(fid)}")
    _check_fidelity_order(cfg)
    src = cfg["sensitivity"]["calib_source"]
    if src != "data" and not _resolve(src, base_dir).is_file():
        raise ConfigError(f"config key 'sensitivity.calib_source': {src} is neither 'data' nor an existing text file")

    space = cfg["search_space"]
    ladders = Ladders(tuple(space["bits"]), tuple(space["ranks"]))
    _check_quantizers(cfg)

    _check_search_settings(cfg)
    _check_methods(cfg)
    _check_finetune(cfg)
    _check_lm_eval(cfg)

    for name, spec in cfg["models"].items():
        key = f"models.{name}"
        if spec["source"] == "local" and spec.get("id"):
            spec["id"] = str(_resolve(spec["id"], base_dir))
        try:
            check_model_spec(spec)
            hf_cfg = peek_config(spec)
        except ModelError as e:
            raise ConfigError(f"config key '{key}': {e}") from None
        if hf_cfg is None:  # hub model not cached offline: checked again when model_prepare has it
            continue
        shape = ModelShape.from_config(hf_cfg, source=key)
        mm = space_memory_model(shape, space)
        errors = mm.layout_errors(sorted(set(ladders.bits) | {bud["bits"]} |
                                         {bud[k] for k in ("low_bits", "high_bits") if k in bud}))
        if errors:
            raise ConfigError(f"config key 'search_space.group_size': HQQ cannot store {key}'s projections with "
                              f"group size {space['group_size']} and axis {space['hqq_axis']}: {errors[0]}")
        resolve_budget(bud, mm, ladders)


def _check_fidelity_order(cfg: dict) -> None:
    """The high fidelity must train more than the low one: more steps, or a larger data_fraction x epochs; a
    step budget against a data budget in examples seen (needs data.n_train, else it waits for the data)."""
    fids, tr, n_train = cfg["fidelities"], cfg["training"], cfg["data"].get("n_train")
    mixed = ("steps" in fids["lf"]) != ("steps" in fids["hf"])

    def examples(f: Mapping[str, Any]) -> float:  # n_train cancels between two data budgets
        if "steps" in f:
            return f["steps"] * tr["batch_size"] * tr["grad_accum"]
        return (n_train or 1) * f["data_fraction"] * f["epochs"]

    if (n_train is not None or not mixed) and examples(fids["hf"]) <= examples(fids["lf"]):
        raise ConfigError(f"config key 'fidelities.hf': the high fidelity must train more than fidelities.lf (more "
                          f"steps, or a larger data_fraction x epochs), got hf {dict(fids['hf'])}, lf {dict(fids['lf'])}"
                          + (" (compared in examples: steps x training.batch_size x grad_accum vs data.n_train x "
                             "data_fraction x epochs)" if mixed else ""))


def _check_quantizers(cfg: dict) -> None:
    """The quantizer map refuses impossible pairs (e.g. nf4 at 3 bits) naming the key, and is
    stored complete (every bit-width, int keys) so that every stage reads the same map."""
    from autoqra.plan import quantizer_map

    space = cfg["search_space"]
    try:
        space["quantizers"] = quantizer_map(space["quantizers"], key="search_space.quantizers")
    except AutoQRAError as e:
        key, _, msg = str(e).partition(": ")
        raise ConfigError(f"config key '{key}': {msg}") from None
    low = min(space["bits"])
    if space["quantizers"][low] == "none" and len(space["bits"]) > 1:
        raise ConfigError(f"config key 'search_space.quantizers.{low}': the lowest rung must be quantized")


def _check_search_settings(cfg: dict) -> None:
    """The cross-key rules of the Stage-1 and Stage-2 settings (promote <= offspring, radii ordered),
    checked by building the very settings objects the stages build."""
    from autoqra.pipeline.common import evolution_settings, trust_region_settings

    for name, variant in cfg["search"]["variants"].items():
        try:
            evolution_settings(cfg["search"], variant)
        except ValueError as e:
            raise ConfigError(f"config key 'search' (variant '{name}'): {e}") from None
    try:
        trust_region_settings(cfg["refine"])
    except ValueError as e:
        raise ConfigError(f"config key 'refine': {e}") from None


def _check_methods(cfg: dict) -> None:
    space = cfg["search_space"]
    variants = cfg["search"]["variants"]
    need = {"search": ("variant",), "uniform": ("bits", "rank"), "sequential": ("rank",), "random": (), "base": (),
            "oracle": ()}
    for name, spec in cfg["methods"].items():
        key = f"methods.{name}"
        missing = [k for k in need[spec["plan"]] if k not in spec]
        if missing:
            raise ConfigError(f"config key '{key}': plan '{spec['plan']}' needs {list(need[spec['plan']])}; "
                              f"missing {missing}")
        if spec["plan"] == "search" and spec["variant"] not in variants:
            raise ConfigError(f"config key '{key}.variant': '{spec['variant']}' is not a search variant; "
                              f"expected one of {sorted(variants)} (search.variants)")
        if spec["plan"] == "oracle":
            if spec.get("rank") is not None and spec["rank"] not in space["ranks"]:
                raise ConfigError(f"config key '{key}.rank': {spec['rank']} is not on the rank ladder {space['ranks']}")
            missing = [b for b in space["bits"] if spec.get("damages") and b not in {int(k) for k in spec["damages"]}]
            if missing:
                raise ConfigError(f"config key '{key}.damages': no damage for rung(s) {missing} of "
                                  f"search_space.bits {space['bits']}")
        if spec["plan"] == "sequential" and spec["rank"] not in space["ranks"]:
            raise ConfigError(f"config key '{key}.rank': {spec['rank']} is not on the rank ladder {space['ranks']}")
        if spec["plan"] == "uniform":
            from autoqra.plan import check_quantizer

            quantizer = spec["quantizer"] or space["quantizers"][spec["bits"]]
            try:
                check_quantizer(quantizer, spec["bits"], where=f"{key}.quantizer")
            except AutoQRAError as e:
                raise ConfigError(f"config key '{key}.quantizer': {str(e).partition(': ')[2]}; "
                                  f"{key}.bits is {spec['bits']}") from None
        if spec["plan"] == "random" and "autoqra" not in variants and cfg["random_search"]["evaluations"] is None:
            raise ConfigError("config key 'random_search.evaluations': required when there is no 'autoqra' "
                              "search variant to match the evaluation cost of")
    if cfg["optuna_search"]["enabled"] and "autoqra" not in variants and cfg["optuna_search"]["evaluations"] is None:
        raise ConfigError("config key 'optuna_search.evaluations': required when there is no 'autoqra' "
                          "search variant to match the evaluation cost of")


def _check_finetune(cfg: dict) -> None:
    ft = cfg["finetune"]
    for where, sec in (("training", cfg["training"]), ("finetune", ft)):
        if sec.get("warmup_steps") and sec.get("warmup_ratio") is not None:
            raise ConfigError(f"config key '{where}': give warmup_steps or warmup_ratio, not both")
    has_steps, has_frac = "steps" in ft, ("data_fraction" in ft or "epochs" in ft)
    if has_steps and has_frac:
        raise ConfigError("config key 'finetune': give either 'steps' or 'data_fraction' and 'epochs', not both")
    if not has_steps:  # the paper's final training: the whole training set for one epoch
        ft.setdefault("data_fraction", 1.0)
        ft.setdefault("epochs", 1.0)


def _check_lm_eval(cfg: dict) -> None:
    from autoqra.lmeval import available_local_tasks

    local = available_local_tasks(REPO_ROOT / "workflow" / "resources" / "lm_eval_tasks")
    online = "hub" in {m["source"] for m in cfg["models"].values()} | {cfg["data"]["source"]}
    offline_unknown = [t for t in cfg["lm_eval"]["tasks"] if t not in local]
    if offline_unknown and not online:
        raise ConfigError(f"config key 'lm_eval.tasks': {offline_unknown} are not offline tasks; this config runs "
                          f"offline, so expected tasks from {local} (workflow/resources/lm_eval_tasks)")


def validate_config(cfg: Mapping, base_dir: str | os.PathLike = ".",
                    schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Validate ``cfg`` fully and return it with defaults filled (relative paths kept as given)."""
    out = validate_schema(cfg, schema_path)
    try:
        check_semantics(out, Path(base_dir).resolve())
    except ConfigError:
        raise
    except AutoQRAError as e:  # e.g. PlanError from an impossible ladder
        raise ConfigError(f"invalid config: {e}") from None
    return out


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                base_dir: str | os.PathLike = ".") -> dict:
    """Load, merge ``overrides`` on top (deep), validate and fill defaults.

    Relative paths inside the config resolve against ``base_dir`` (the directory Snakemake runs in).
    """
    cfg = load_yaml(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate_config(cfg, base_dir=base_dir)


def deep_merge(base: Mapping, over: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out
