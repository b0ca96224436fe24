"""Reading and writing LivePortrait's official checkpoint files, unchanged.

Layout under the models directory (as on the Hugging Face hub, `liveportrait/` folder):
  liveportrait/base_models/{appearance_feature_extractor,motion_extractor,
                            warping_module,spade_generator}.pth   plain state_dicts
  liveportrait/retargeting_models/stitching_retargeting_module.pth
      {"retarget_shoulder": ..., "retarget_mouth": ..., "retarget_eye": ...}, each a
      state_dict whose keys carry DDP's "module." prefix
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from frontal_exp import weights

from .modules import LivePortraitNetworks, build_networks

#: network attribute -> registry path (relative to the models directory)
BASE_FILES = {
    "appearance_feature_extractor": "liveportrait/base_models/appearance_feature_extractor.pth",
    "motion_extractor": "liveportrait/base_models/motion_extractor.pth",
    "warping_module": "liveportrait/base_models/warping_module.pth",
    "spade_generator": "liveportrait/base_models/spade_generator.pth",
}
RETARGETING_FILE = "liveportrait/retargeting_models/stitching_retargeting_module.pth"
#: StitchingRetargeting attribute -> top-level key in the retargeting file
RETARGETING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
ALL_FILES = [*BASE_FILES.values(), RETARGETING_FILE]

_DDP_PREFIX = "module."


def resolve_all(models_dir: str | os.PathLike | None) -> dict[str, Path]:
    """Paths of the five files; one `MissingWeightsError` naming every missing file and its URL."""
    return weights.resolve_all(ALL_FILES, models_dir)


def _load_strict(module: nn.Module, state: dict, path: Path) -> None:
    weights.load_strict(module, state, path, "a LivePortrait checkpoint for this module", strip_prefix=_DDP_PREFIX)


def load_networks(models_dir: str | os.PathLike | None = None) -> LivePortraitNetworks:
    """Build the networks and load the official files into them with strict=True (on CPU, eval)."""
    paths = resolve_all(models_dir)
    nets = build_networks()
    for attr, rel in BASE_FILES.items():
        _load_strict(getattr(nets, attr), weights.load_torch_checkpoint(paths[rel]), paths[rel])
    retarget = weights.load_torch_checkpoint(paths[RETARGETING_FILE])
    for attr, key in RETARGETING_KEYS.items():
        if key not in retarget:
            raise weights.bad_weights(paths[RETARGETING_FILE], "LivePortrait's retargeting file",
                                      f"no {key!r} entry (has {sorted(retarget)})")
        _load_strict(
            getattr(nets.stitching_retargeting_module, attr), retarget[key], paths[RETARGETING_FILE]
        )
    return nets.eval()


def save_networks(nets: LivePortraitNetworks, models_dir: str | os.PathLike) -> dict[str, Path]:
    """Write `nets` in the official file layout and format (used for random-init test models)."""
    root = Path(models_dir)
    out = {}
    for attr, rel in BASE_FILES.items():
        out[rel] = root / rel
        out[rel].parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(nets, attr).state_dict(), out[rel])
    sr = nets.stitching_retargeting_module
    nested = {
        key: OrderedDict(
            (_DDP_PREFIX + k, v) for k, v in getattr(sr, attr).state_dict().items()
        )
        for attr, key in RETARGETING_KEYS.items()
    }
    out[RETARGETING_FILE] = root / RETARGETING_FILE
    out[RETARGETING_FILE].parent.mkdir(parents=True, exist_ok=True)
    torch.save(nested, out[RETARGETING_FILE])
    return out
