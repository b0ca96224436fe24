"""Stitching module S and the eye / lip retargeting modules: small MLPs on keypoints."""

from __future__ import annotations

import torch
from torch import nn


class KeypointMLP(nn.Module):
    """Linear/ReLU stack; the official key names are mlp.0, mlp.2, ..."""

    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip([input_size, *hidden_sizes[:-1]], hidden_sizes, strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(hidden_sizes[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class StitchingRetargeting(nn.Module):
    """The three MLPs held by `stitching_retargeting_module.pth`.

    stitching: [x_s, x_d] (126) -> keypoint delta (63) + (tx, ty) (2)
    lip: [x_s, lip ratios (source, target)] (65) -> keypoint delta (63)
    eye: [x_s, eye ratios (left, right, target)] (66) -> keypoint delta (63)
    """

    def __init__(self, num_kp: int = 21) -> None:
        super().__init__()
        n = 3 * num_kp
        self.stitching = KeypointMLP(2 * n, [128, 128, 64], n + 2)
        self.lip = KeypointMLP(n + 2, [128, 128, 64], n)
        self.eye = KeypointMLP(n + 3, [256, 256, 128, 128, 64], n)
