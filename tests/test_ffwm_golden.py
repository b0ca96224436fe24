"""FFWM equals the reference implementation (csyxwei/FFWM) on the same weights.

tests/golden/ffwm_golden.npz holds outputs of the REFERENCE code, made once by
`benchmarks/make_ffwm_golden.py --reference <checkout>` on seeded official-format weights
(tests/_ffwm_weights.py: every parameter perturbed, spectral norms settled, BatchNorm
statistics calibrated). Here the same weights are regenerated, written as the official
files, loaded by this project's strict loader, and must match to within 1e-4: flows at the
three scales and the frontal image for a seeded input and for a real face crop (through
`FFWMFrontalizer.run`), and netG alone on seeded flows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frontal_exp.frontalizers.ffwm import FFWMFrontalizer
from frontal_exp.frontalizers.ffwm.crop import FaceCrop
from frontal_exp.frontalizers.ffwm.networks import warp

from ._ffwm_weights import golden_inputs, signature, weight_signatures, write_official_weights

GOLDEN = Path(__file__).parent / "golden/ffwm_golden.npz"
TOLERANCE = 1e-4
REGENERATE = ("regenerate the golden file with `python benchmarks/make_ffwm_golden.py "
              "--reference <FFWM checkout>` once the change is understood")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(frontalizer reading the two official files, the same networks in memory)."""
    models_dir = tmp_path_factory.mktemp("ffwm_golden_models")
    nets = write_official_weights(models_dir)
    return FFWMFrontalizer(models_dir=str(models_dir), device="cpu"), nets


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return golden_inputs()


def assert_matches(golden: dict[str, np.ndarray], key: str, got: torch.Tensor | np.ndarray) -> None:
    want = golden[key]
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == want.shape, f"{key}: shape {got.shape}, reference {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert diff <= TOLERANCE, f"{key}: max |project - reference| = {diff:.3g} > {TOLERANCE:g}"


def test_weights_and_inputs_are_those_of_the_golden_file(golden, seeded, inputs):
    """Guards the comparisons below: a mismatch here means the seeded weights or inputs
    changed (torch's RNG, build_networks, randomize_), not the networks."""
    for name, sig in weight_signatures(seeded[1]).items():
        np.testing.assert_allclose(sig.numpy(), golden[f"weights.{name}"], rtol=1e-6, atol=1e-6,
                                   err_msg=f"seeded weights of {name} changed; {REGENERATE}")
    for name, value in inputs.items():
        np.testing.assert_allclose(signature(value).numpy(), golden[f"inputs.{name}"], rtol=1e-6,
                                   atol=1e-6, err_msg=f"seeded input {name} changed; {REGENERATE}")


def _check_test_forward(golden, frontalizer: FFWMFrontalizer, prefix: str, image: torch.Tensor) -> None:
    out = frontalizer.run(image)
    for key, flow in zip(("flow128", "flow64", "flow32"), out.flows, strict=True):
        assert_matches(golden, f"{prefix}.{key}", flow)
    assert_matches(golden, f"{prefix}.warped", warp(image, out.flows[0]))
    for key in ("rec32", "rec64", "rec128"):
        assert_matches(golden, f"{prefix}.{key}", getattr(out.generated, key))
    attention = out.generated.attention[:, :64].mean(1, keepdim=True)
    assert_matches(golden, f"{prefix}.attention", attention)


def test_seeded_image_through_both_networks(golden, seeded, inputs):
    _check_test_forward(golden, seeded[0], "seeded", inputs["image"])


@torch.no_grad()
def test_generator_alone_on_seeded_flows(golden, seeded, inputs):
    flows = (inputs["flow32"], inputs["flow64"], inputs["flow128"])
    out = seeded[1].generator(inputs["generator.image"], flows)
    for key in ("rec32", "rec64", "rec128"):
        assert_matches(golden, f"generator.{key}", getattr(out, key))


def test_real_face_crop(golden, seeded):
    """The crop this project cuts from the astronaut photo, through the frontalizer's path
    (official files, strict loader) and its uint8 conversion."""
    frontalizer = seeded[0]
    crop = golden["real.crop"]
    x = torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1)[None]
    _check_test_forward(golden, frontalizer, "real", x)
    face = frontalizer.frontalize_crops([FaceCrop(crop, np.eye(3), None)])[0]  # type: ignore[arg-type]
    want = np.round(np.clip(golden["real.rec128"][0], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.abs(face[..., ::-1].astype(int) - want.astype(int)).max() <= 1
