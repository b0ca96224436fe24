"""What identifies a configuration: its resolved config minus the settings that cannot change results.

Every logged run carries the hash of its canonical config (tag `frontal_exp.config_hash`, the
hashed dict as the artifact `config_canonical.json`), so the report keeps one row per
configuration and never merges runs whose settings differ.

Left out of the hash (they change where files go, how fast or how verbosely a run goes, never
its numbers): `eval.progress`, `eval.io_workers`, `eval.batch_size`, `eval.use_cache`, `verbose`,
`tracking.*`, `hydra.*`, `output_root`, `cache_dir`, and every setting that is only an
interpolation of one of them (e.g. `embedder.recognizer.batch_size: ${eval.batch_size}`,
`dataset.cache_dir: ${cache_dir}`).

`models_dir` stays in: it decides which model files are read, and runs do not log those files'
identity, so two folders are two configurations (at worst one configuration shows as two rows
that differ in a `models_dir` column; never two model files merged into one row).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: the run tag holding the configuration's hash
CONFIG_HASH_TAG = "frontal_exp.config_hash"
#: the run artifact holding the dict that was hashed
CANONICAL_ARTIFACT = "config_canonical.json"
#: dotted keys (a key also covers everything under it) that never change a run's results
IGNORED_KEYS = ("eval.progress", "eval.io_workers", "eval.batch_size", "eval.use_cache", "verbose",
                "tracking", "hydra", "output_root", "cache_dir")
#: MLflow params under this prefix describe what ran (names, devices used), not settings
RUN_PARAM_PREFIX = "run."

_PLAIN_INTERPOLATION = re.compile(r"^\$\{([\w.]+)\}$")


def is_ignored(key: str) -> bool:
    """Whether a dotted key is (or lies under) one of IGNORED_KEYS."""
    return any(key == k or key.startswith(f"{k}.") for k in IGNORED_KEYS)


def canonical_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict, without the settings that cannot change results."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return _strip(raw, resolved, "")


def _strip(raw: Any, resolved: Any, prefix: str) -> Any:
    if not isinstance(resolved, dict):
        return resolved
    out = {}
    for key, value in resolved.items():
        dotted = f"{prefix}{key}"
        raw_value = raw.get(key) if isinstance(raw, dict) else None
        if is_ignored(dotted) or _interpolates_ignored(raw_value):
            continue
        out[key] = _strip(raw_value, value, f"{dotted}.")
    return out


def _interpolates_ignored(raw_value: Any) -> bool:
    """`${eval.batch_size}`-style values: a plain reference to an ignored setting."""
    match = _PLAIN_INTERPOLATION.match(raw_value) if isinstance(raw_value, str) else None
    return bool(match) and is_ignored(match.group(1))


def config_hash(canonical: Mapping[str, Any]) -> str:
    """A short, stable hash of a canonical config (key order does not matter)."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_of_params(params: Mapping[str, str]) -> dict[str, str]:
    """The settings of a run from its flattened MLflow params: the config's keys, without the
    ignored ones and without their copies (a nested key with an ignored key's name and value,
    e.g. `dataset.cache_dir` equal to `cache_dir`, which params cannot show to be an
    interpolation)."""
    ignored_values = {k.rsplit(".", 1)[-1]: v for k, v in params.items() if k in IGNORED_KEYS}
    return {k: v for k, v in params.items()
            if not k.startswith(RUN_PARAM_PREFIX) and not is_ignored(k)
            and ignored_values.get(k.rsplit(".", 1)[-1], object()) != v}


def legacy_config_id(params: Mapping[str, str]) -> str:
    """The identity of a run logged without a config hash: its settings from the params."""
    return "params:" + config_hash(settings_of_params(params))
