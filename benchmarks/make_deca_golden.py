"""Write tests/golden/deca_golden.npz: outputs of the REFERENCE DECA (yfeng95/DECA) on seeded
weights in the official format and a synthetic FLAME model in the official pickle structure,
for tests/test_deca_golden.py to compare this project's modules against.

    python benchmarks/make_deca_golden.py --reference /path/to/DECA

The reference's `decalib/models` (ResnetEncoder, Generator, FLAME) and its `batch_orth_proj`
are imported from the given checkout; nothing of it is copied. The four files are written by
tests/_deca_files.py; the reference reads them its own way: `pickle.load(encoding='latin1')`
of generic_model.pkl (with a stand-in `chumpy` module, since chumpy does not install),
`np.load(allow_pickle=True)` of landmark_embedding.npy, and a strict `load_state_dict` of
each network from `torch.load(deca_model.tar)` (DECA's own copy_state_dict skips missing keys).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import numpy as np
import torch
from _common import reference_version, write_golden

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests._deca_files import (  # noqa: E402
    GOLDEN_SEED,
    detail_normal_inputs,
    fake_chumpy,
    golden_inputs,
    write_official_files,
)
from tests._lp_weights import signature  # noqa: E402

DEFAULT_OUT = REPO / "tests/golden/deca_golden.npz"


def _orth_proj(reference: Path):
    """decalib.utils.util.batch_orth_proj without importing util (it needs cv2, skimage,
    kornia-era extras): the function's source is executed from the checkout."""
    source = (reference / "decalib/utils/util.py").read_text()
    start = source.index("def batch_orth_proj")
    end = source.index("\n# ---", start)
    namespace = {"torch": torch}
    exec(compile(source[start:end], "decalib/utils/util.py", "exec"), namespace)  # noqa: S102
    return namespace["batch_orth_proj"]


def _source_between(path: Path, start: str, end: str) -> str:
    """The source from the line holding `start` up to `end`, dedented."""
    source = path.read_text()
    i = source.index(start)
    return textwrap.dedent(source[source.rindex("\n", 0, i) + 1:source.index(end, i + len(start))])


def _detail_functions(reference: Path):
    """DECA.displacement2normal and SRenderY.add_SHlight (with its SH constants), executed
    from the checkout's source: decalib.deca and the renderer import pytorch3d, kornia and
    CUDA extensions. util's generate_triangles and vertex_normals are executed the same way."""
    util = types.SimpleNamespace()
    ns = {"torch": torch, "np": np, "F": torch.nn.functional}
    for name in ("generate_triangles", "vertex_normals"):
        code = _source_between(reference / "decalib/utils/util.py", f"def {name}", "\ndef ")
        exec(compile(code, "decalib/utils/util.py", "exec"), ns)  # noqa: S102
        setattr(util, name, ns[name])
    ns["util"] = util
    renderer = reference / "decalib/utils/renderer.py"
    exec(compile(_source_between(reference / "decalib/deca.py", "def displacement2normal", "    def visofp"),
                 "decalib/deca.py", "exec"), ns)  # noqa: S102
    exec(compile(_source_between(renderer, "def add_SHlight", "    def add_pointlight"),
                 "decalib/utils/renderer.py", "exec"), ns)  # noqa: S102
    exec(compile(_source_between(renderer, "pi = np.pi", "self.register_buffer('constant_factor'"),
                 "decalib/utils/renderer.py", "exec"), ns)  # noqa: S102
    return ns["displacement2normal"], ns["add_SHlight"], ns["constant_factor"], util


def _reference_detail_normals(reference: Path, out: dict[str, np.ndarray]) -> None:
    """The reference's detail normals and SH shading for tests/_deca_files.detail_normal_inputs.
    world2uv (a pytorch3d rasterization of the mesh into UV space) is replaced by the identity:
    the inputs are already UV maps; this project draws them with its own rasterizer."""
    displacement2normal, add_shlight, constant_factor, util = _detail_functions(reference)
    d = {k: torch.from_numpy(v).float() for k, v in detail_normal_inputs().items()}
    size = d["mask"].shape[0]

    def chw(x: torch.Tensor) -> torch.Tensor:
        return x.permute(2, 0, 1)[None]

    render = types.SimpleNamespace(world2uv=lambda maps: maps,
                                   dense_faces=torch.from_numpy(util.generate_triangles(size, size)).long()[None])
    deca = types.SimpleNamespace(render=render, uv_face_eye_mask=d["mask"][None, None],
                                 fixed_uv_dis=d["fixed_displacement"])
    normals = displacement2normal(deca, d["displacement"][None, None], chw(d["uv_vertices"]), chw(d["uv_normals"]))
    shading = add_shlight(types.SimpleNamespace(constant_factor=constant_factor), normals, d["light"][None])
    out["detail.normals"] = normals[0].numpy()
    out["detail.shading"] = shading[0].numpy()
    for name, value in detail_normal_inputs().items():
        out[f"inputs.detail.{name}"] = signature(torch.from_numpy(value)).numpy()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="a yfeng95/DECA checkout")
    parser.add_argument("--reference-version", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    reference = args.reference.resolve()
    sys.path.insert(0, str(reference))
    from decalib.models.decoders import Generator
    from decalib.models.encoders import ResnetEncoder
    from decalib.models.FLAME import FLAME

    batch_orth_proj = _orth_proj(reference)
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    inputs = golden_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours = write_official_files(root)
        for name, module in ours.modules().items():
            out[f"weights.{name}"] = torch.stack([signature(t) for t in module.state_dict().values()]).numpy()

        state = torch.load(root / "deca_model.tar", map_location="cpu", weights_only=True)
        nets = {"E_flame": ResnetEncoder(outsize=236), "E_detail": ResnetEncoder(outsize=128),
                "D_detail": Generator(latent_dim=181, out_channels=1, out_scale=0.01, sample_mode="bilinear")}
        for name, net in nets.items():
            net.load_state_dict(state[name], strict=True)
            net.eval()
        config = types.SimpleNamespace(flame_model_path=str(root / "generic_model.pkl"),
                                       flame_lmk_embedding_path=str(root / "landmark_embedding.npy"),
                                       n_shape=100, n_exp=50)
        with fake_chumpy():
            flame = FLAME(config).eval()

    for name, value in inputs.items():
        out[f"inputs.{name}"] = signature(value).numpy()
    out["E_flame.out"] = nets["E_flame"](inputs["images"]).numpy()
    out["E_detail.out"] = nets["E_detail"](inputs["images"]).numpy()
    # before the 0.01 output scale, so that 1e-4 stays a meaningful tolerance
    out["D_detail.out_unscaled"] = (nets["D_detail"](inputs["detail_code"]) / 0.01)[:, :, ::4, ::4].numpy()
    verts, lmk2d, lmk3d = flame(shape_params=inputs["shape"], expression_params=inputs["exp"],
                                pose_params=inputs["pose"])
    out["flame.vertices"] = verts.numpy()
    out["flame.landmarks2d"] = lmk2d.numpy()
    out["flame.landmarks3d"] = lmk3d.numpy()
    # DECA.decode's projections: y (and z) negated after the orthographic camera
    trans_verts = batch_orth_proj(verts, inputs["cam"])
    trans_verts[:, :, 1:] = -trans_verts[:, :, 1:]
    out["flame.trans_verts"] = trans_verts.numpy()
    proj2d = batch_orth_proj(lmk2d, inputs["cam"])[:, :, :2]
    proj2d[:, :, 1:] = -proj2d[:, :, 1:]
    out["flame.landmarks2d_projected"] = proj2d.numpy()

    _reference_detail_normals(reference, out)

    write_golden(args.out, out, GOLDEN_SEED, f"yfeng95/DECA {reference_version(reference, args.reference_version)}")


if __name__ == "__main__":
    main()
