"""Seeded LivePortrait weights in the official checkpoint format, and the golden test's inputs.

`seeded_networks(seed)` builds the five networks from torch's default initialisation under
`seed`, then perturbs every parameter and normalisation buffer (`randomize_`: norm affines,
ConvNeXt-V2 GRN gamma/beta, biases), settles the spectral-norm vectors by power iteration
and sets the warping module's BatchNorm statistics from a forward pass, as training does.
On CPU this is deterministic (bit-identical run to run, any thread count). Shared by
tests/test_liveportrait_golden.py and benchmarks/make_liveportrait_golden.py, which must
agree on weights and inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from frontal_exp.frontalizers.liveportrait import checkpoints
from frontal_exp.frontalizers.liveportrait.modules import (
    LivePortraitNetworks,
    build_networks,
    randomize_,
)

#: seed of the weights the committed golden file was made with
GOLDEN_SEED = 8


def seeded_networks(seed: int = GOLDEN_SEED) -> LivePortraitNetworks:
    """The five networks with weights fixed by `seed` (CPU, eval); torch's global RNG is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_networks()
    gen = torch.Generator().manual_seed(seed)
    for module in nets.modules().values():
        randomize_(module, gen)
    # only W: F calibrated on these small noise images amplifies its activations on a real
    # 256x256 crop, and float rounding with them, in the whole frontalization
    inputs = golden_inputs(seed)
    calibrate_batchnorm_(nets.warping_module, inputs["warping.feature"],
                         kp_driving=inputs["warping.kp_driving"],
                         kp_source=inputs["warping.kp_source"])
    return nets.eval()


@torch.no_grad()
def calibrate_batchnorm_(module: torch.nn.Module, *args, **kwargs) -> None:
    """Set every BatchNorm's running statistics to those of its input on one forward pass,
    as training leaves them. With arbitrary statistics the activations fade through the
    warping module's hourglass and its softmax mask turns uniform, which hides differences
    (e.g. in the keypoint Gaussians) from the comparison."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, that batch's statistics
        norm.train()
    module(*args, **kwargs)
    for norm in norms:
        norm.momentum = 0.1
        norm.eval()


def write_official_weights(models_dir: str | Path, seed: int = GOLDEN_SEED) -> LivePortraitNetworks:
    """Write `seeded_networks(seed)` as the five official files under `models_dir`; returns them."""
    nets = seeded_networks(seed)
    checkpoints.save_networks(nets, models_dir)
    return nets


def golden_inputs(seed: int = GOLDEN_SEED) -> dict[str, torch.Tensor]:
    """Small seeded inputs for each network (they are fully convolutional, so reduced sizes
    keep the comparison fast): images in [0, 1], a feature volume, keypoint pairs, MLP inputs."""
    gen = torch.Generator().manual_seed(seed + 1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen)

    kp_source = 1.6 * rand(1, 21, 3) - 0.8
    return {
        "appearance.image": rand(1, 3, 32, 32),
        "motion.image": rand(2, 3, 64, 64),
        # the hourglass pools height and width 5 times: 32 is the smallest size
        "warping.feature": randn(1, 32, 16, 32, 32),
        "warping.kp_source": kp_source,
        "warping.kp_driving": kp_source + 0.15 * randn(1, 21, 3),
        "spade.feature": randn(1, 256, 8, 8),
        "stitching.input": 0.5 * randn(2, 126),
        "lip.input": 0.5 * randn(2, 65),
        "eye.input": 0.5 * randn(2, 66),
    }


def signature(tensor: torch.Tensor) -> torch.Tensor:
    """(sum, sum of squares, first, last) in float64: checks a regenerated tensor is the one
    the golden file was made from, tolerant of last-bit differences between CPUs."""
    t = tensor.detach().reshape(-1)
    t = t if t.is_floating_point() else t.double()  # e.g. BatchNorm's num_batches_tracked
    square_norm = torch.linalg.vector_norm(t, dtype=torch.float64) ** 2
    return torch.stack([t.sum(dtype=torch.float64), square_norm, t[0].double(), t[-1].double()])


def weight_signatures(nets: LivePortraitNetworks) -> dict[str, torch.Tensor]:
    """Per network: (N, 4) signatures of its state_dict tensors, in state_dict order."""
    return {
        name: torch.stack([signature(t) for t in module.state_dict().values()])
        for name, module in nets.modules().items()
    }


def summarize(image: torch.Tensor, step: int = 4) -> dict[str, torch.Tensor]:
    """A (B, C, H, W) output reduced for the golden file: every `step`-th pixel in each
    direction (float32), plus the mean of every row and every column (float64), so that
    every pixel still counts."""
    x = image.detach()
    return {
        "sampled": x[:, :, ::step, ::step].float(),
        "row_mean": x.double().mean(dim=3),
        "col_mean": x.double().mean(dim=2),
    }
