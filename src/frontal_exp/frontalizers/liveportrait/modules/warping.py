"""Warping module W: dense motion from source/driving implicit keypoints, applied to the
appearance feature volume, plus an occlusion map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Hourglass, SameBlock2d

#: variance of the keypoint Gaussians in the normalised [-1, 1] volume coordinates
KP_VARIANCE = 0.01


def coordinate_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1]: x to the right, y down, z into the image."""
    axes = [
        2 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1
        for n in (depth, height, width)
    ]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """kp (B, K, 3), grid (D, H, W, 3) -> (B, K, D, H, W) unnormalised Gaussians."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Predicts a per-voxel mixture over K+1 candidate motions (K keypoint translations plus
    identity for the background) and an occlusion map."""

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        # per candidate motion: 1 heatmap channel + the compressed, deformed features
        self.hourglass = Hourglass(
            block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b = feature.shape[0]
        k1 = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))
        _, c, d, h, w = feature.shape
        grid = coordinate_grid(d, h, w, kp_source)

        # candidate backward motions: identity, and for each keypoint the translation that
        # moves the driving keypoint onto the source keypoint (zeroth-order approximation)
        shifts = (kp_source - kp_driving)[:, :, None, None, None, :]
        motions = torch.cat([grid.expand(b, 1, d, h, w, 3), grid[None, None] + shifts], dim=1)

        deformed = F.grid_sample(
            feature[:, None].expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w),
            motions.reshape(b * k1, d, h, w, 3),
            align_corners=False,
        ).view(b, k1, c, d, h, w)

        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)

        # channel order per candidate: [heatmap, deformed features]
        hourglass_in = torch.cat([heat[:, :, None], deformed], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(hourglass_in)

        weights = F.softmax(self.mask(prediction), dim=1)
        deformation = (motions * weights[..., None]).sum(dim=1)  # (B, D, H, W, 3)
        out = {"mask": weights, "deformation": deformation}
        if self.occlusion is not None:
            flat = prediction.reshape(b, -1, h, w)
            out["occlusion_map"] = torch.sigmoid(self.occlusion(flat))
        return out


class WarpingNetwork(nn.Module):
    """Warps the 3D feature volume from source to driving keypoints and projects it to 2D."""

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
    ) -> None:
        super().__init__()
        params = {
            "block_expansion": 32, "max_features": 1024, "num_blocks": 5,
            "reshape_depth": 16, "compress": 4,
        }
        params.update(dense_motion_params or {})
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **params,
        )
        width = block_expansion * (2**num_down_blocks)
        self.third = SameBlock2d(max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """feature_3d (B,32,16,64,64), keypoints (B,21,3) -> out (B,256,64,64) and the motion."""
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = F.grid_sample(feature_3d, motion["deformation"], align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w)))
        occlusion = motion.get("occlusion_map")
        if occlusion is not None:
            out = out * occlusion
        return {"out": out, "deformation": motion["deformation"], "occlusion_map": occlusion}
