"""Seeded FFWM weights in the official checkpoint format, and the golden test's inputs.

`seeded_networks(seed)` builds flowNetF and netG from torch's default initialisation under
`seed`, perturbs every parameter and normalisation buffer (`randomize_`: BatchNorm affines
and statistics, biases), settles the spectral-norm vectors by power iteration, and sets
every BatchNorm's running statistics from one forward pass on a real face (as training
leaves them, so activations neither fade nor saturate). The flow heads are scaled so the
tanh flows spread over [-1, 1] instead of sticking to its ends. Deterministic on CPU.
Shared by tests/test_ffwm_golden.py, tests/test_ffwm.py and benchmarks/make_ffwm_golden.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from frontal_exp.frontalizers.ffwm import checkpoints
from frontal_exp.frontalizers.ffwm.networks import FFWMNetworks, build_networks, occlusion_blocks
from frontal_exp.frontalizers.liveportrait.modules import randomize_

#: seed of the weights the committed golden file was made with
GOLDEN_SEED = 10


def calibration_face() -> torch.Tensor:
    """skimage's astronaut, face region, 1x3x128x128 RGB in [0, 1] (packaged, deterministic)."""
    import skimage.data

    face = skimage.data.astronaut()[20:240, 110:330]
    face = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(face.astype(np.float32) / 255).permute(2, 0, 1)[None]


@torch.no_grad()
def _calibrate(module: torch.nn.Module, *args) -> None:
    """Running statistics of every BatchNorm := those of its input on this forward pass."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, that batch's statistics
        norm.train()
    module(*args)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()


@torch.no_grad()
def seeded_networks(seed: int = GOLDEN_SEED) -> FFWMNetworks:
    """The two networks with weights fixed by `seed` (CPU, eval); torch's global RNG is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_networks()
    gen = torch.Generator().manual_seed(seed)
    for module in nets.modules().values():
        randomize_(module, gen)
    face = calibration_face()
    _calibrate(nets.flow_net, face)
    for k in range(7):
        # BN-normalised features into a 3x3 conv give tanh inputs of std ~ several units
        getattr(nets.flow_net, f"predict_flow{k}")[0].weight.mul_(0.4)
    nets.flow_net.eval()
    flows = nets.flow_net(face)
    _calibrate(nets.generator, face, (flows[2], flows[1], flows[0]))
    return nets.eval()


def occlusion_state(seed: int = GOLDEN_SEED) -> dict[str, torch.Tensor]:
    """The unused `inter_conv_occ*` tensors written into the seeded flowNetF file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        return occlusion_blocks().state_dict()


def write_official_weights(models_dir: str | Path, seed: int = GOLDEN_SEED, legacy: bool = True
                           ) -> FFWMNetworks:
    """Write `seeded_networks(seed)` as the two official files under `models_dir`; returns them."""
    nets = seeded_networks(seed)
    checkpoints.save_networks(nets, models_dir, legacy=legacy, occlusion=occlusion_state(seed))
    return nets


def golden_inputs(seed: int = GOLDEN_SEED) -> dict[str, torch.Tensor]:
    """A seeded image for the whole path, and seeded flows for netG alone: an identity
    grid, mirrored left-right and disturbed by smooth noise (so the warp samples inside)."""
    gen = torch.Generator().manual_seed(seed + 1)

    def smooth_image() -> torch.Tensor:
        # face-like statistics (smooth, mid-grey): white noise drives netG's sigmoid to its ends
        low = torch.nn.functional.interpolate(torch.randn((1, 3, 16, 16), generator=gen), size=(128, 128),
                                              mode="bicubic", align_corners=False)
        return (0.5 + 0.2 * low + 0.03 * torch.randn((1, 3, 128, 128), generator=gen)).clamp(0, 1)

    image = smooth_image()
    flows = []
    for n in (32, 64, 128):
        axis = (torch.arange(n, dtype=torch.float32) * 2 + 1) / n - 1
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        grid = torch.stack([-0.8 * x, 0.9 * y])[None]
        noise = torch.nn.functional.interpolate(torch.randn((1, 2, 8, 8), generator=gen), size=(n, n),
                                                mode="bilinear", align_corners=False)
        flows.append((grid + 0.1 * noise).clamp(-1, 1))
    return {"image": image, "generator.image": smooth_image(),
            "flow32": flows[0], "flow64": flows[1], "flow128": flows[2]}


def signature(tensor: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares, first, last) in float64: checks a regenerated tensor is the one
    the golden file was made from, tolerant of last-bit differences between CPUs."""
    t = tensor.detach().reshape(-1)
    t = t if t.is_floating_point() else t.double()
    square_norm = torch.linalg.vector_norm(t, dtype=torch.float64) ** 2
    return torch.stack([t.sum(dtype=torch.float64), square_norm, t[0].double(), t[-1].double()])


def weight_signatures(nets: FFWMNetworks) -> dict[str, torch.Tensor]:
    """Per network: (N, 4) signatures of its state_dict tensors, in state_dict order."""
    return {name: torch.stack([signature(t) for t in module.state_dict().values()])
            for name, module in nets.modules().items()}
