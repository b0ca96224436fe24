"""LivePortrait's networks (KwaiVGI/LivePortrait, MIT) re-written so the official checkpoints
load with strict=True; hyper-parameters are those of the reference's models.yaml."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .appearance import AppearanceFeatureExtractor
from .motion import MotionExtractor
from .spade import SPADEDecoder, settle_spectral_norm
from .stitching import StitchingRetargeting
from .warping import WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor",
    "LivePortraitNetworks",
    "MotionExtractor",
    "SPADEDecoder",
    "StitchingRetargeting",
    "WarpingNetwork",
    "build_networks",
    "randomize_",
]


@dataclass
class LivePortraitNetworks:
    """The five networks of one LivePortrait model (F, M, W, G, S)."""

    appearance_feature_extractor: AppearanceFeatureExtractor
    motion_extractor: MotionExtractor
    warping_module: WarpingNetwork
    spade_generator: SPADEDecoder
    stitching_retargeting_module: StitchingRetargeting

    def modules(self) -> dict[str, nn.Module]:
        return dict(vars(self))

    def to(self, device: torch.device | str) -> LivePortraitNetworks:
        for m in self.modules().values():
            m.to(device)
        return self

    def eval(self) -> LivePortraitNetworks:
        for m in self.modules().values():
            m.eval()
            m.requires_grad_(False)
        return self


def build_networks() -> LivePortraitNetworks:
    """Untrained networks with the official architecture (human model)."""
    return LivePortraitNetworks(
        appearance_feature_extractor=AppearanceFeatureExtractor(
            image_channel=3, block_expansion=64, num_down_blocks=2, max_features=512,
            reshape_channel=32, reshape_depth=16, num_resblocks=6,
        ),
        motion_extractor=MotionExtractor(num_kp=21, num_bins=66),
        warping_module=WarpingNetwork(
            num_kp=21, block_expansion=64, max_features=512, num_down_blocks=2,
            reshape_channel=32, estimate_occlusion_map=True,
            dense_motion_params={
                "block_expansion": 32, "max_features": 1024, "num_blocks": 5,
                "reshape_depth": 16, "compress": 4,
            },
        ),
        spade_generator=SPADEDecoder(
            upscale=2, block_expansion=64, max_features=512, num_down_blocks=2
        ),
        stitching_retargeting_module=StitchingRetargeting(num_kp=21),
    )


@torch.no_grad()
def randomize_(module: nn.Module, generator: torch.Generator, scale: float = 0.1) -> nn.Module:
    """Perturb every parameter and normalisation buffer of `module` (tests, benchmarks).

    Default initialisation leaves BatchNorm statistics at 0/1 and ConvNeXt-V2's GRN at
    zero, which would hide mistakes in those layers; spectral-norm vectors are re-settled.
    """
    for name, p in module.named_parameters():
        spread = float(p.std()) if p.numel() > 1 else 1.0
        # constant initial values (norm affines at 1/0) get an absolute perturbation
        p.add_(scale * torch.randn(p.shape, generator=generator) * (spread or 1.0))
        if name.endswith("grn.gamma") or name.endswith("grn.beta"):
            p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    for name, b in module.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=generator))
        elif name.endswith("running_var"):
            b.copy_(1 + 0.2 * torch.rand(b.shape, generator=generator))
    settle_spectral_norm(module)
    return module
