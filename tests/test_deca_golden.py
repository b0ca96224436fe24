"""DECA's encoders, detail decoder and FLAME layer equal the reference (yfeng95/DECA).

tests/golden/deca_golden.npz holds outputs of the REFERENCE code, made by
`benchmarks/make_deca_golden.py --reference <checkout>` from the files tests/_deca_files.py
writes: seeded networks in deca_model.tar, and a synthetic FLAME model in the official
pickle structure (chumpy arrays, sparse regressor) with its landmark embedding. Here the
same files are written again, loaded by this project's loaders, and every output must match
to within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frontal_exp.frontalizers.deca import checkpoints
from frontal_exp.frontalizers.deca.flame import project_orthographic

from ._deca_files import golden_inputs, write_official_files
from ._lp_weights import signature

GOLDEN = Path(__file__).parent / "golden/deca_golden.npz"
TOLERANCE = 1e-4
REGENERATE = ("regenerate the golden file with `python benchmarks/make_deca_golden.py "
              "--reference <DECA checkout>` once the change is understood")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(the networks as written, the DecaModel loaded back from the four files)."""
    root = tmp_path_factory.mktemp("deca_golden")
    written = write_official_files(root)
    return written, checkpoints.load_model(root)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return golden_inputs()


def assert_matches(golden: dict[str, np.ndarray], key: str, got: torch.Tensor) -> None:
    want = golden[key]
    got = got.detach().cpu().numpy()
    assert got.shape == want.shape, f"{key}: shape {got.shape}, reference {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert diff <= TOLERANCE, f"{key}: max |project - reference| = {diff:.3g} > {TOLERANCE:g}"


def test_weights_and_inputs_are_those_of_the_golden_file(golden, model, inputs):
    for name, module in model[0].modules().items():
        sig = torch.stack([signature(t) for t in module.state_dict().values()]).numpy()
        np.testing.assert_allclose(sig, golden[f"weights.{name}"], rtol=1e-6, atol=1e-6,
                                   err_msg=f"seeded weights of {name} changed; {REGENERATE}")
    for name, value in inputs.items():
        np.testing.assert_allclose(signature(value).numpy(), golden[f"inputs.{name}"], rtol=1e-6,
                                   atol=1e-6, err_msg=f"seeded input {name} changed; {REGENERATE}")


@torch.no_grad()
def test_encoders(golden, model, inputs):
    nets = model[1].networks
    assert_matches(golden, "E_flame.out", nets.E_flame(inputs["images"]))
    assert_matches(golden, "E_detail.out", nets.E_detail(inputs["images"]))


@torch.no_grad()
def test_detail_decoder(golden, model, inputs):
    out = model[1].networks.D_detail(inputs["detail_code"])
    assert out.shape == (2, 1, 256, 256)
    assert_matches(golden, "D_detail.out_unscaled", (out / 0.01)[:, :, ::4, ::4])


@torch.no_grad()
def test_flame_vertices_and_landmarks(golden, model, inputs):
    flame = model[1].flame
    verts, lmk2d, lmk3d = flame(inputs["shape"], inputs["exp"], inputs["pose"])
    assert_matches(golden, "flame.vertices", verts)
    assert_matches(golden, "flame.landmarks2d", lmk2d)
    assert_matches(golden, "flame.landmarks3d", lmk3d)
    # the inputs' yaws reach every branch of the contour-row rule
    rows = flame.contour_rows(flame.full_pose(inputs["pose"]))
    assert rows.tolist() == [0, 14, 54, 34, 73, 78]


@torch.no_grad()
def test_orthographic_projection(golden, model, inputs):
    verts, lmk2d, _ = model[1].flame(inputs["shape"], inputs["exp"], inputs["pose"])
    assert_matches(golden, "flame.trans_verts", project_orthographic(verts, inputs["cam"]))
    assert_matches(golden, "flame.landmarks2d_projected", project_orthographic(lmk2d, inputs["cam"])[..., :2])


def test_detail_normals_and_shading():
    """DECA's displacement2normal (dense UV mesh normals of the displaced surface, masked)
    and add_SHlight, on UV maps given directly (the reference's world2uv needs pytorch3d)."""
    from frontal_exp.frontalizers.deca.detail import detail_normals, sh_shading

    from ._deca_files import detail_normal_inputs

    golden = dict(np.load(GOLDEN, allow_pickle=False))
    d = detail_normal_inputs()
    for name, value in d.items():
        np.testing.assert_allclose(signature(torch.from_numpy(value)).numpy(), golden[f"inputs.detail.{name}"],
                                   rtol=1e-6, atol=1e-9, err_msg=f"detail input {name} changed; {REGENERATE}")
    normals = detail_normals(d["uv_vertices"], d["uv_normals"], d["displacement"], d["fixed_displacement"],
                             d["mask"])
    assert_matches(golden, "detail.normals", torch.from_numpy(normals).permute(2, 0, 1))
    assert_matches(golden, "detail.shading", torch.from_numpy(sh_shading(normals, d["light"])).permute(2, 0, 1))
