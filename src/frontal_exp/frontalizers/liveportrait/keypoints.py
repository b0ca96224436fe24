"""LivePortrait's implicit-keypoint math: pose bins to degrees, Euler angles to a rotation,
and x = scale * (x_c @ R + exp) + t."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: the pose heads predict 66 bins of 3 degrees; the expectation is centred at 97.5 deg
NUM_POSE_BINS = 66
BIN_DEGREES = 3.0
BIN_OFFSET_DEGREES = 97.5


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) pose logits -> (B,) angle in degrees (expectation over the bins)."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * idx).sum(dim=1) * BIN_DEGREES - BIN_OFFSET_DEGREES


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in degrees, each (B,) -> (B, 3, 3) matrix R to right-multiply row keypoints.

    R = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T, so `kp @ R` rotates the keypoints; all zero gives
    the identity (a frontal head).
    """
    x, y, z = (torch.as_tensor(a).reshape(-1) * (math.pi / 180) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    rx = mat(one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos())
    ry = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rz = mat(z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one)
    return (rz @ ry @ rx).transpose(1, 2)


@dataclass
class KeypointInfo:
    """The motion extractor's output for a batch, in usable units."""

    kp: torch.Tensor  # (B, K, 3) canonical keypoints x_c
    exp: torch.Tensor  # (B, K, 3) expression deltas
    scale: torch.Tensor  # (B, 1)
    t: torch.Tensor  # (B, 3); only tx, ty are applied
    pitch: torch.Tensor  # (B,) degrees
    yaw: torch.Tensor  # (B,) degrees
    roll: torch.Tensor  # (B,) degrees

    @classmethod
    def from_raw(cls, raw: dict[str, torch.Tensor]) -> KeypointInfo:
        b = raw["kp"].shape[0]
        return cls(
            kp=raw["kp"].float().reshape(b, -1, 3),
            exp=raw["exp"].float().reshape(b, -1, 3),
            scale=raw["scale"].float(),
            t=raw["t"].float(),
            pitch=bins_to_degrees(raw["pitch"].float()),
            yaw=bins_to_degrees(raw["yaw"].float()),
            roll=bins_to_degrees(raw["roll"].float()),
        )

    def rotation(self) -> torch.Tensor:
        return rotation_matrix(self.pitch, self.yaw, self.roll)


def transform_keypoints(info: KeypointInfo, rotation: torch.Tensor) -> torch.Tensor:
    """x = scale * (x_c @ R + exp) + (tx, ty, 0): the posed keypoints, (B, K, 3).

    tz is dropped, as in the reference, so x_s and x_d live at the same depth.
    """
    x = info.scale[:, :, None] * (info.kp @ rotation + info.exp)
    shift = F.pad(info.t[:, :2], (0, 1))
    return x + shift[:, None, :]
