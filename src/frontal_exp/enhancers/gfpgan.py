"""GFPGAN face restoration (official v1.3 / v1.4 checkpoints), batched, never downloading weights."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from frontal_exp import weights
from frontal_exp.devices import torch_device
from frontal_exp.embedders.align import similarity_transform
from frontal_exp.embedders.base import Detector
from frontal_exp.enhancers.base import Enhancer
from frontal_exp.enhancers.match_crop import (
    FACE_DETECTORS,
    build_detector,
    detect_faces,
    detector_model_file,
)
from frontal_exp.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: GFPGAN's 5-point template for 512x512 faces (FFHQ alignment, as facexlib's face helper)
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
FACE_SIZE = 512
#: ParseNet classes kept in the paste mask: all face parts; not background (0), neck (14),
#: cloth (16), hair (17), hat (18), whose restoration is poor and would smear the seam
_PARSE_NOT_FACE = (0, 14, 16, 17, 18)
CHECKPOINTS = {"1.3": "gfpgan/GFPGANv1.3.pth", "1.4": "gfpgan/GFPGANv1.4.pth"}
DETECTION_WEIGHTS = "facexlib/detection_Resnet50_Final.pth"
PARSING_WEIGHTS = "facexlib/parsing_parsenet.pth"


def build_gfpgan_net(channel_multiplier: int = 2) -> torch.nn.Module:
    """The GFPGANv1Clean network with the hyper-parameters of the official v1.3 / v1.4 files."""
    from frontal_exp.compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean

    return GFPGANv1Clean(
        out_size=FACE_SIZE, num_style_feat=512, channel_multiplier=channel_multiplier,
        decoder_load_path=None, fix_decoder=False, num_mlp=8, input_is_latent=True,
        different_w=True, narrow=1, sft_half=True,
    )


def _load_state(path: Path) -> dict:
    state = weights.load_torch_checkpoint(path)
    # official GFPGAN files hold the EMA weights under params_ema (training ones: params)
    for key in ("params_ema", "params"):
        if key in state:
            return state[key]
    return state


@dataclass
class _Job:
    """One image in a batch: its faces' crops, their alignment matrices, and the results."""

    image: np.ndarray
    matrices: list[np.ndarray] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    restored: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)


class GFPGANEnhancer(Enhancer):
    """GFPGAN restoration of the face(s) in a frontalized image.

    Faces are found by `face_detector` (retinaface: GFPGAN's own RetinaFace-R50 from the
    models dir; scrfd500m: the embedded SCRFD-500M), aligned to the FFHQ 512 template,
    restored in batches of `batch_size`, blended with the aligned input by `weight`
    (1 = fully restored, the official behaviour), and either pasted back into the image
    (`paste_back`, scaled by `upscale`, through a ParseNet face mask so hair, neck and
    background stay the input's) or returned as the aligned 512x512 face.

    Weights are resolved through `frontal_exp.weights` under `models_dir` and never
    downloaded (missing -> MissingWeightsError at construction). The models load once per
    instance, on first use. When no face is found the image is returned unchanged (resized by
    `upscale`); `no_face_count` counts those. `device_used` is the device that runs GFPGAN.
    """

    name = "gfpgan"
    runtime_attrs = ("_net", "_parser", "_detector", "_lock", "_no_face")

    def __init__(
        self,
        version: str = "1.4",
        upscale: float = 1.0,
        weight: float = 1.0,
        paste_back: bool = True,
        face_detector: str = "retinaface",
        det_thresh: float | None = None,
        all_faces: bool = False,
        parse_mask: bool = True,
        batch_size: int = 4,
        device: str = "auto",
        models_dir: str | None = None,
    ) -> None:
        self.version = str(version).lower().removeprefix("v")
        if self.version not in CHECKPOINTS:
            raise ConfigError(f"gfpgan version must be one of {sorted(CHECKPOINTS)}, not {version!r}")
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"gfpgan weight must be in [0, 1], not {weight}")
        if upscale <= 0:
            raise ConfigError(f"gfpgan upscale must be > 0, not {upscale}")
        if face_detector not in FACE_DETECTORS:
            raise ConfigError(f"face_detector must be one of {FACE_DETECTORS}, not {face_detector!r}")
        if batch_size < 1:
            raise ConfigError("gfpgan batch_size must be >= 1")
        self.upscale = float(upscale)
        self.weight = float(weight)
        self.paste_back = paste_back
        self.face_detector = face_detector
        self.det_thresh = det_thresh
        self.all_faces = all_faces
        self.parse_mask = parse_mask
        self.batch_size = batch_size
        self.models_dir = models_dir
        self.device_used = torch_device(device)
        # resolve every file now, so a missing one fails the run before any image is read
        needed = [CHECKPOINTS[self.version]]
        needed += [PARSING_WEIGHTS] if paste_back and parse_mask else []
        needed += [DETECTION_WEIGHTS] if face_detector == "retinaface" else []
        paths = weights.resolve_all(needed, models_dir)
        self._model_path = paths[CHECKPOINTS[self.version]]
        self._parsing_path = paths.get(PARSING_WEIGHTS)
        self._detector_file = detector_model_file(face_detector, models_dir)
        self._net = None
        self._parser = None
        self._detector: Detector | None = None
        self._lock = threading.Lock()
        self._no_face = 0

    @property
    def no_face_count(self) -> int:
        return self._no_face

    # -- model loading (once per instance) ---------------------------------------------------

    def _load(self) -> None:
        """Detector and paste mask net; the GFPGAN net itself loads on the first restoration."""
        with self._lock:
            if self._detector is not None:
                return
            if self._parsing_path is not None:
                from facexlib.parsing.parsenet import ParseNet

                parser = ParseNet(in_size=FACE_SIZE, out_size=FACE_SIZE, parsing_ch=19)
                weights.load_strict(parser, _load_state(self._parsing_path), self._parsing_path,
                                    "facexlib's ParseNet")
                self._parser = parser.eval().to(self.device_used)
            self._detector = build_detector(self.face_detector, self.models_dir,
                                            self.det_thresh, self.device_used)

    def _load_net(self) -> torch.nn.Module:
        with self._lock:
            if self._net is None:
                net = build_gfpgan_net()
                weights.load_strict(net, _load_state(self._model_path), self._model_path,
                                    f"a GFPGAN v{self.version} checkpoint")
                self._net = net.eval().to(self.device_used)
            return self._net

    # -- steps -------------------------------------------------------------------------------

    def _align(self, job: _Job) -> None:
        faces = detect_faces(self._detector, job.image)
        # side or tiny faces (eye distance under 5 px) are detector noise for a restorer
        faces = [f for f in faces if np.linalg.norm(f.kps[0] - f.kps[1]) >= 5.0]
        if not self.all_faces or not self.paste_back:
            faces = sorted(faces, key=lambda f: -f.area)[:1]
        for face in faces:
            matrix = similarity_transform(face.kps, FFHQ_TEMPLATE_512)
            crop = cv2.warpAffine(job.image, matrix, (FACE_SIZE, FACE_SIZE),
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))
            job.matrices.append(matrix)
            job.crops.append(crop)

    def _to_tensor(self, crops: list[np.ndarray]) -> torch.Tensor:
        import torch

        rgb = np.stack([c[:, :, ::-1] for c in crops]).astype(np.float32) / 127.5 - 1.0
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous().to(self.device_used)

    def restore(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Restore aligned 512x512 BGR faces, `batch_size` at a time; blended by `weight`."""
        import torch

        if self.weight == 0.0:
            # the blend would discard the network's output: skip the slow step entirely
            return [c.copy() for c in crops]
        net = self._load_net()
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size]
            with torch.inference_mode():
                # stored noise, not fresh noise: the same input must give the same output
                pred = net(self._to_tensor(chunk), return_rgb=False, randomize_noise=False)[0]
                rgb = ((pred.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).float().cpu().numpy()
            for crop, face in zip(chunk, rgb[..., ::-1], strict=True):
                blended = self.weight * face + (1.0 - self.weight) * crop.astype(np.float32)
                out.append(np.clip(blended, 0, 255).round().astype(np.uint8))
        return out

    def face_masks(self, faces: list[np.ndarray]) -> list[np.ndarray]:
        """Soft paste masks (512x512 float32 in [0, 1]) for restored aligned faces."""
        if self._parser is None:
            mask = np.zeros((FACE_SIZE, FACE_SIZE), np.float32)
            mask[24:-24, 24:-24] = 1.0
            return [cv2.GaussianBlur(mask, (0, 0), 8)] * len(faces)
        import torch

        masks = []
        for start in range(0, len(faces), self.batch_size):
            with torch.inference_mode():
                logits = self._parser(self._to_tensor(faces[start : start + self.batch_size]))[0]
                labels = logits.argmax(dim=1).cpu().numpy()
            for lab in labels:
                mask = (~np.isin(lab, _PARSE_NOT_FACE)).astype(np.float32)
                # a clear zero rim first, so the blurred mask fades out inside the crop
                mask[:10], mask[-10:], mask[:, :10], mask[:, -10:] = 0, 0, 0, 0
                masks.append(cv2.GaussianBlur(mask, (0, 0), 15))
        return masks

    def _background(self, image: np.ndarray) -> np.ndarray:
        if self.upscale == 1.0:
            return image.copy()
        h, w = image.shape[:2]
        size = (round(w * self.upscale), round(h * self.upscale))
        return cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4)

    def _paste(self, job: _Job) -> np.ndarray:
        canvas = self._background(job.image)
        h, w = canvas.shape[:2]
        s = self.upscale
        for face, mask, matrix in zip(job.restored, job.masks, job.matrices, strict=True):
            inverse = cv2.invertAffineTransform(matrix) * s
            # pixel centres: x_up = s * x + (s - 1) / 2 (cv2.resize's convention)
            inverse[:, 2] += (s - 1.0) / 2.0
            warped = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
            alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR)
            inside = alpha > 1e-3
            a = alpha[inside][:, None]
            # only pixels under the mask change: the rest stays bit-identical to the input
            canvas[inside] = np.clip(a * warped[inside] + (1 - a) * canvas[inside], 0, 255).round()
        return canvas

    # -- the Enhancer interface ----------------------------------------------------------------

    def enhance_batch(
        self, images: list[np.ndarray], references: list[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        self._load()
        jobs = [_Job(image=img) for img in images]
        for job in jobs:
            self._align(job)
        restored = iter(self.restore([c for job in jobs for c in job.crops]))
        for job in jobs:
            job.restored = [next(restored) for _ in job.crops]
        if self.paste_back:
            masks = iter(self.face_masks([f for job in jobs for f in job.restored]))
            for job in jobs:
                job.masks = [next(masks) for _ in job.restored]
        out = []
        for job in jobs:
            if not job.crops:
                self._no_face += 1
                out.append(self._background(job.image))
            elif self.paste_back:
                out.append(self._paste(job))
            else:
                out.append(job.restored[0])
        return out

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        return self.enhance_batch([image])[0]
