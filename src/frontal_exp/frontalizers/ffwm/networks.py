"""FFWM's two test-time networks (csyxwei/FFWM, MIT) re-written so the official checkpoints
load with strict=True: the flow network `flowNetF` and the generator `netG`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: FlowNet width of the official flowNetF (FlowNet(64) in the reference)
FLOW_WIDTH = 64
#: encoder / decoder widths of the official netG (FFWM(num_layers=3, isflip=True, sn=True))
ENCODER_CHANNELS = (64, 64, 128, 256)
DECODER_CHANNELS = (256, 128, 64, 64)


# ---- spectral norm as saved by torch.nn.utils.spectral_norm (torch <= 1.x) ---------------


class SNConv2d(nn.Module):
    """A Conv2d under the old-style spectral norm, evaluated as the official files were
    trained to be used: W = weight_orig / sigma with sigma = u . (W_mat v) from the STORED
    vectors u and v (no power iteration at test time; the exact largest singular value
    differs from that sigma, by up to ~1% on unconverged vectors).

    Keys: bias, weight_orig, weight_u, weight_v (no `weight`), as in the official files.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        self.stride, self.padding, self.eps = stride, padding, eps
        # parameter order of the old hook: bias stays, weight is re-registered as weight_orig
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight_orig, a=5 ** 0.5)
        bound = 1 / (in_channels * kernel_size * kernel_size) ** 0.5
        nn.init.uniform_(self.bias, -bound, bound)
        n = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0, eps=eps))
        self.register_buffer("weight_v", F.normalize(torch.randn(n), dim=0, eps=eps))

    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        return F.conv2d(x, w.to(x.dtype), self.bias.to(x.dtype), self.stride, self.padding)


def settle_spectral_norm_(module: nn.Module, iterations: int = 30) -> nn.Module:
    """Power iterations on every stored (u, v) pair of `module`, as training leaves them:
    random-init files (tests, benchmark) then behave like trained ones."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, SNConv2d):
                mat = sub.weight_orig.reshape(sub.weight_orig.shape[0], -1)
                for _ in range(iterations):
                    sub.weight_v.copy_(F.normalize(mat.t() @ sub.weight_u, dim=0, eps=sub.eps))
                    sub.weight_u.copy_(F.normalize(mat @ sub.weight_v, dim=0, eps=sub.eps))
    return module


# ---- flowNetF -------------------------------------------------------------------------


def _conv_bn_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _deconv_bn_lrelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _flow_head(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 2, 3, 1, 1), nn.Tanh())


def occlusion_blocks(ngf: int = FLOW_WIDTH) -> nn.ModuleDict:
    """The six `inter_conv_occ{0..5}` blocks of the reference FlowNet. They are in the
    official flowNetF file but no forward pass calls them; the loader accepts their keys
    by name and drops them, and official-format test files are written with them."""
    ins = {5: ngf * 16, 4: ngf * 8 + ngf * 4, 3: ngf * 4 + ngf * 2, 2: ngf, 1: ngf // 2, 0: ngf // 4}
    outs = {5: ngf * 8, 4: ngf * 4, 3: ngf * 2, 2: ngf, 1: ngf // 2, 0: ngf // 4}
    return nn.ModuleDict({f"inter_conv_occ{k}": _conv_bn_lrelu(ins[k] + 1, outs[k]) for k in range(5, -1, -1)})


class FlowNet(nn.Module):
    """FlowNet-style encoder/decoder predicting, from the profile face alone, where each
    output pixel samples the input: tanh grids in [-1, 1] (x, y) at 128, 64 and 32 pixels."""

    def __init__(self, ngf: int = FLOW_WIDTH, in_channels: int = 3) -> None:
        super().__init__()
        c = _conv_bn_lrelu
        self.conv0 = c(in_channels, ngf)
        self.conv1, self.conv1_1 = c(ngf, ngf, 2), c(ngf, ngf * 2)
        self.conv2, self.conv2_1 = c(ngf * 2, ngf * 2, 2), c(ngf * 2, ngf * 2)
        self.conv3, self.conv3_1 = c(ngf * 2, ngf * 4, 2), c(ngf * 4, ngf * 4)
        self.conv4, self.conv4_1 = c(ngf * 4, ngf * 8, 2), c(ngf * 8, ngf * 8)
        self.conv5, self.conv5_1 = c(ngf * 8, ngf * 8, 2), c(ngf * 8, ngf * 8)
        self.conv6, self.conv6_1 = c(ngf * 8, ngf * 16, 2), c(ngf * 16, ngf * 16)

        d = _deconv_bn_lrelu
        self.deconv5 = d(ngf * 16, ngf * 8)
        self.deconv4 = d(ngf * 16 + 2, ngf * 4)
        self.deconv3 = d(ngf * 8 + ngf * 4 + 2, ngf * 2)
        self.deconv2 = d(ngf * 4 + ngf * 2 + 2, ngf)
        self.deconv1 = d(ngf + 2, ngf // 2)
        self.deconv0 = d(ngf // 2 + 2, ngf // 4)

        self.inter_conv5 = c(ngf * 16 + 2, ngf * 8)
        self.inter_conv4 = c(ngf * 8 + ngf * 4 + 2, ngf * 4)
        self.inter_conv3 = c(ngf * 4 + ngf * 2 + 2, ngf * 2)
        self.inter_conv2 = c(ngf + 2, ngf)
        self.inter_conv1 = c(ngf // 2 + 2, ngf // 2)
        self.inter_conv0 = c(ngf // 4 + 2, ngf // 4)

        # registration order = the official files' key order
        for k, cin in reversed(list(enumerate((ngf // 4, ngf // 2, ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 16)))):
            self.add_module(f"predict_flow{k}", _flow_head(cin))
        for k in range(6, 0, -1):
            self.add_module(f"upsampled_flow{k}_to_{k - 1}", nn.ConvTranspose2d(2, 2, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> flows at H, H/2 and H/4 (H a multiple of 64)."""
        e0 = self.conv0(x)
        e1 = self.conv1_1(self.conv1(e0))
        e2 = self.conv2_1(self.conv2(e1))
        e3 = self.conv3_1(self.conv3(e2))
        e4 = self.conv4_1(self.conv4(e3))
        e5 = self.conv5_1(self.conv5(e4))
        e6 = self.conv6_1(self.conv6(e5))

        flow6 = self.predict_flow6(e6)
        cat5 = torch.cat((e5, self.deconv5(e6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(self.inter_conv5(cat5))
        cat4 = torch.cat((e4, self.deconv4(cat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(self.inter_conv4(cat4))
        cat3 = torch.cat((e3, self.deconv3(cat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(self.inter_conv3(cat3))
        # from here on the decoder has no encoder skip (as in the reference)
        cat2 = torch.cat((self.deconv2(cat3), self.upsampled_flow3_to_2(flow3)), 1)
        flow2 = self.predict_flow2(self.inter_conv2(cat2))
        cat1 = torch.cat((self.deconv1(cat2), self.upsampled_flow2_to_1(flow2)), 1)
        flow1 = self.predict_flow1(self.inter_conv1(cat1))
        cat0 = torch.cat((self.deconv0(cat1), self.upsampled_flow1_to_0(flow1)), 1)
        flow0 = self.predict_flow0(self.inter_conv0(cat0))
        return flow0, flow1, flow2


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at the absolute [-1, 1] grid `flow` (B, 2, H, W; channel 0 = x):
    bilinear, zero padding, align_corners=False, as the reference's WarpNet."""
    grid = flow.permute(0, 2, 3, 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---- netG ------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module:
    return {"lrelu": nn.LeakyReLU(0.2), "sigmoid": nn.Sigmoid()}[name]


class ResidualBlock(nn.Module):
    """act(BN(conv3(LReLU(BN(conv3(x))))) + conv1(x)), every conv spectral-normed."""

    def __init__(self, cin: int, cout: int | None = None, activation: str = "lrelu") -> None:
        super().__init__()
        cout = cout or cin
        self.input = SNConv2d(cin, cout, 1)
        self.blocks = nn.Sequential(
            SNConv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2),
            SNConv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout),
        )
        self.activ = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activ(self.blocks(x) + self.input(x))


def conv_block(cin: int, cout: int, kernel: int, stride: int, padding: int, *, norm: bool = True,
               activation: str = "lrelu", residual: int = 0) -> nn.Sequential:
    """SN conv, [BN], activation, then `residual` residual blocks (the reference's ConvBlock)."""
    layers: list[nn.Module] = [SNConv2d(cin, cout, kernel, stride, padding)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(_activation(activation))
    layers += [ResidualBlock(cout, activation=activation) for _ in range(residual)]
    return nn.Sequential(*layers)


def pixel_shuffle_block(cin: int, cout: int) -> nn.Sequential:
    """SN conv to 4*cout, PixelShuffle(2), BN, LReLU: the decoder's 2x upsampling."""
    return nn.Sequential(SNConv2d(cin, cout * 4, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2))


@dataclass
class GeneratorOutput:
    """Reconstructions at the three scales (sigmoid RGB in [0, 1]) and the last attention."""

    rec32: torch.Tensor
    rec64: torch.Tensor
    rec128: torch.Tensor
    attention: torch.Tensor


class FFWMGenerator(nn.Module):
    """netG: a U-Net whose skips are warped to frontal by the flows, mirrored, gated by an
    attention branch, and fed with the previous scale's reconstruction (coarse to fine)."""

    layers = 3

    def __init__(self) -> None:
        super().__init__()
        enc, dec = ENCODER_CHANNELS, DECODER_CHANNELS
        self.e0 = conv_block(3, enc[0], 7, 1, 3, norm=False, residual=1)
        self.e1 = conv_block(enc[0], enc[1], 4, 2, 1, residual=1)
        self.e2 = conv_block(enc[1], enc[2], 4, 2, 1, residual=1)
        self.e3 = conv_block(enc[2], enc[3], 4, 2, 1, residual=1)
        # the skip and its mirror image: 2x channels; plus the decoder feature: 3x
        self.d0 = pixel_shuffle_block(dec[0], dec[1])
        self.d1 = pixel_shuffle_block(dec[1] * 3, dec[2])
        self.d2 = pixel_shuffle_block(dec[2] * 3 + 3, dec[3])
        self.dres0 = nn.Sequential(*(ResidualBlock(dec[1] * 3) for _ in range(2)))
        self.dres1 = nn.Sequential(*(ResidualBlock(dec[2] * 3 + 3) for _ in range(2)))
        self.dres2 = nn.Sequential(*(ResidualBlock(dec[3] * 3 + 3) for _ in range(2)))
        self.rec0 = conv_block(dec[1] * 3, 3, 3, 1, 1, norm=False, activation="sigmoid")
        self.rec1 = conv_block(dec[2] * 3 + 3, 3, 3, 1, 1, norm=False, activation="sigmoid")
        self.rec2 = conv_block(dec[3] * 3 + 3, 3, 3, 1, 1, norm=False, activation="sigmoid")
        for k, ch in enumerate((enc[2] * 2, enc[1] * 2, enc[0] * 2)):
            self.add_module(f"att{k}", nn.Sequential(conv_block(ch, ch, 3, 1, 1),
                                                     ResidualBlock(ch, ch, activation="sigmoid")))

    def forward(self, x: torch.Tensor, flows: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                ) -> GeneratorOutput:
        """x: (B, 3, H, W) in [0, 1]; flows: (flow at H/4, H/2, H), coarse to fine."""
        skips = [self.e0(x)]
        for k in range(1, self.layers + 1):
            skips.append(getattr(self, f"e{k}")(skips[-1]))
        feature = skips[-1]
        skips = skips[::-1]
        recons: list[torch.Tensor] = []
        attention = x
        for k in range(self.layers):
            dec = getattr(self, f"d{k}")(feature)
            warped = warp(skips[k + 1], flows[k])
            skip = torch.cat((warped, torch.flip(warped, (3,))), 1)
            attention = getattr(self, f"att{k}")(skip)
            parts = [skip * attention, dec]
            if recons:
                parts.append(F.interpolate(recons[-1], scale_factor=2, mode="bilinear", align_corners=False))
            feature = getattr(self, f"dres{k}")(torch.cat(parts, 1))
            recons.append(getattr(self, f"rec{k}")(feature))
        return GeneratorOutput(recons[0], recons[1], recons[2], attention)


@dataclass
class FFWMNetworks:
    """The two networks FFWM runs at test time."""

    flow_net: FlowNet  # flowNetF
    generator: FFWMGenerator  # netG

    def modules(self) -> dict[str, nn.Module]:
        return dict(vars(self))

    def to(self, device: torch.device | str) -> FFWMNetworks:
        for m in self.modules().values():
            m.to(device)
        return self

    def eval(self) -> FFWMNetworks:
        for m in self.modules().values():
            m.eval()
            m.requires_grad_(False)
        return self


def build_networks() -> FFWMNetworks:
    """Untrained networks with the official architecture."""
    return FFWMNetworks(flow_net=FlowNet(), generator=FFWMGenerator())
