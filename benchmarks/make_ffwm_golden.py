"""Write tests/golden/ffwm_golden.npz: outputs of the REFERENCE FFWM (csyxwei/FFWM) on
seeded weights in the official format, for tests/test_ffwm_golden.py to compare this
project's networks against.

    python benchmarks/make_ffwm_golden.py --reference /path/to/FFWM

The reference checkout is imported from the given path (`models/base_networks.py`: FlowNet,
FFWM, WarpNet; plain PyTorch, no CUDA extension); nothing of it is copied. Weights come
from `tests/_ffwm_weights.py` (seeded, all parameters perturbed, spectral norms settled,
BatchNorm statistics calibrated), are written as the two official files (legacy torch.save
format, flowNetF with its unused occlusion blocks) and loaded as the reference's
BaseModel.load_networks does (torch.load, drop _metadata, strict load_state_dict), in eval
mode as test_ffwm.py runs them. Covered, with max |difference| <= 1e-4 expected: flowNetF's
three flows and netG's three reconstructions for a seeded image (FFWMModel.test_forward),
netG alone on seeded flows, and the whole path on the 128x128 crop this project's
`FFWMFrontalizer` cuts from skimage's astronaut photo.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import reference_version, write_golden

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests._ffwm_weights import (  # noqa: E402
    GOLDEN_SEED,
    golden_inputs,
    signature,
    weight_signatures,
    write_official_weights,
)

from frontal_exp.frontalizers.ffwm import FFWMFrontalizer, checkpoints  # noqa: E402

DEFAULT_OUT = REPO / "tests/golden/ffwm_golden.npz"


def _load(net: torch.nn.Module, path: Path) -> torch.nn.Module:
    """As the reference's BaseModel.load_networks (its InstanceNorm patch is a no-op here)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if hasattr(state, "_metadata"):
        del state._metadata
    net.load_state_dict(state)
    return net.eval()


def _load_reference(reference: Path, models_dir: Path):
    sys.path.insert(0, str(reference))
    from models import base_networks

    flow_net = _load(base_networks.FlowNet(64), models_dir / checkpoints.FLOW_FILE)
    generator = _load(base_networks.FFWM(sn=True), models_dir / checkpoints.GENERATOR_FILE)
    return flow_net, generator, base_networks.WarpNet()


def _astronaut_crop(models_dir: Path) -> np.ndarray:
    """The 128x128 RGB crop this project cuts from the astronaut photo."""
    import cv2
    import skimage.data

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return FFWMFrontalizer(models_dir=str(models_dir), device="cpu").crop(image).image


@torch.no_grad()
def reference_outputs(flow_net, generator, warp_net, inputs: dict[str, torch.Tensor],
                      crop: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, torch.Tensor] = {}

    def test_forward(prefix: str, image: torch.Tensor) -> None:
        # FFWMModel.test_forward
        flow128, flow64, flow32 = flow_net(image)
        warped = warp_net(image, flow128)
        rec32, rec64, rec128, att = generator(image, flow=[flow32, flow64, flow128], return_att=True)
        out.update({f"{prefix}.flow128": flow128, f"{prefix}.flow64": flow64, f"{prefix}.flow32": flow32,
                    f"{prefix}.warped": warped, f"{prefix}.rec32": rec32, f"{prefix}.rec64": rec64,
                    f"{prefix}.rec128": rec128,
                    # as test_forward keeps it (the whole 128-channel map would be 8 MB)
                    f"{prefix}.attention": torch.mean(att[:, :64], (1,), keepdim=True)})

    test_forward("seeded", inputs["image"])
    rec32, rec64, rec128 = generator(inputs["generator.image"],
                                     flow=[inputs["flow32"], inputs["flow64"], inputs["flow128"]])
    out.update({"generator.rec32": rec32, "generator.rec64": rec64, "generator.rec128": rec128})
    x = torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1)[None]
    test_forward("real", x)
    return {k: v.detach().cpu().float().numpy() for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True,
                        help="checkout of github.com/csyxwei/FFWM (holding models/base_networks.py)")
    parser.add_argument("--reference-version", help="recorded in the file (default: its git HEAD)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    reference = args.reference.resolve()
    if not (reference / "models/base_networks.py").is_file():
        parser.error(f"{reference} is not an FFWM checkout (no models/base_networks.py)")
    torch.use_deterministic_algorithms(True)

    inputs = golden_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp)
        nets = write_official_weights(models_dir)
        crop = _astronaut_crop(models_dir)
        golden = reference_outputs(*_load_reference(reference, models_dir), inputs, crop)

    golden.update({f"weights.{k}": v.numpy() for k, v in weight_signatures(nets).items()})
    golden.update({f"inputs.{k}": signature(v).numpy() for k, v in inputs.items()})
    golden["real.crop"] = crop
    version = reference_version(reference, args.reference_version)
    write_golden(args.out, golden, GOLDEN_SEED, f"csyxwei/FFWM {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
