"""FFWM frontalizer: flowNetF predicts where each frontal pixel lies in the profile crop,
netG warps its features there and decodes a 128x128 frontal face (model=ffwm)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from frontal_exp.devices import torch_device
from frontal_exp.errors import ConfigError, FrontalizationError
from frontal_exp.frontalizers.base import CroppingFrontalizer
from frontal_exp.frontalizers.liveportrait.crop import blend_mask, paste_back
from frontal_exp.landmarks import FaceLandmarker

from . import checkpoints
from .crop import CROP_SIZE, FaceCrop, crop_face
from .networks import FFWMNetworks, GeneratorOutput

log = logging.getLogger(__name__)


@dataclass
class FFWMOutput:
    """One batch through both networks (kept for inspection and tests)."""

    flows: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (B, 2, n, n) at n = 128, 64, 32
    generated: GeneratorOutput  # rec128 is the frontal face, RGB in [0, 1]


class FFWMFrontalizer(CroppingFrontalizer):
    """FFWM (Wei et al., ECCV 2020; csyxwei/FFWM, MIT code) with its official checkpoints.

    Needs `ffwm/latest_net_flowNetF.pth` and `ffwm/latest_net_netG.pth` under `weights_dir`
    (a folder holding them) or `models_dir` (default `$FRONTAL_EXP_MODELS` or
    `~/.frontal_exp/models`); the constructor checks they exist and raises
    `MissingWeightsError` naming them. Networks load on first use.

    The face is cropped by the reference's rule on the project's 106 landmarks (see
    `ffwm.crop`; `forehead_ratio` sets the estimated hairline), frontalized at 128x128 and,
    with `paste_back`, blended back into the photo; otherwise the 128x128 crop is returned.
    """

    name = "ffwm"
    # every other attribute is part of the cache key: the settings, the device type (with
    # fp16, the precision actually used) and the checkpoints in `_paths` by their contents
    runtime_attrs = ("_nets", "_landmarker", "_last_output")

    def __init__(
        self,
        models_dir: str | None = None,
        weights_dir: str | None = None,
        device: str = "auto",
        fp16: bool = False,
        paste_back: bool = True,
        forehead_ratio: float = 1.0,
        det_size: int = 512,
        det_thresh: float = 0.3,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"ffwm: batch_size must be >= 1, got {batch_size}")
        if forehead_ratio < 0:
            raise ConfigError(f"ffwm: forehead_ratio must be >= 0, got {forehead_ratio}")
        # weights_dir (the study's name) points at the FFWM files alone; it wins over models_dir
        self.models_dir = weights_dir or models_dir
        self.paste_back = paste_back
        self.forehead_ratio = float(forehead_ratio)
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.batch_size = batch_size
        self._device = torch.device(torch_device(device))
        self.fp16 = bool(fp16 and self._device.type == "cuda")
        if fp16 and not self.fp16:
            log.warning("ffwm: fp16 needs CUDA; running in float32 on %s", self._device)
        # fail before any image is processed when a file is missing
        self._paths = checkpoints.resolve_all(self.models_dir)
        self._nets: FFWMNetworks | None = None
        self._landmarker: FaceLandmarker | None = None
        self._mask = blend_mask(CROP_SIZE, margin=0.03, blur=0.03)
        self._last_output: FFWMOutput | None = None

    # ---- lazy resources -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def networks(self) -> FFWMNetworks:
        if self._nets is None:
            self._nets = checkpoints.load_networks(paths=self._paths).to(self._device).eval()
        return self._nets

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(self.det_size, self.det_thresh)
        return self._landmarker

    @property
    def last_output(self) -> FFWMOutput | None:
        """Flows and reconstructions of the most recent batch (for inspection)."""
        return self._last_output

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # ---- steps ----------------------------------------------------------------------
    def crop(self, image: np.ndarray) -> FaceCrop:
        """Detect the largest face and cut FFWM's crop (FrontalizationError if none)."""
        try:
            landmarks = self.landmarker(image)
        except FrontalizationError as exc:
            h, w = image.shape[:2]
            raise FrontalizationError(f"ffwm: no face detected in the {w}x{h} image") from exc
        return crop_face(image, landmarks, self.forehead_ratio)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> FFWMOutput:
        """The reference's test_forward: (B, 3, 128, 128) RGB in [0, 1] -> flows and faces."""
        nets = self.networks
        x = x.to(self._device)
        with self._autocast():
            flows = nets.flow_net(x)
            # netG takes the flows coarse to fine
            generated = nets.generator(x, (flows[2], flows[1], flows[0]))
        out = FFWMOutput(tuple(f.float() for f in flows), GeneratorOutput(
            *(t.float() for t in (generated.rec32, generated.rec64, generated.rec128, generated.attention))))
        self._last_output = out
        return out

    def frontalize_crops(self, crops: list[FaceCrop]) -> np.ndarray:
        """Run the networks on prepared crops; returns (B, 128, 128, 3) BGR uint8 faces."""
        batch = np.stack([c.image for c in crops]).astype(np.float32) / 255.0
        out = self.run(torch.from_numpy(batch).permute(0, 3, 1, 2))
        rgb = (out.generated.rec128.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).cpu().numpy()
        return np.ascontiguousarray(rgb.astype(np.uint8)[..., ::-1])

    def _finish(self, image: np.ndarray, crop: FaceCrop, face: np.ndarray) -> np.ndarray:
        if not self.paste_back:
            return face
        return paste_back(face, crop.image_to_crop, image, self._mask)

    # ---- CroppingFrontalizer API ------------------------------------------------------
    def frontalize_chunk(self, images: list[np.ndarray], crops: list[FaceCrop]) -> list[np.ndarray]:
        faces = self.frontalize_crops(crops)
        return [self._finish(image, crop, face) for image, crop, face in zip(images, crops, faces, strict=True)]
