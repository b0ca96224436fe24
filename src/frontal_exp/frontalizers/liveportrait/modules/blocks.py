"""Convolution blocks shared by the LivePortrait networks.

Attribute names (`conv`, `norm`, `conv1`, ...) are part of the official checkpoints' key
names and must not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """Conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU), resolution kept."""

    def __init__(self, in_ch: int, out_ch: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x) if self.leaky else F.relu(x)


class DownBlock2d(nn.Module):
    """Conv 3x3 -> BatchNorm -> ReLU -> 2x2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """3D conv -> BatchNorm -> ReLU -> pooling of height and width only (depth kept)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsampling of height and width -> 3D conv -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block (BN -> ReLU -> conv, twice)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(ch, ch, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(ch)
        self.norm2 = nn.BatchNorm3d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def _hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


class HourglassEncoder(nn.Module):
    """Stack of `DownBlock3d`; returns the input and every level's output (for skips)."""

    def __init__(self, block_expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_ch if i == 0 else _hourglass_width(block_expansion, max_features, i),
                _hourglass_width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [x]
        for block in self.down_blocks:
            levels.append(block(levels[-1]))
        return levels


class HourglassDecoder(nn.Module):
    """`UpBlock3d`s with skip concatenation, then a final conv -> BN -> ReLU."""

    def __init__(self, block_expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # every block but the deepest also receives the skip of the same width
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock3d(
                    mult * _hourglass_width(block_expansion, max_features, i + 1),
                    _hourglass_width(block_expansion, max_features, i),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_ch
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        out = levels[-1]
        for block, skip in zip(self.up_blocks, reversed(levels[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3D U-Net (pooling in height and width only) used by the dense motion network."""

    def __init__(self, block_expansion: int, in_ch: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_ch, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_ch, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
