"""Write tests/golden/liveportrait_golden.npz: outputs of the REFERENCE LivePortrait
(KwaiVGI/LivePortrait) on seeded weights in the official format, for
tests/test_liveportrait_golden.py to compare this project's networks against.

    python benchmarks/make_liveportrait_golden.py --reference /path/to/LivePortrait

The reference checkout is imported from the given path (its `src/modules`, `src/utils`
and `LivePortraitWrapper`, which need only this project's dependencies); nothing of it is
copied. Weights come from `tests/_lp_weights.py` (seeded, all parameters perturbed,
spectral norms settled), are written as the five official files and loaded by the
reference's own `load_model` (strict). Covered: F, M, W, G and the three stitching /
retargeting MLPs on small seeded inputs, and one whole frontalization (the reference's
wrapper steps composed with frontal driving keypoints, stitching on) of the crop this
project's `LivePortraitFrontalizer` cuts from skimage's astronaut photo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from _common import reference_version, write_golden

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests._lp_weights import (  # noqa: E402
    GOLDEN_SEED,
    golden_inputs,
    signature,
    summarize,
    weight_signatures,
    write_official_weights,
)

from frontal_exp.frontalizers.liveportrait import LivePortraitFrontalizer, checkpoints  # noqa: E402

DEFAULT_OUT = REPO / "tests/golden/liveportrait_golden.npz"


def _load_reference(reference: Path, models_dir: Path):
    """The reference's networks, loaded from the official files by its own loader, and a
    `LivePortraitWrapper` holding them (its __init__ would also read its config files)."""
    import yaml

    sys.path.insert(0, str(reference))
    from src.live_portrait_wrapper import LivePortraitWrapper
    from src.utils.helper import load_model

    config = yaml.safe_load((reference / "src/config/models.yaml").read_text())
    wrapper = LivePortraitWrapper.__new__(LivePortraitWrapper)
    wrapper.inference_cfg = SimpleNamespace(flag_use_half_precision=False, input_shape=(256, 256))
    wrapper.device = "cpu"
    wrapper.compile = False
    for attr, rel in checkpoints.BASE_FILES.items():
        setattr(wrapper, attr, load_model(str(models_dir / rel), config, "cpu", attr))
    wrapper.stitching_retargeting_module = load_model(
        str(models_dir / checkpoints.RETARGETING_FILE), config, "cpu",
        "stitching_retargeting_module",
    )
    return wrapper


def _astronaut_crop(models_dir: Path):
    """The 256x256 crop (and its eye/lip ratios) this project cuts from the astronaut photo."""
    import cv2
    import skimage.data

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return LivePortraitFrontalizer(models_dir=str(models_dir), device="cpu").crop(image)


@torch.no_grad()
def reference_outputs(wrapper, inputs: dict[str, torch.Tensor], crop) -> dict[str, np.ndarray]:
    from src.utils.camera import headpose_pred_to_degree

    out: dict[str, torch.Tensor] = {}
    out["appearance.out"] = wrapper.appearance_feature_extractor(inputs["appearance.image"])
    motion = wrapper.motion_extractor(inputs["motion.image"])
    for key, value in motion.items():
        out[f"motion.{key}"] = value
    for key in ("pitch", "yaw", "roll"):
        out[f"motion.{key}_degrees"] = headpose_pred_to_degree(motion[key])
    warped = wrapper.warping_module(inputs["warping.feature"],
                                    kp_driving=inputs["warping.kp_driving"],
                                    kp_source=inputs["warping.kp_source"])
    for key, value in summarize(warped["out"]).items():
        out[f"warping.out.{key}"] = value
    out["warping.deformation"] = warped["deformation"]
    out["warping.occlusion_map"] = warped["occlusion_map"]
    out["spade.out"] = wrapper.spade_generator(feature=inputs["spade.feature"])
    for part in ("stitching", "lip", "eye"):
        out[f"{part}.out"] = wrapper.stitching_retargeting_module[part](inputs[f"{part}.input"])

    # one frontalization: the reference's steps, driven at pitch = yaw = roll = 0
    x = wrapper.prepare_source(crop.image)
    info = wrapper.get_kp_info(x)
    feature = wrapper.extract_feature_3d(x)
    x_s = wrapper.transform_keypoint(info)
    frontal = dict(info, **{k: torch.zeros_like(info[k]) for k in ("pitch", "yaw", "roll")})
    x_d = wrapper.stitching(x_s, wrapper.transform_keypoint(frontal))
    image = wrapper.warp_decode(feature, x_s, x_d)["out"]
    out["frontal.x_s"], out["frontal.x_d"] = x_s, x_d
    for key in ("pitch", "yaw", "roll"):
        out[f"frontal.{key}_degrees"] = info[key].reshape(-1)
    for key, value in summarize(image).items():
        out[f"frontal.out.{key}"] = value
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="checkout of github.com/KwaiVGI/LivePortrait (holding src/)")
    parser.add_argument("--reference-version", help="recorded in the file (default: its git HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    if not (reference / "src/modules/spade_generator.py").is_file():
        parser.error(f"{reference} is not a LivePortrait checkout "
                     "(no src/modules/spade_generator.py)")
    torch.use_deterministic_algorithms(True)

    inputs = golden_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp)
        nets = write_official_weights(models_dir)
        crop = _astronaut_crop(models_dir)
        golden = reference_outputs(_load_reference(reference, models_dir), inputs, crop)

    golden.update({f"weights.{k}": v.numpy() for k, v in weight_signatures(nets).items()})
    golden.update({f"inputs.{k}": signature(v).numpy() for k, v in inputs.items()})
    golden["frontal.crop"] = crop.image
    golden["frontal.eye_open"] = crop.eye_open
    golden["frontal.lip_open"] = np.float32(crop.lip_open)
    version = reference_version(reference, args.reference_version)
    write_golden(args.out, golden, GOLDEN_SEED, f"KwaiVGI/LivePortrait {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
