"""DECA's files, loaded unchanged from one folder (the reference's `data/` layout):

  deca_model.tar          torch.save dict {E_flame, E_detail, D_detail} of state dicts (not a
                          tar archive); a trainer checkpoint's extra keys (opt, global_step,
                          batch_size) are ignored by name
  generic_model.pkl       FLAME 2020 (chumpy pickle, see files.py)
  landmark_embedding.npy  landmark faces and barycentric coordinates
  head_template.obj       FLAME topology with UV coordinates

and, for the detail branch only (model.detail=true):

  uv_face_eye_mask.png         where D_detail's displacement applies, in UV space
  fixed_displacement_256.npy   DECA's person-independent displacement correction
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from frontal_exp import weights

from .files import (
    HeadTemplate,
    load_flame_model,
    load_landmark_embedding,
    read_fixed_displacement,
    read_head_template,
    read_uv_mask,
)
from .flame import FLAME
from .networks import DecaNetworks, build_networks

MODEL_FILE = "deca/deca_model.tar"
FLAME_FILE = "deca/generic_model.pkl"
LANDMARK_FILE = "deca/landmark_embedding.npy"
TEMPLATE_FILE = "deca/head_template.obj"
ALL_FILES = [MODEL_FILE, FLAME_FILE, LANDMARK_FILE, TEMPLATE_FILE]
MASK_FILE = "deca/uv_face_eye_mask.png"
FIXED_DISPLACEMENT_FILE = "deca/fixed_displacement_256.npy"
DETAIL_FILES = [MASK_FILE, FIXED_DISPLACEMENT_FILE]
#: top-level keys of a trainer checkpoint that hold no network
TRAINER_KEYS = frozenset({"opt", "global_step", "batch_size", "epoch", "optimizer"})


@dataclass
class DecaModel:
    """Everything DECA's reconstruction needs, loaded."""

    networks: DecaNetworks
    flame: FLAME
    template: HeadTemplate


def resolve_all(models_dir: str | os.PathLike | None, detail: bool = False) -> dict[str, Path]:
    """Paths of the four files (six with `detail`); one `MissingWeightsError` naming every
    missing one."""
    return weights.resolve_all(ALL_FILES + (DETAIL_FILES if detail else []), models_dir)


def load_networks(path: str | os.PathLike, detail: bool = True) -> DecaNetworks:
    """The networks from `deca_model.tar`, each loaded with strict=True (CPU, eval). Without
    `detail`, E_detail and D_detail are not read (they keep their random initialisation)."""
    state = weights.load_torch_checkpoint(path)
    nets = build_networks()
    wanted = ["E_flame", "E_detail", "D_detail"] if detail else ["E_flame"]
    unknown = sorted(set(state) - set(nets.modules()) - TRAINER_KEYS, key=str)
    missing = [k for k in wanted if k not in state]
    if missing or unknown:
        raise weights.bad_weights(path, "DECA's model file (deca_model.tar)",
                                  f"missing {missing}, unexpected {unknown[:5]} (has {sorted(map(str, state))[:8]})")
    for name in wanted:
        weights.load_strict(getattr(nets, name), state[name], path, f"DECA's {name} network")
    return nets.eval()


def save_networks(nets: DecaNetworks, path: str | os.PathLike, **extra) -> Path:
    """Write `nets` as `deca_model.tar` is written (tests and benchmarks; `extra` adds
    trainer keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**{k: m.state_dict() for k, m in nets.modules().items()}, **extra}, path)
    return path


def load_model(models_dir: str | os.PathLike | None = None, detail: bool = True) -> DecaModel:
    """Resolve and load the four files."""
    paths = resolve_all(models_dir)
    flame = FLAME(load_flame_model(paths[FLAME_FILE]), load_landmark_embedding(paths[LANDMARK_FILE]))
    template = read_head_template(paths[TEMPLATE_FILE])
    if len(template.f) != len(flame.faces):
        raise weights.bad_weights(paths[TEMPLATE_FILE], "DECA's head template (head_template.obj)",
                                  f"{len(template.f)} faces, the FLAME model has {len(flame.faces)}")
    return DecaModel(load_networks(paths[MODEL_FILE], detail=detail), flame.eval(), template)


@dataclass
class DetailMaps:
    """The UV maps DECA's detail branch needs besides the networks."""

    mask: np.ndarray  # (U, U) float32 in [0, 1]: where the displacement applies
    fixed_displacement: np.ndarray  # (U, U) float64, along the normal, FLAME units


def load_detail_maps(models_dir: str | os.PathLike | None, size: int) -> DetailMaps:
    """The mask (nearest-resized to `size`, as DECA) and the fixed displacement (bilinear when
    `size` is not its own 256; DECA only uses 256)."""
    paths = weights.resolve_all(DETAIL_FILES, models_dir)
    fixed = read_fixed_displacement(paths[FIXED_DISPLACEMENT_FILE])
    if fixed.shape[0] != size:
        fixed = cv2.resize(fixed, (size, size), interpolation=cv2.INTER_LINEAR)
    return DetailMaps(read_uv_mask(paths[MASK_FILE], size), fixed)
