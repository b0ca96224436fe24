"""LivePortrait equals the reference implementation (KwaiVGI/LivePortrait) on the same weights.

tests/golden/liveportrait_golden.npz holds outputs of the REFERENCE code, made once by
`benchmarks/make_liveportrait_golden.py --reference <checkout>` on seeded official-format
weights (tests/_lp_weights.py: every parameter perturbed, spectral norms settled). Here the
same weights are regenerated and this project's networks must match to within 1e-4: each
network on small seeded inputs, and one whole frontalization of a real face crop through
`LivePortraitFrontalizer.frontalize_crops` with the weights read from the official files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from frontal_exp.frontalizers.liveportrait import LivePortraitFrontalizer
from frontal_exp.frontalizers.liveportrait.crop import FaceCrop
from frontal_exp.frontalizers.liveportrait.keypoints import bins_to_degrees

from ._lp_weights import (
    golden_inputs,
    signature,
    summarize,
    weight_signatures,
    write_official_weights,
)

GOLDEN = Path(__file__).parent / "golden/liveportrait_golden.npz"
TOLERANCE = 1e-4
REGENERATE = ("regenerate the golden file with `python benchmarks/make_liveportrait_golden.py "
              "--reference <LivePortrait checkout>` once the change is understood")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(models_dir holding the five official files, the same networks in memory)."""
    models_dir = tmp_path_factory.mktemp("lp_golden_models")
    return models_dir, write_official_weights(models_dir)


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
    changed (torch's RNG, build_networks or randomize_), not the networks."""
    for name, sig in weight_signatures(seeded[1]).items():
        np.testing.assert_allclose(sig.numpy(), golden[f"weights.{name}"], rtol=1e-6, atol=1e-6,
                                   err_msg=f"seeded weights of {name} changed; {REGENERATE}")
    for name, value in inputs.items():
        np.testing.assert_allclose(signature(value).numpy(), golden[f"inputs.{name}"], rtol=1e-6,
                                   atol=1e-6, err_msg=f"seeded input {name} changed; {REGENERATE}")


@torch.no_grad()
def test_appearance_feature_extractor(golden, seeded, inputs):
    out = seeded[1].appearance_feature_extractor(inputs["appearance.image"])
    assert_matches(golden, "appearance.out", out)


@torch.no_grad()
def test_motion_extractor(golden, seeded, inputs):
    raw = seeded[1].motion_extractor(inputs["motion.image"])
    for key in ("kp", "exp", "scale", "t", "pitch", "yaw", "roll"):
        assert_matches(golden, f"motion.{key}", raw[key])
    for key in ("pitch", "yaw", "roll"):
        assert_matches(golden, f"motion.{key}_degrees", bins_to_degrees(raw[key]))


@torch.no_grad()
def test_warping_module(golden, seeded, inputs):
    out = seeded[1].warping_module(inputs["warping.feature"],
                                   kp_driving=inputs["warping.kp_driving"],
                                   kp_source=inputs["warping.kp_source"])
    for key, value in summarize(out["out"]).items():
        assert_matches(golden, f"warping.out.{key}", value)
    assert_matches(golden, "warping.deformation", out["deformation"])
    assert_matches(golden, "warping.occlusion_map", out["occlusion_map"])


@torch.no_grad()
def test_spade_generator(golden, seeded, inputs):
    assert_matches(golden, "spade.out", seeded[1].spade_generator(inputs["spade.feature"]))


@torch.no_grad()
@pytest.mark.parametrize("part", ["stitching", "lip", "eye"])
def test_stitching_and_retargeting(golden, seeded, inputs, part):
    mlp = getattr(seeded[1].stitching_retargeting_module, part)
    assert_matches(golden, f"{part}.out", mlp(inputs[f"{part}.input"]))


def test_whole_frontalization(golden, seeded):
    """The frontalizer's network path (weights read from the official files, frontal driving
    keypoints, stitching on) against the reference's wrapper steps on the same 256x256 crop."""
    frontalizer = LivePortraitFrontalizer(models_dir=str(seeded[0]), device="cpu")
    crop = FaceCrop(image=golden["frontal.crop"], image_to_crop=np.eye(3),
                    landmarks=np.zeros((106, 2)), eye_open=golden["frontal.eye_open"],
                    lip_open=float(golden["frontal.lip_open"]))
    seen = {}
    hook = frontalizer.networks.spade_generator.register_forward_hook(
        lambda module, args, output: seen.update(out=output.detach().clone())
    )
    try:
        face = frontalizer.frontalize_crops([crop])[0]
    finally:
        hook.remove()

    motion = frontalizer.last_motion
    assert_matches(golden, "frontal.x_s", motion.x_s)
    assert_matches(golden, "frontal.x_d", motion.x_d)
    for key in ("pitch", "yaw", "roll"):
        assert_matches(golden, f"frontal.{key}_degrees", getattr(motion.source, key))
    for key, value in summarize(seen["out"]).items():
        assert_matches(golden, f"frontal.out.{key}", value)
    # the returned BGR face is that image, quantised
    want = (np.clip(golden["frontal.out.sampled"][0], 0, 1) * 255).astype(np.uint8)
    want = want.transpose(1, 2, 0)
    got = face[::4, ::4, ::-1]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
