"""Configuration schema: typed top-level settings, and checked instantiation of `_target_` nodes.

Each option of a group (`model`, `enhancer`, `embedder`, `dataset`) is a YAML with a
`_target_` class; the class's typed constructor is that option's schema. Before anything is
built, `instantiate_checked` rejects unknown keys, missing required keys and values of the
wrong type with a message that lists the valid parameters, so a typo fails at start, not
an hour into a run.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from frontal_exp.errors import ConfigError, FrontalExpError

GROUPS = ("dataset", "embedder", "model", "enhancer", "protocol")


@dataclass
class EvalConf:
    #: faces per recognition batch, and items per pipeline chunk
    batch_size: int = 32
    #: threads decoding images while the models run
    io_workers: int = 2
    #: bootstrap resamples for confidence intervals
    bootstrap: int = 2000
    #: w of the fused probe normalize(e_angle + w e_frontal) (fusion_gain, fused_to_gt)
    fusion_weight: float = 0.5
    #: rows of the Angled | Frontal | GT figure
    grid_samples: int = 8
    #: rows of the failure-case figure
    failure_samples: int = 6
    use_cache: bool = True
    #: progress bars: auto (when stderr is a terminal), true or false
    progress: str = "auto"


@dataclass
class TrackingConf:
    enabled: bool = True
    #: MLflow tracking URI; null: $MLFLOW_TRACKING_URI, else sqlite at <output_root>/mlflow.db
    uri: str | None = None
    experiment: str = "frontal_exp"
    run_name: str | None = None
    log_images: bool = True
    #: a sweep writes report.html / report.md of its jobs and logs them on its parent run
    sweep_report: bool = True


@dataclass
class RootConf:
    dataset: Any = None
    embedder: Any = None
    model: Any = None
    enhancer: Any = None
    protocol: Any = None
    seed: int = 0
    device: str = "auto"
    models_dir: str | None = None
    output_root: str = "outputs"
    cache_dir: str = "outputs/cache"
    eval: EvalConf = field(default_factory=EvalConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    #: show third-party logs (MLflow, MediaPipe/TFLite, libpng); default quiet
    verbose: bool = False


def register_configs() -> None:
    """Make the schema available to Hydra as `frontal_exp_schema` (see conf/config.yaml)."""
    ConfigStore.instance().store(name="frontal_exp_schema", node=RootConf)


# -- checked instantiation of _target_ nodes ------------------------------------------

_SIMPLE = (int, float, bool, str)


def _schema_type(hint: Any) -> Any:
    """The closest type OmegaConf can validate; Any where it cannot."""
    if hint in _SIMPLE:
        return hint
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0] in _SIMPLE:
            return inner[0] | None
    return Any


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    # the signature of the class itself: (), for a class with no constructor of its own
    sig = inspect.signature(target)
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable hints only weaken type checking
        hints = {}
    params = {
        n: p for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return params, var_kw, hints


def check_node(node: Any, where: str) -> None:
    """Validate a `_target_` node (and nested ones) against the target's signature."""
    if isinstance(node, ListConfig | list):
        for i, sub in enumerate(node):
            check_node(sub, f"{where}[{i}]")
        return
    if not isinstance(node, DictConfig | dict) or "_target_" not in node:
        return
    target_name = node["_target_"]
    try:
        target = get_object(target_name)
    except Exception as exc:  # noqa: BLE001 - hydra raises several types here
        raise ConfigError(f"{where}: cannot import _target_ {target_name!r}: {exc}") from exc
    params, var_kw, hints = _parameters(target)
    keys = [k for k in node if not str(k).startswith("_")]
    unknown = [k for k in keys if k not in params]
    if unknown and not var_kw:
        raise ConfigError(
            f"{where}: unknown parameter(s) {unknown} for {target_name}; valid parameters: {sorted(params)}"
        )
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in node]
    if missing:
        raise ConfigError(f"{where}: missing required parameter(s) {missing} for {target_name}")
    # Type check the simple-valued parameters through an OmegaConf structured schema.
    simple = {}
    for k in keys:
        if k not in params:
            continue
        value = node[k]
        if isinstance(value, DictConfig | ListConfig | dict | list):
            check_node(value, f"{where}.{k}")
            continue
        simple[k] = value
    if simple:
        spec = [(k, _schema_type(hints.get(k, Any)), dataclasses.field(default=MISSING)) for k in simple]
        schema = dataclasses.make_dataclass(f"{target.__name__}Schema", spec)
        try:
            OmegaConf.merge(OmegaConf.structured(schema), simple)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "") or "?"
            msg = str(getattr(exc, "msg", exc)).splitlines()[0]
            raise ConfigError(f"{where}.{key}: bad value for {target_name}: {msg}") from exc


def check_sections(cfg: DictConfig) -> None:
    """Reject keys that `eval` and `tracking` do not have (Hydra's `+key=` bypasses the schema)."""
    for section, schema in (("eval", EvalConf), ("tracking", TrackingConf)):
        valid = [f.name for f in dataclasses.fields(schema)]
        unknown = [k for k in cfg.get(section) or {} if k not in valid]
        if unknown:
            raise ConfigError(f"{section}: unknown key(s) {unknown}; valid keys: {valid}")


def instantiate_checked(node: DictConfig, group: str) -> Any:
    """Check a group's node, then build it with Hydra (nested `_target_`s included)."""
    if node is None:
        raise ConfigError(f"no {group!r} configured; choose one with {group}=<option>")
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(node, resolve=True, throw_on_missing=True))
    except MissingMandatoryValue as exc:
        key = str(exc.full_key or "")
        key = key if key.startswith(f"{group}.") else f"{group}.{key}" if key else group
        raise ConfigError(f"{key} must be set: add {key}=<value> to the command line") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{group}: {exc}") from exc
    check_node(resolved, group)
    _check_registry_files(resolved)
    try:
        return instantiate(resolved, _convert_="all")
    except InstantiationException as exc:
        # Hydra wraps what the constructor raised; users should see our own error.
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, FrontalExpError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _registry_refs(node: Any, models_dir: str | None = None) -> list[tuple[str, str | None]]:
    """(registry path, models_dir) of every registered model file a node refers to."""
    from frontal_exp import weights

    refs = []
    if isinstance(node, DictConfig):
        models_dir = node.get("models_dir", models_dir)
        for value in node.values():
            if isinstance(value, str) and value in weights.REGISTRY:
                refs.append((value, models_dir))
            elif isinstance(value, DictConfig | ListConfig):
                refs += _registry_refs(value, models_dir)
    elif isinstance(node, ListConfig):
        for value in node:
            refs += _registry_refs(value, models_dir)
    return refs


def _check_registry_files(node: Any) -> None:
    """Name every missing file of an option at once (not one per attempt)."""
    from frontal_exp import weights

    by_dir: dict[str | None, list[str]] = {}
    for relpath, models_dir in _registry_refs(node):
        by_dir.setdefault(models_dir, []).append(relpath)
    for models_dir, relpaths in by_dir.items():
        weights.resolve_all(relpaths, models_dir)
