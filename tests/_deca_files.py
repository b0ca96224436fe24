"""Synthetic DECA files in the official formats, seeded networks and the golden test's inputs.

`write_flame_pickle` writes a FLAME model the way `generic_model.pkl` is stored: a Python-2
style protocol-2 pickle (keys and array bytes as BINSTRING), arrays as `chumpy.ch.Ch`
objects (a stand-in class, `fake_chumpy()`), the joint regressor as a csc matrix under
SciPy's old `scipy.sparse.csc` path, the root's parent as uint32 4294967295. The mesh is
small (random vertices and triangles); FLAME's 400 shape/expression components and 5
joints are kept. `write_landmark_embedding` writes `landmark_embedding.npy` as DECA ships it
(an object npy holding numpy arrays and torch tensors). Shared by tests/test_deca*.py and
benchmarks/make_deca_golden.py, which must agree on files, weights and inputs.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from frontal_exp.frontalizers.deca import checkpoints
from frontal_exp.frontalizers.deca.networks import (
    IMAGE_SIZE,
    N_DETAIL_COND,
    DecaNetworks,
    build_networks,
)
from frontal_exp.frontalizers.liveportrait.modules import randomize_

GOLDEN_SEED = 11
N_VERTS = 300
N_FACES = 500


class _Ch:
    """The stand-in for chumpy.ch.Ch: its pickled state is {'x': array, ...}; reading code
    (the reference's) uses it as an array."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = np.asarray(x)
        self._dirty_vars = set()  # chumpy's bookkeeping, as in real files

    def __array__(self, dtype=None, copy=None):
        return self.x if dtype is None else self.x.astype(dtype)

    @property
    def shape(self):
        return self.x.shape

    def reshape(self, *shape):
        return self.x.reshape(*shape)

    def __getitem__(self, key):
        return self.x[key]


_Ch.__module__ = "chumpy.ch"
_Ch.__qualname__ = _Ch.__name__ = "Ch"


@contextlib.contextmanager
def fake_chumpy():
    """Install modules `chumpy` and `chumpy.ch` (class Ch) for writing / reading with pickle."""
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    mod.Ch = _Ch
    pkg.ch = mod
    sys.modules.update({"chumpy": pkg, "chumpy.ch": mod})
    try:
        yield _Ch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with str and bytes written as Python 2 `str` (BINSTRING), and SciPy's
    csc matrix under the module path SciPy had when FLAME was released."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_binstring(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_binstring
    dispatch[bytes] = _save_binstring

    def save_global(self, obj, name=None) -> None:
        if obj is scipy.sparse.csc_matrix:
            self.write(pickle.GLOBAL + b"scipy.sparse.csc\ncsc_matrix\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def synthetic_flame(seed: int = GOLDEN_SEED) -> dict:
    """FLAME's fields with random values of plausible scale (metres; joint regressor rows
    that average a few vertices; skinning weights summing to 1)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.08, (N_VERTS, 3))
    faces = np.stack([rng.choice(N_VERTS, 3, replace=False) for _ in range(N_FACES)]).astype(np.uint32)
    regressor = np.zeros((5, N_VERTS))
    for j in range(5):
        ids = rng.choice(N_VERTS, 6, replace=False)
        regressor[j, ids] = rng.dirichlet(np.ones(6))
    weights = rng.dirichlet(np.full(5, 0.5), N_VERTS)
    return {
        "f": faces,
        "v_template": v,
        "shapedirs": rng.normal(0, 1e-3, (N_VERTS, 3, 400)),
        "posedirs": rng.normal(0, 1e-2, (N_VERTS, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "J": regressor @ v,
        "weights": weights,
        # FLAME's tree: global -> neck -> (jaw, left eye, right eye)
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pickle(path: str | Path, seed: int = GOLDEN_SEED) -> Path:
    """`generic_model.pkl` in the official structure (see the module docstring)."""
    model = synthetic_flame(seed)
    with fake_chumpy() as ch:
        for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
            model[key] = ch(model[key])
        with open(path, "wb") as f:
            _Py2Pickler(f, protocol=2).dump(model)
    return Path(path)


def synthetic_landmarks(seed: int = GOLDEN_SEED) -> dict:
    rng = np.random.default_rng(seed + 1)

    def bary(*shape: int) -> np.ndarray:
        return rng.dirichlet(np.ones(3), shape)

    return {
        "static_lmk_faces_idx": rng.integers(0, N_FACES, 51).astype(np.int64),
        "static_lmk_bary_coords": bary(51),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, N_FACES, (79, 17)).astype(np.int64)),
        "dynamic_lmk_bary_coords": torch.from_numpy(bary(79, 17).astype(np.float32)),
        "full_lmk_faces_idx": rng.integers(0, N_FACES, 68).astype(np.int64),
        "full_lmk_bary_coords": bary(68).astype(np.float32),
    }


def write_landmark_embedding(path: str | Path, seed: int = GOLDEN_SEED) -> Path:
    """`landmark_embedding.npy` as shipped: a 0-d object array holding the dict."""
    with open(path, "wb") as f:
        np.save(f, synthetic_landmarks(seed), allow_pickle=True)
    return Path(path)


def write_head_template(path: str | Path, seed: int = GOLDEN_SEED) -> Path:
    """`head_template.obj` for the synthetic mesh: the same faces, one UV vertex per corner."""
    model = synthetic_flame(seed)
    rng = np.random.default_rng(seed + 2)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in model["v_template"]]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in rng.uniform(0.01, 0.99, (3 * N_FACES, 2))]
    lines += [f"f {a + 1}/{3 * i + 1} {b + 1}/{3 * i + 2} {c + 1}/{3 * i + 3}"
              for i, (a, b, c) in enumerate(model["f"].astype(int))]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


@torch.no_grad()
def calibrate_batchnorm_(module: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """Running statistics = those of one forward pass (as training leaves them), so that
    activations keep their spread through the 50 layers instead of fading or saturating."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    # one thread: batch statistics summed in a fixed order, the same weights on every machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module(*inputs)
    finally:
        torch.set_num_threads(threads)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()


def seeded_networks(seed: int = GOLDEN_SEED) -> DecaNetworks:
    """The three networks, every parameter perturbed and BatchNorms calibrated (CPU, eval)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_networks()
    gen = torch.Generator().manual_seed(seed)
    for module in nets.modules().values():
        randomize_(module, gen)
    calib = torch.Generator().manual_seed(seed + 3)
    images = torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=calib)
    calibrate_batchnorm_(nets.E_flame, images)
    calibrate_batchnorm_(nets.E_detail, images)
    codes = torch.randn(4, N_DETAIL_COND, generator=calib)
    calibrate_batchnorm_(nets.D_detail, codes)
    _centre_before_tanh_(nets.D_detail, codes)
    return nets.eval()


@torch.no_grad()
def _centre_before_tanh_(generator: torch.nn.Module, codes: torch.Tensor, spread: float = 0.7) -> None:
    """Rescale D_detail's last convolution so that tanh's input has mean 0 and std `spread`:
    with random weights it saturates (tanh = +-1 almost everywhere), hiding differences."""
    seen = {}
    last = generator.conv_blocks[-2]
    hook = last.register_forward_hook(lambda m, a, out: seen.update(out=out))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator.eval()(codes)
    finally:
        torch.set_num_threads(threads)
        hook.remove()
    mean, std = seen["out"].mean(), seen["out"].std()
    last.weight.mul_(spread / std)
    last.bias.sub_(mean).mul_(spread / std)


def write_official_files(models_dir: str | Path, seed: int = GOLDEN_SEED) -> DecaNetworks:
    """The four DECA files under `models_dir` (flat, as in DECA's data/); returns the networks."""
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    nets = seeded_networks(seed)
    checkpoints.save_networks(nets, root / "deca_model.tar")
    write_flame_pickle(root / "generic_model.pkl", seed)
    write_landmark_embedding(root / "landmark_embedding.npy", seed)
    write_head_template(root / "head_template.obj", seed)
    return nets


def golden_inputs(seed: int = GOLDEN_SEED) -> dict[str, torch.Tensor]:
    """Encoder images (RGB in [0, 1]) and FLAME parameters: shape / expression codes of the
    size DECA predicts, poses covering small and large yaws of both signs (every branch of
    the contour-row rule, including the clamp), a jaw opening."""
    gen = torch.Generator().manual_seed(seed + 5)
    b = 6
    pose = torch.zeros(b, 6)
    pose[:, 0] = 0.3 * torch.randn(b, generator=gen)  # pitch
    pose[:, 1] = torch.tensor([0.0, 0.25, -0.25, 0.6, -0.6, -0.9])  # yaw, radians
    pose[:, 2] = 0.1 * torch.randn(b, generator=gen)
    pose[:, 3] = 0.2 * torch.rand(b, generator=gen)  # jaw
    pose[:, 4:] = 0.05 * torch.randn(b, 2, generator=gen)
    return {
        "images": torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen),
        "shape": 1.5 * torch.randn(b, 100, generator=gen),
        "exp": 1.5 * torch.randn(b, 50, generator=gen),
        "pose": pose,
        "cam": torch.tensor([[9.0, 0.01, 0.02]]).repeat(b, 1) + 0.1 * torch.randn(b, 3, generator=gen),
        "detail_code": torch.randn(2, N_DETAIL_COND, generator=gen),
    }


# -- a head-like synthetic model for the frontalizer (the golden files use the random mesh) --

def ellipsoid_head(n_lat: int = 24, n_lon: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A closed ellipsoid head looking along +z, symmetric in x, with a UV layout (the
    seam at the back): vertices (V, 3), outward-wound faces (F, 3), vt (T, 2), ft (F, 3)."""
    radii = np.array([0.08, 0.11, 0.09])
    lat = np.linspace(0, np.pi, n_lat + 1)
    verts, vt, faces, ft = [], [], [], []
    for i, th in enumerate(lat):
        for j in range(n_lon):
            lon = 2 * np.pi * j / n_lon  # 0 at the back (-z)
            verts.append(radii * [np.sin(th) * np.sin(lon), np.cos(th), -np.sin(th) * np.cos(lon)])
        for j in range(n_lon + 1):
            vt.append([0.02 + 0.96 * j / n_lon, 0.98 - 0.96 * i / n_lat])
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            ta, tb = i * (n_lon + 1) + j, i * (n_lon + 1) + j + 1
            tc, td = ta + n_lon + 1, tb + n_lon + 1
            faces += [[a, b, c], [b, d, c]]
            ft += [[ta, tb, tc], [tb, td, tc]]
    return np.array(verts), np.array(faces), np.array(vt), np.array(ft)


def write_head_files(models_dir: str | Path, seed: int = GOLDEN_SEED, seeded: bool = True,
                     rings: tuple[int, int] = (24, 32)) -> Path:
    """The four files with the ellipsoid head as FLAME, and encoder weights whose outputs are
    plausible (small codes, camera scale near DECA's typical 8), for frontalizer tests.
    seeded=False: default initialisation, not perturbed nor calibrated (fast; config tests).
    rings: the ellipsoid's (latitude, longitude) divisions; (70, 72) is FLAME's size."""
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    verts, faces, vt, ft = ellipsoid_head(*rings)
    rng = np.random.default_rng(seed)
    n = len(verts)
    regressor = np.zeros((5, n))
    regressor[:, np.argmin(np.abs(verts[:, 1]))] = 1.0  # every joint at the centre ring
    weights = np.zeros((n, 5))
    weights[:, 0] = 1.0
    lower_front = (verts[:, 1] < -0.04) & (verts[:, 2] > 0)
    weights[lower_front] = [0.5, 0, 0.5, 0, 0]  # the jaw moves the lower front
    model = {
        "f": faces.astype(np.uint32), "v_template": verts,
        "shapedirs": rng.normal(0, 2e-4, (n, 3, 400)), "posedirs": rng.normal(0, 1e-4, (n, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor), "J": regressor @ verts, "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    }
    with fake_chumpy() as ch:
        for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
            model[key] = ch(model[key])
        with open(root / "generic_model.pkl", "wb") as f:
            _Py2Pickler(f, protocol=2).dump(model)
    front = np.flatnonzero(verts[faces].mean(1)[:, 2] > 0.03)
    lmk = synthetic_landmarks(seed)
    lmk["static_lmk_faces_idx"] = rng.choice(front, 51)
    lmk["dynamic_lmk_faces_idx"] = torch.from_numpy(rng.choice(front, (79, 17)))
    lmk["full_lmk_faces_idx"] = rng.choice(front, 68)
    with open(root / "landmark_embedding.npy", "wb") as f:
        np.save(f, lmk, allow_pickle=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in vt]
    lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
              for (a, b, c), (ta, tb, tc) in zip(faces, ft, strict=True)]
    (root / "head_template.obj").write_text("\n".join(lines) + "\n")

    if seeded:
        nets = seeded_networks(seed)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = build_networks().eval()
    with torch.no_grad():
        # real photos drive the random encoder far harder than its calibration noise: keep
        # the codes small, and a head turned by about 17 degrees of yaw
        last = nets.E_flame.layers[2]
        last.weight.mul_(0.002)
        last.bias.zero_()
        last.bias[200:206] = torch.tensor([0.05, 0.3, 0.0, 0.05, 0.0, 0.0])  # global, jaw
        last.bias[206] = 8.0  # camera scale
    checkpoints.save_networks(nets, root / "deca_model.tar")
    write_detail_files(root, seed)
    return root


def write_detail_files(models_dir: str | Path, seed: int = GOLDEN_SEED, size: int = 256) -> Path:
    """The detail branch's two data files in their official formats: `uv_face_eye_mask.png`
    (RGBA, 0 / 255, an ellipse in the middle of the UV map, where the ellipsoid head's face
    lies) and `fixed_displacement_256.npy` (a smooth float64 field of about 0.1 mm)."""
    import cv2

    root = Path(models_dir)
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (size // 5, size // 4), 0, 0, 360, 255, -1)
    cv2.imwrite(str(root / "uv_face_eye_mask.png"), np.dstack([mask, mask, mask, np.full_like(mask, 255)]))
    rng = np.random.default_rng(seed + 7)
    fixed = cv2.GaussianBlur(rng.normal(0, 1e-3, (size, size)), (0, 0), 6)
    np.save(root / "fixed_displacement_256.npy", fixed.astype(np.float64))
    return root


def detail_normal_inputs(seed: int = GOLDEN_SEED, size: int = 64) -> dict[str, np.ndarray]:
    """UV maps for DECA's displacement2normal on a sphere cap (radius 0.1, texels 2 mm apart,
    y up = row up as in DECA's UV maps), with an uncovered corner (zeros, as world2uv leaves
    texels outside the layout), a binary mask, a random displacement of about 0.5 mm, a
    smooth fixed displacement and a random SH light (9, 3)."""
    rng = np.random.default_rng(seed + 9)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = (cols - size / 2) * 0.002, -(rows - size / 2) * 0.002
    z = np.sqrt(0.1 ** 2 - x ** 2 - y ** 2)
    vertices = np.stack([x, y, z], -1)
    normals = vertices / 0.1
    vertices[:8, :10] = normals[:8, :10] = 0
    mask = (((cols - size / 2) / 0.4) ** 2 + ((rows - size / 2) / 0.45) ** 2 < size ** 2).astype(np.float64)
    smooth = rng.normal(0, 1, (size + 8, size + 8))
    fixed = 2e-4 * (smooth[4:-4, 4:-4] + smooth[:-8, 8:] + smooth[8:, :-8]) / 3
    return {"uv_vertices": vertices, "uv_normals": normals, "mask": mask,
            "displacement": rng.normal(0, 5e-4, (size, size)), "fixed_displacement": fixed,
            "light": rng.normal(0, 1, (9, 3))}
