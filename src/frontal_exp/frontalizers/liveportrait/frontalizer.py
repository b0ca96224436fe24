"""LivePortrait frontalizer: re-pose the source face to pitch = yaw = roll = 0 with its own
keypoints, expression, scale and translation, then warp and decode (model=liveportrait)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from frontal_exp.devices import torch_device
from frontal_exp.errors import ConfigError
from frontal_exp.frontalizers.base import CroppingFrontalizer
from frontal_exp.landmarks import FaceLandmarker

from . import checkpoints
from .crop import CROP_SIZE, FaceCrop, blend_mask, crop_face, paste_back
from .keypoints import KeypointInfo, rotation_matrix, transform_keypoints
from .modules import LivePortraitNetworks

log = logging.getLogger(__name__)


@dataclass
class Motion:
    """What one batch was driven with (kept for inspection and tests)."""

    source: KeypointInfo
    x_s: torch.Tensor  # (B, K, 3) source keypoints fed to the warp
    x_d: torch.Tensor  # (B, K, 3) driving keypoints fed to the warp
    driving_pitch: torch.Tensor  # (B,) degrees
    driving_yaw: torch.Tensor
    driving_roll: torch.Tensor
    driving_rotation: torch.Tensor  # (B, 3, 3)


class LivePortraitFrontalizer(CroppingFrontalizer):
    """LivePortrait (KwaiVGI, MIT) with the head pose set to frontal.

    Needs the five official checkpoints under `weights_dir` or `models_dir` (default
    `$FRONTAL_EXP_MODELS` or `~/.frontal_exp/models`), either in the registry layout
    (`liveportrait/base_models/...`) or flat by file name; the constructor checks they exist
    and raises `MissingWeightsError` naming them. Networks load on first use.

    keep_pitch / keep_roll: fraction of the source's pitch / roll kept in the output
    (0 = fully frontal); yaw is always set to 0. eye_retargeting / lip_retargeting: target
    eye-open / lip-open ratio fed to LivePortrait's retargeting MLPs (None = off).
    """

    name = "liveportrait"
    # every other attribute is part of the cache key: the settings, the device type (with
    # fp16, the precision actually used) and the checkpoints in `_paths` by their contents
    runtime_attrs = ("_nets", "_landmarker", "_last_motion")

    def __init__(
        self,
        models_dir: str | None = None,
        weights_dir: str | None = None,
        device: str = "auto",
        fp16: bool = False,
        keep_pitch: float = 0.0,
        keep_roll: float = 0.0,
        stitching: bool = True,
        paste_back: bool = True,
        crop_scale: float = 2.3,
        crop_vx_ratio: float = 0.0,
        crop_vy_ratio: float = -0.125,
        crop_remove_roll: bool = True,
        eye_retargeting: float | None = None,
        lip_retargeting: float | None = None,
        det_size: int = 512,
        det_thresh: float = 0.3,
        batch_size: int = 4,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"liveportrait: batch_size must be >= 1, got {batch_size}")
        # weights_dir (the study's name) points at the LivePortrait files alone; it wins
        # over the project-wide models_dir
        self.models_dir = weights_dir or models_dir
        self.fp16 = fp16
        self.keep_pitch = float(keep_pitch)
        self.keep_roll = float(keep_roll)
        self.stitching = stitching
        self.paste_back = paste_back
        self.crop_scale = float(crop_scale)
        self.crop_vx_ratio = float(crop_vx_ratio)
        self.crop_vy_ratio = float(crop_vy_ratio)
        self.crop_remove_roll = crop_remove_roll
        self.eye_retargeting = eye_retargeting
        self.lip_retargeting = lip_retargeting
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.batch_size = batch_size
        self._device = torch.device(torch_device(device))
        if fp16 and self._device.type != "cuda":
            log.warning("liveportrait: fp16 needs CUDA; running in float32 on %s", self._device)
        # fail before any image is processed when a file is missing
        self._paths = checkpoints.resolve_all(self.models_dir)
        self._nets: LivePortraitNetworks | None = None
        self._landmarker: FaceLandmarker | None = None
        self._mask = blend_mask(CROP_SIZE)
        self._last_motion: Motion | None = None

    # ---- lazy resources -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def networks(self) -> LivePortraitNetworks:
        if self._nets is None:
            self._nets = checkpoints.load_networks(self.models_dir).to(self._device).eval()
        return self._nets

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(self.det_size, self.det_thresh)
        return self._landmarker

    @property
    def last_motion(self) -> Motion | None:
        """Keypoints and rotation of the most recent batch (for inspection)."""
        return self._last_motion

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.fp16 and self._device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # ---- steps ----------------------------------------------------------------------
    def crop(self, image: np.ndarray) -> FaceCrop:
        """Detect the largest face and cut LivePortrait's crop (FrontalizationError if none)."""
        return crop_face(image, self.landmarker(image), self.crop_scale, self.crop_vx_ratio,
                         self.crop_vy_ratio, self.crop_remove_roll)

    def driving_keypoints(self, source: KeypointInfo, x_s: torch.Tensor,
                          eye_open: torch.Tensor | None = None,
                          lip_open: torch.Tensor | None = None) -> Motion:
        """The source's keypoints, expression, scale and translation at frontal rotation."""
        pitch = self.keep_pitch * source.pitch
        yaw = torch.zeros_like(source.yaw)
        roll = self.keep_roll * source.roll
        rot = rotation_matrix(pitch, yaw, roll)
        x_d = transform_keypoints(source, rot)
        sr = self.networks.stitching_retargeting_module
        b = x_s.shape[0]
        if self.eye_retargeting is not None and eye_open is not None:
            target = torch.full((b, 1), float(self.eye_retargeting), device=x_s.device)
            x_d = x_d + sr.eye(torch.cat([x_s.reshape(b, -1), eye_open, target], 1)).view_as(x_d)
        if self.lip_retargeting is not None and lip_open is not None:
            target = torch.full((b, 1), float(self.lip_retargeting), device=x_s.device)
            x_d = x_d + sr.lip(torch.cat([x_s.reshape(b, -1), lip_open, target], 1)).view_as(x_d)
        if self.stitching:
            # the stitching MLP keeps the shoulders/background consistent with the source
            delta = sr.stitching(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], 1))
            n = x_d.shape[1] * 3
            x_d = x_d + delta[:, :n].view_as(x_d)
            x_d = x_d + torch.nn.functional.pad(delta[:, n:n + 2], (0, 1))[:, None, :]
        return Motion(source, x_s, x_d, pitch, yaw, roll, rot)

    @torch.no_grad()
    def frontalize_crops(self, crops: list[FaceCrop]) -> np.ndarray:
        """Run the networks on prepared crops; returns (B, 512, 512, 3) BGR uint8 faces."""
        nets = self.networks
        dev = self._device
        batch = np.stack([c.image for c in crops]).astype(np.float32) / 255.0
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(dev)
        with self._autocast():
            raw = nets.motion_extractor(x)
            feature = nets.appearance_feature_extractor(x).float()
        source = KeypointInfo.from_raw(raw)
        x_s = transform_keypoints(source, source.rotation())
        eye = torch.from_numpy(np.stack([c.eye_open for c in crops])).float().to(dev)
        lip = torch.tensor([[c.lip_open] for c in crops], dtype=torch.float32, device=dev)
        motion = self.driving_keypoints(source, x_s, eye, lip)
        self._last_motion = motion
        with self._autocast():
            warped = nets.warping_module(feature, kp_driving=motion.x_d, kp_source=x_s)
            out = nets.spade_generator(warped["out"]).float()
        rgb = (out.clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
        return np.ascontiguousarray(rgb[..., ::-1])

    def _finish(self, image: np.ndarray, crop: FaceCrop, face: np.ndarray) -> np.ndarray:
        if not self.paste_back:
            return face
        return paste_back(face, crop.image_to_crop, image, self._mask)

    # ---- CroppingFrontalizer API ------------------------------------------------------
    def frontalize_chunk(self, images: list[np.ndarray], crops: list[FaceCrop]) -> list[np.ndarray]:
        faces = self.frontalize_crops(crops)
        return [self._finish(image, crop, face) for image, crop, face in zip(images, crops, faces, strict=True)]
