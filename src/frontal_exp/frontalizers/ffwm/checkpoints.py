"""Reading and writing FFWM's official checkpoint files, unchanged.

Under the models directory (as in the reference's `checkpoints/ffwm/`):
  ffwm/latest_net_flowNetF.pth   flowNetF, plain state_dict, 243 keys (52,357,370 parameters)
  ffwm/latest_net_netG.pth       netG, plain state_dict, 383 keys (16,245,227 parameters)
Both are written by torch 1.5's torch.save (legacy, non-zip format); files re-saved by a
newer torch (zip format) load the same. Keys carry no DataParallel "module." prefix.

Accepted on top of the architecture, by name:
- flowNetF's `inter_conv_occ{0..5}.*` (42 keys): six occlusion blocks of the reference
  FlowNet that no forward pass calls; dropped after checking their names.
- netG saved with torch's newer `parametrizations.spectral_norm`
  (`X.parametrizations.weight.original`, `...weight.0._u`, `...weight.0._v`): mapped to the
  old-style `X.weight_orig`, `X.weight_u`, `X.weight_v` of the official files.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import torch

from frontal_exp import weights

from .networks import FFWMNetworks, build_networks, occlusion_blocks

FLOW_FILE = "ffwm/latest_net_flowNetF.pth"
GENERATOR_FILE = "ffwm/latest_net_netG.pth"
ALL_FILES = [FLOW_FILE, GENERATOR_FILE]

#: official flowNetF keys that the test path never uses (see module docstring)
UNUSED_FLOW_KEYS = frozenset(occlusion_blocks().state_dict())

_NEW_STYLE_SN = re.compile(r"^(.*)\.parametrizations\.weight\.(original|0\._u|0\._v)$")
_OLD_STYLE_SN = {"original": "weight_orig", "0._u": "weight_u", "0._v": "weight_v"}


def resolve_all(models_dir: str | os.PathLike | None) -> dict[str, Path]:
    """Paths of the two files; one `MissingWeightsError` naming every missing file and its source."""
    return weights.resolve_all(ALL_FILES, models_dir)


def _flow_state(state: dict) -> dict:
    """flowNetF's state without the unused occlusion keys (accepted only by their names)."""
    return {k: v for k, v in state.items() if k not in UNUSED_FLOW_KEYS}


def _generator_state(state: dict) -> dict:
    """netG's state with new-style spectral-norm keys renamed to the official old style."""
    out = {}
    for key, value in state.items():
        m = _NEW_STYLE_SN.match(key)
        out[f"{m.group(1)}.{_OLD_STYLE_SN[m.group(2)]}" if m else key] = value
    return out


def load_networks(models_dir: str | os.PathLike | None = None,
                  paths: dict[str, Path] | None = None) -> FFWMNetworks:
    """Build the networks and load the official files into them with strict=True (CPU, eval)."""
    paths = paths or resolve_all(models_dir)
    nets = build_networks()
    flow = weights.load_torch_checkpoint(paths[FLOW_FILE])
    weights.load_strict(nets.flow_net, _flow_state(flow), paths[FLOW_FILE], "FFWM's flowNetF checkpoint")
    gen = weights.load_torch_checkpoint(paths[GENERATOR_FILE])
    weights.load_strict(nets.generator, _generator_state(gen), paths[GENERATOR_FILE], "FFWM's netG checkpoint")
    return nets.eval()


def official_flow_state(nets: FFWMNetworks, occlusion: dict[str, torch.Tensor] | None = None
                        ) -> OrderedDict:
    """flowNetF's state in the official key order, the unused occlusion blocks included
    (random ones unless given) right after `inter_conv0`, where the reference has them."""
    occ = occlusion if occlusion is not None else occlusion_blocks().state_dict()
    state = nets.flow_net.state_dict()
    out: OrderedDict = OrderedDict()
    for key, value in state.items():
        if key.startswith("predict_flow6.") and not any(k in out for k in occ):
            out.update(occ)
        out[key] = value
    # torch.save keeps the per-module versions (_metadata) of a state_dict; so do we
    out._metadata = OrderedDict(state._metadata)  # type: ignore[attr-defined]
    out._metadata.update(getattr(occ, "_metadata", {}))  # type: ignore[attr-defined]
    return out


def save_networks(nets: FFWMNetworks, models_dir: str | os.PathLike, legacy: bool = True,
                  occlusion: dict[str, torch.Tensor] | None = None) -> dict[str, Path]:
    """Write `nets` as the two official files (used for random-init test models); `legacy`:
    torch's pre-1.6 non-zip format, as the released files were saved by torch 1.5."""
    root = Path(models_dir)
    out = {FLOW_FILE: root / FLOW_FILE, GENERATOR_FILE: root / GENERATOR_FILE}
    states = {FLOW_FILE: official_flow_state(nets, occlusion), GENERATOR_FILE: nets.generator.state_dict()}
    for rel, state in states.items():
        out[rel].parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, out[rel], _use_new_zipfile_serialization=not legacy)
    return out
