"""SPADE generator G: decodes the warped 2D features (256x64x64) into a 512x512 RGB face."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class SPADE(nn.Module):
    """Instance norm whose scale and shift are predicted from a conditioning map."""

    def __init__(self, norm_ch: int, label_ch: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_ch, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_ch, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_ch, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        act = self.mlp_shared(cond)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(act)) + self.mlp_beta(act)


class SPADEResnetBlock(nn.Module):
    """Residual block of SPADE-normalised, spectrally normalised convolutions."""

    def __init__(self, fin: int, fout: int, label_ch: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        mid = min(fin, fout)
        # spectral_norm stores weight_orig / weight_u / weight_v, as the checkpoints do
        self.conv_0 = spectral_norm(nn.Conv2d(fin, mid, 3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(mid, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, label_ch)
        self.norm_1 = SPADE(mid, label_ch)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_ch)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """Six SPADE blocks at 64x64, two upsampling blocks, then pixel shuffle to 2x resolution."""

    def __init__(
        self,
        upscale: int = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
    ) -> None:
        super().__init__()
        in_ch = min(max_features, block_expansion * (2**num_down_blocks))
        self.fc = nn.Conv2d(in_ch, 2 * in_ch, 3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * in_ch, 2 * in_ch, in_ch))
        self.up_0 = SPADEResnetBlock(2 * in_ch, in_ch, in_ch)
        self.up_1 = SPADEResnetBlock(in_ch, out_channels, in_ch)
        if upscale is None or upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, 3, padding=1),
                nn.PixelShuffle(upscale),
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B,256,64,64) -> RGB in [0, 1], (B,3,512,512)."""
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


@torch.no_grad()
def settle_spectral_norm(module: nn.Module, iterations: int = 30) -> None:
    """Run power iterations on every spectral-norm buffer (u, v) of `module`.

    Freshly initialised u/v are random, so in eval mode sigma = u^T W v can be near zero
    or negative; trained checkpoints hold converged vectors. Random-init checkpoints
    (tests, benchmark) call this so they behave like real ones.
    """
    for sub in module.modules():
        if not hasattr(sub, "weight_orig"):
            continue
        mat = sub.weight_orig.flatten(1)
        u, v = sub.weight_u, sub.weight_v
        for _ in range(iterations):
            v.copy_(F.normalize(mat.t() @ u, dim=0, eps=1e-12))
            u.copy_(F.normalize(mat @ v, dim=0, eps=1e-12))
