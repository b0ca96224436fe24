"""Reading DECA's and FLAME's data files as data, never as code.

`generic_model.pkl` (FLAME 2020) is a Python-2 pickle whose arrays are chumpy objects and
whose joint regressor is a scipy sparse matrix; `landmark_embedding.npy` is a numpy object
array holding a dict of numpy arrays and torch tensors. Both are read by unpicklers that
accept only the few classes these files are made of and refuse every other global, so a
tampered file cannot run code. `head_template.obj` is plain text.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frontal_exp.weights import bad_weights

FLAME_FIELDS = ("f", "v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
LANDMARK_FIELDS = (
    "static_lmk_faces_idx", "static_lmk_bary_coords",
    "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
    "full_lmk_faces_idx", "full_lmk_bary_coords",
)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ChumpyArray:
    """Stands in for `chumpy.ch.Ch`: the pickle creates it empty and sets its state, whose
    'x' entry is the array (the rest is chumpy's lazy-evaluation bookkeeping)."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict) or "x" not in state:
            raise pickle.UnpicklingError("a chumpy object without an 'x' array")
        self.array = np.asarray(state["x"])


def _csc_matrix():
    """The class itself: the pickle creates it empty (NEWOBJ) and sets its arrays as state."""
    import scipy.sparse

    return scipy.sparse.csc_matrix


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return scalar


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed` ((module, name) -> factory of the object)."""

    allowed: dict = {}

    def find_class(self, module: str, name: str):
        factory = self.allowed.get((module, name))
        if factory is None:
            raise _RefusedGlobal(f"refused global {module}.{name} (not one of the classes this file is made of)")
        return factory()

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"refused persistent id {pid!r}")


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _FlameUnpickler(_RestrictedUnpickler):
    allowed = {
        **_NUMPY_GLOBALS,
        ("chumpy.ch", "Ch"): lambda: _ChumpyArray,
        # the deprecated module path of SciPy < 1.8, which wrote the file, and today's
        ("scipy.sparse.csc", "csc_matrix"): _csc_matrix,
        ("scipy.sparse._csc", "csc_matrix"): _csc_matrix,
        ("__builtin__", "set"): lambda: set,
        ("builtins", "set"): lambda: set,
    }


def _plain(value):
    """A chumpy stand-in -> its ndarray; a sparse matrix -> dense ndarray; others unchanged."""
    if isinstance(value, _ChumpyArray):
        return value.array
    if hasattr(value, "toarray"):
        return np.asarray(value.toarray())
    return value


def load_flame_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The FLAME fields DECA uses, as plain arrays, from the official `generic_model.pkl`.

    `BadWeightsError` naming the file when it is not a pickle of that structure, or when it
    needs any class beyond chumpy arrays, scipy's csc matrix, numpy arrays and sets.
    """
    what = "the FLAME model (generic_model.pkl)"
    try:
        with open(path, "rb") as f:
            raw = _FlameUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise bad_weights(path, what, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - pickle, EOF, unicode and numpy errors
        raise bad_weights(path, what, exc) from exc
    if not isinstance(raw, dict):
        raise bad_weights(path, what, f"holds a {type(raw).__name__}, not a dict")
    missing = [k for k in FLAME_FIELDS if k not in raw]
    if missing:
        raise bad_weights(path, what, f"no {', '.join(missing)} field(s)")
    model = {k: _plain(raw[k]) for k in FLAME_FIELDS}
    for key, value in model.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise bad_weights(path, what, f"field {key} is a {type(value).__name__}, not a numeric array")
    _check_flame_shapes(path, model)
    return model


def _check_flame_shapes(path, m: dict[str, np.ndarray]) -> None:
    n_verts = m["v_template"].shape[0]
    n_joints = m["weights"].shape[-1] if m["weights"].ndim == 2 else -1
    expected = {
        "f": m["f"].ndim == 2 and m["f"].shape[1] == 3,
        "v_template": m["v_template"].shape == (n_verts, 3),
        "shapedirs": m["shapedirs"].ndim == 3 and m["shapedirs"].shape[:2] == (n_verts, 3)
        and m["shapedirs"].shape[2] >= 350,
        "posedirs": m["posedirs"].shape == (n_verts, 3, 9 * (n_joints - 1)),
        "J_regressor": m["J_regressor"].shape == (n_joints, n_verts),
        "weights": m["weights"].shape == (n_verts, n_joints) and n_joints == 5,
        "kintree_table": m["kintree_table"].shape == (2, n_joints),
    }
    bad = [f"{k} {m[k].shape}" for k, ok in expected.items() if not ok]
    if bad:
        raise bad_weights(path, "the FLAME model (generic_model.pkl)",
                          f"unexpected shapes: {', '.join(bad)} for {n_verts} vertices and 5 joints "
                          "(shapedirs needs 300 shape + 50 expression components)")


def _torch_storage_from_bytes():
    """`torch.storage._load_from_bytes` for tensors pickled inside the npy file: each
    storage is a small legacy torch.save stream, read here with weights_only=True."""
    import torch

    def load(data: bytes):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    return load


def _rebuild_tensor_v2():
    import torch._utils

    return torch._utils._rebuild_tensor_v2


class _LandmarkUnpickler(_RestrictedUnpickler):
    allowed = {
        **_NUMPY_GLOBALS,
        ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _torch_storage_from_bytes,
    }


def load_landmark_embedding(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """DECA's `landmark_embedding.npy`: static (51), dynamic contour (79 yaw rows x 17) and
    full (68) landmark faces and barycentric coordinates, as numpy arrays."""
    from numpy.lib import format as npy_format

    what = "DECA's landmark embedding (landmark_embedding.npy)"
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read_header = {(1, 0): npy_format.read_array_header_1_0,
                           (2, 0): npy_format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version} (1.0 or 2.0 expected)")
            shape, _, dtype = read_header(f)
            if dtype != np.dtype(object) or shape != ():
                raise ValueError(f"a {dtype} array of shape {shape}, not one pickled object")
            raw = _LandmarkUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise bad_weights(path, what, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - npy header, pickle and torch errors
        raise bad_weights(path, what, exc) from exc
    if isinstance(raw, np.ndarray) and raw.dtype == object and raw.shape == ():
        raw = raw[()]
    if not isinstance(raw, dict) or any(k not in raw for k in LANDMARK_FIELDS):
        raise bad_weights(path, what, f"not a dict with {', '.join(LANDMARK_FIELDS)}")
    out = {k: np.asarray(raw[k].numpy() if hasattr(raw[k], "numpy") else raw[k]) for k in LANDMARK_FIELDS}
    expected = {
        "static_lmk_faces_idx": (51,), "static_lmk_bary_coords": (51, 3),
        "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
        "full_lmk_faces_idx": (68,), "full_lmk_bary_coords": (68, 3),
    }
    for key, shape in expected.items():
        got = out[key].shape
        # the full and static arrays are stored with a leading batch axis of 1
        if got != shape and got != (1, *shape):
            raise bad_weights(path, what, f"{key} has shape {got}, expected {shape}")
        out[key] = out[key].reshape(shape)
    return out


@dataclass(frozen=True)
class HeadTemplate:
    """FLAME's topology with UV coordinates (`head_template.obj`): vertex positions `v`
    (V, 3), texture coordinates `vt` (T, 2) in [0, 1], and 0-based faces `f` (F, 3) into
    `v` and `ft` (F, 3) into `vt`."""

    v: np.ndarray
    vt: np.ndarray
    f: np.ndarray
    ft: np.ndarray


def read_head_template(path: str | os.PathLike) -> HeadTemplate:
    """Parse an OBJ of triangles with `v`, `vt` and `f a/ta b/tb c/tc` lines."""
    what = "DECA's head template (head_template.obj)"
    v, vt, f, ft = [], [], [], []
    try:
        for line in Path(path).read_text(encoding="utf-8", errors="strict").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                v.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                vt.append([float(x) for x in parts[1:3]])
            elif parts[0] == "f":
                if len(parts) != 4:
                    raise ValueError(f"a face with {len(parts) - 1} corners (triangles expected)")
                corners = [p.split("/") for p in parts[1:]]
                f.append([int(c[0]) - 1 for c in corners])
                ft.append([int(c[1]) - 1 for c in corners])
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise bad_weights(path, what, exc) from exc
    template = HeadTemplate(np.asarray(v, np.float32).reshape(-1, 3), np.asarray(vt, np.float32).reshape(-1, 2),
                            np.asarray(f, np.int64).reshape(-1, 3), np.asarray(ft, np.int64).reshape(-1, 3))
    if not len(template.f) or template.f.max() >= len(template.v) or template.ft.max() >= len(template.vt) \
            or min(template.f.min(), template.ft.min()) < 0:
        raise bad_weights(path, what, "no faces, or face indices outside the vertex / UV lists")
    return template


def read_uv_mask(path: str | os.PathLike, size: int) -> np.ndarray:
    """`uv_face_eye_mask.png` (a UV-layout image, DECA reads its first colour channel) ->
    (size, size) float32 in [0, 1], resized by nearest neighbour as DECA's F.interpolate."""
    import cv2

    what = "DECA's UV face mask (uv_face_eye_mask.png)"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise bad_weights(path, what, "not a readable image")
    red = image if image.ndim == 2 else image[..., 2]  # OpenCV's BGR(A): red is channel 2
    scale = np.iinfo(red.dtype).max if red.dtype.kind in "ui" else 1.0
    mask = red.astype(np.float32) / scale
    rows = np.floor(np.arange(size) * mask.shape[0] / size).astype(np.int64)
    cols = np.floor(np.arange(size) * mask.shape[1] / size).astype(np.int64)
    return mask[rows][:, cols]


def read_fixed_displacement(path: str | os.PathLike) -> np.ndarray:
    """`fixed_displacement_256.npy`: DECA's person-independent UV displacement correction, a
    plain (256, 256) float array (loaded without pickle)."""
    what = "DECA's fixed displacement (fixed_displacement_256.npy)"
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise bad_weights(path, what, exc) from exc
    if value.ndim != 2 or value.shape[0] != value.shape[1] or value.dtype.kind != "f":
        raise bad_weights(path, what, f"a {value.dtype} array of shape {value.shape}, expected (256, 256) floats")
    return value.astype(np.float64)
