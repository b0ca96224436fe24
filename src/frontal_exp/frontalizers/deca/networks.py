"""DECA's networks (yfeng95/DECA), written so that `deca_model.tar` loads with strict=True:
the coarse encoder E_flame (ResNet-50 -> 236 FLAME parameters), the detail encoder E_detail
(ResNet-50 -> 128) and the detail decoder D_detail (-> 256x256 UV displacement map)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: E_flame's outputs in order, and their sizes (DECA's param_list; pose = global 3 + jaw 3,
#: cam = scale, tx, ty; light = 9 spherical-harmonics coefficients x RGB)
CODE_SIZES = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
N_CODE = sum(CODE_SIZES.values())
N_DETAIL = 128
#: D_detail's input: detail code, expression and jaw pose
N_DETAIL_COND = N_DETAIL + CODE_SIZES["exp"] + 3
IMAGE_SIZE = 224  # the encoders' input: RGB in [0, 1], no normalisation
UV_SIZE = 256


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 convolution), torchvision's parameter names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Features(nn.Module):
    """ResNet-50 without its classifier: (B, 3, 224, 224) -> (B, 2048) after a 7x7 average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(inplanes, planes, stride if b == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        # a fixed 7x7 window, as in DECA: the input must be 224x224
        self.avgpool = nn.AvgPool2d(7, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class ResnetEncoder(nn.Module):
    """ResNet-50 features -> MLP(2048, 1024, ReLU, out_size)."""

    def __init__(self, out_size: int) -> None:
        super().__init__()
        self.encoder = ResNet50Features()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, out_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))


class DetailGenerator(nn.Module):
    """D_detail: (B, 181) -> (B, 1, 256, 256) displacement along the normal, in FLAME units.

    Linear -> 128x8x8, then five times (bilinear x2, conv3x3, BatchNorm, LeakyReLU 0.2), a
    last conv and tanh scaled by `out_scale`. The BatchNorms after the convolutions have
    eps = 0.8: DECA passes 0.8 as BatchNorm2d's second positional argument, which is eps.
    """

    def __init__(self, latent_dim: int = N_DETAIL_COND, out_scale: float = 0.01) -> None:
        super().__init__()
        self.out_scale = out_scale
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * 8 * 8))
        blocks: list[nn.Module] = [nn.BatchNorm2d(128)]
        channels = [128, 128, 64, 64, 32, 16]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            blocks += [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(c_in, c_out, 3, padding=1),
                       nn.BatchNorm2d(c_out, eps=0.8), nn.LeakyReLU(0.2, inplace=True)]
        blocks += [nn.Conv2d(16, 1, 3, padding=1), nn.Tanh()]
        self.conv_blocks = nn.Sequential(*blocks)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.l1(code).view(code.shape[0], 128, 8, 8)
        return self.conv_blocks(x) * self.out_scale


@dataclass
class DecaNetworks:
    """The three networks stored in `deca_model.tar`, under these names."""

    E_flame: ResnetEncoder  # noqa: N815 - the checkpoint's key
    E_detail: ResnetEncoder  # noqa: N815
    D_detail: DetailGenerator  # noqa: N815

    def modules(self) -> dict[str, nn.Module]:
        return dict(vars(self))

    def to(self, device: torch.device | str) -> DecaNetworks:
        for m in self.modules().values():
            m.to(device)
        return self

    def eval(self) -> DecaNetworks:
        for m in self.modules().values():
            m.eval()
            m.requires_grad_(False)
        return self


def build_networks() -> DecaNetworks:
    """Untrained networks with the official architecture."""
    return DecaNetworks(E_flame=ResnetEncoder(N_CODE), E_detail=ResnetEncoder(N_DETAIL),
                        D_detail=DetailGenerator())


def split_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """E_flame's (B, 236) output -> named parameters; light as (B, 9, 3)."""
    if code.shape[-1] != N_CODE:
        raise ValueError(f"expected {N_CODE} parameters, got {code.shape[-1]}")
    parts = dict(zip(CODE_SIZES, torch.split(code, list(CODE_SIZES.values()), dim=1), strict=True))
    parts["light"] = parts["light"].reshape(code.shape[0], 9, 3)
    return parts
