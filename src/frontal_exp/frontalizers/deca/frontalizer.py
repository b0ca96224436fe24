"""DECA frontalization: fit FLAME to the face, take its texture from the photo, render the
head at pose zero on the CPU and composite the face back into the photo."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from frontal_exp.devices import torch_device
from frontal_exp.errors import ConfigError, FrontalizationError, ModelFileError
from frontal_exp.face3d.render import ndc_to_pixels, rasterize_zbuffer, uv_to_pixels
from frontal_exp.frontalizers.base import CroppingFrontalizer
from frontal_exp.landmarks import FaceLandmarker

from . import checkpoints
from .blend import poisson_blend
from .detail import detail_gain
from .flame import project_orthographic
from .networks import IMAGE_SIZE, split_code
from .texture import UVLayout, extract_texture, fill_hidden, uv_layout, vertex_normals

log = logging.getLogger(__name__)

#: DECA's crop: the landmark box's mean side times 1.1, then times `crop_scale`
BOX_FACTOR = 1.1
#: the composited region reaches this fraction of the face's height above the brows
FOREHEAD = 0.25
BLENDS = ("seamless", "alpha")


@dataclass
class DecaCrop:
    """One face cut for the encoder, and the way back to the photo."""

    image: np.ndarray  # IMAGE_SIZE x IMAGE_SIZE x 3 RGB uint8
    image_to_crop: np.ndarray  # 3x3 similarity
    landmarks: np.ndarray  # detector landmarks in the photo


def crop_matrix(landmarks: np.ndarray, crop_scale: float = 1.25, size: int = IMAGE_SIZE) -> np.ndarray:
    """DECA's similarity (datasets.TestData): a square of side int(1.1 * mean box side *
    crop_scale) centred on the landmark box, onto [0, size - 1]."""
    pts = np.asarray(landmarks, np.float64)
    (left, top), (right, bottom) = pts.min(0), pts.max(0)
    side = int(((right - left) + (bottom - top)) / 2 * BOX_FACTOR * crop_scale)
    if side < 2:
        raise FrontalizationError("deca: the face is too small to crop")
    k = (size - 1) / side
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return np.array([[k, 0, -k * (cx - side / 2)], [0, k, -k * (cy - side / 2)], [0, 0, 1]])


class DecaFrontalizer(CroppingFrontalizer):
    """DECA (yfeng95/DECA; non-commercial research licence) with the head pose set to zero.

    Needs deca_model.tar, generic_model.pkl (FLAME 2020), landmark_embedding.npy and
    head_template.obj in `weights_dir` (flat, DECA's data/ layout) or under
    `models_dir/deca/`; a missing file raises `MissingWeightsError` naming its source.

    keep_jaw: keep the fitted jaw opening (else closed). paste_back: composite into the
    photo (same size); else the 224x224 aligned crop. uv_size: texture resolution.
    detail: apply DECA's detail branch (E_detail, D_detail) to the photo's texture as a
    shading ratio (see detail.py); needs uv_face_eye_mask.png and fixed_displacement_256.npy.
    blend: "seamless" (Poisson, then the soft mask) or "alpha" (the soft mask only); a
    face region touching the image border falls back to alpha (counted in
    `blend_fallbacks`). The crop's box comes from the project's 106-point landmarks (DECA
    uses FAN's 68).
    """

    name = "deca"
    runtime_attrs = ("_model", "_landmarker", "_layout", "_detail_maps", "blend_fallbacks")

    def __init__(
        self,
        models_dir: str | None = None,
        weights_dir: str | None = None,
        device: str = "auto",
        keep_jaw: bool = True,
        paste_back: bool = True,
        detail: bool = False,
        blend: str = "seamless",
        crop_scale: float = 1.25,
        uv_size: int = 256,
        mask_blur: float = 0.04,
        det_size: int = 512,
        det_thresh: float = 0.3,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"deca: batch_size must be >= 1, got {batch_size}")
        if uv_size < 16:
            raise ConfigError(f"deca: uv_size must be >= 16, got {uv_size}")
        if blend not in BLENDS:
            raise ConfigError(f"deca: blend must be one of {BLENDS}, got {blend!r}")
        self.models_dir = weights_dir or models_dir
        self.keep_jaw = keep_jaw
        self.paste_back = paste_back
        self.detail = bool(detail)
        self.blend = blend
        self.crop_scale = float(crop_scale)
        self.uv_size = int(uv_size)
        self.mask_blur = float(mask_blur)
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.batch_size = batch_size
        self._device = torch.device(torch_device(device))
        self._paths = checkpoints.resolve_all(self.models_dir, detail=self.detail)
        self._model: checkpoints.DecaModel | None = None
        self._detail_maps: checkpoints.DetailMaps | None = None
        #: composites that fell back from seamless to alpha (region at the image border)
        self.blend_fallbacks = 0
        self._landmarker: FaceLandmarker | None = None
        self._layout: UVLayout | None = None

    # ---- lazy resources -------------------------------------------------------------
    @property
    def model(self) -> checkpoints.DecaModel:
        if self._model is None:
            model = checkpoints.load_model(self.models_dir, detail=self.detail)
            model.networks.E_flame.to(self._device)
            if self.detail:
                model.networks.E_detail.to(self._device)
                model.networks.D_detail.to(self._device)
            model.flame.to(self._device)
            self._model = model
        return self._model

    @property
    def layout(self) -> UVLayout:
        if self._layout is None:
            m = self.model
            self._layout = uv_layout(m.template.vt, m.template.ft, m.flame.faces.cpu().numpy(),
                                     m.flame.v_template.cpu().numpy(), self.uv_size)
        return self._layout

    @property
    def detail_maps(self) -> checkpoints.DetailMaps:
        if self._detail_maps is None:
            self._detail_maps = checkpoints.load_detail_maps(self.models_dir, self.uv_size)
        return self._detail_maps

    @property
    def landmarker(self) -> FaceLandmarker:
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(self.det_size, self.det_thresh)
        return self._landmarker

    # ---- steps ----------------------------------------------------------------------
    def crop(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> DecaCrop:
        landmarks = self.landmarker(image) if landmarks is None else np.asarray(landmarks, np.float32)
        m = crop_matrix(landmarks, self.crop_scale)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        face = cv2.warpAffine(rgb, m[:2], (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return DecaCrop(face, m, landmarks)

    @torch.no_grad()
    def encode(self, crops: list[DecaCrop]) -> dict[str, torch.Tensor]:
        """E_flame on a batch of crops -> DECA's named codes (on CPU); with `detail`, also
        E_detail's code and D_detail's (B, 1, 256, 256) displacement."""
        nets = self.model.networks
        x = torch.from_numpy(np.stack([c.image for c in crops]).astype(np.float32) / 255.0)
        x = x.permute(0, 3, 1, 2).to(self._device)
        code = split_code(nets.E_flame(x).float().cpu())
        if self.detail:
            code["detail"] = nets.E_detail(x).float().cpu()
            cond = torch.cat([code["pose"][:, 3:], code["exp"], code["detail"]], 1)
            code["displacement"] = nets.D_detail(cond.to(self._device)).float().cpu()
        return code

    @torch.no_grad()
    def detail_gain(self, code: dict[str, torch.Tensor], i: int) -> np.ndarray:
        """(U, U, 3) BGR factor that puts item `i`'s predicted detail on its photo texture:
        DECA's detail normals of the fitted (posed) mesh, shaded with its fitted light."""
        m = self.model
        dev = m.flame.v_template.device
        verts, _, _ = m.flame(code["shape"][i:i + 1].to(dev), code["exp"][i:i + 1].to(dev),
                              code["pose"][i:i + 1].to(dev))
        verts = verts[0].cpu().double().numpy()
        normals = vertex_normals(verts, self.layout.faces)
        displacement = code["displacement"][i, 0].double().numpy()
        if displacement.shape[0] != self.uv_size:
            displacement = cv2.resize(displacement, (self.uv_size, self.uv_size), interpolation=cv2.INTER_LINEAR)
        maps = self.detail_maps
        gain = detail_gain(self.layout.draw(verts), self.layout.draw(normals), displacement,
                           maps.fixed_displacement, maps.mask, code["light"][i].double().numpy())
        return gain[..., ::-1]  # DECA's light is RGB, the texture BGR

    @torch.no_grad()
    def screen_mesh(self, code: dict[str, torch.Tensor], i: int, pose: torch.Tensor,
                    to_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V, 3) and 68 landmarks (68, 2) of item `i` at `pose`, in the pixels of
        the frame `to_out` maps the 224 crop to; depth in the same pixel scale."""
        flame = self.model.flame
        dev = flame.v_template.device
        verts, lmk2d, _ = flame(code["shape"][i:i + 1].to(dev), code["exp"][i:i + 1].to(dev), pose.to(dev))
        cam = code["cam"][i:i + 1].to(dev)
        proj = project_orthographic(torch.cat([verts, lmk2d], 1), cam)[0].cpu().double().numpy()
        xy = ndc_to_pixels(proj, IMAGE_SIZE)
        xy = xy @ to_out[:2, :2].T + to_out[:2, 2]
        scale = float(np.sqrt(abs(np.linalg.det(to_out[:2, :2]))))
        depth = proj[:, 2] * IMAGE_SIZE / 2 * scale
        n = verts.shape[1]
        return np.concatenate([xy[:n], depth[:n, None]], 1), xy[n:]

    def face_mask(self, landmarks: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Soft HxW alpha: the hull of the 68 frontal landmarks raised to the forehead, within
        the rendered head, eroded and blurred; exactly 0 outside that region."""
        pts = np.asarray(landmarks, np.float64).copy()
        height = pts[:, 1].max() - pts[:, 1].min()
        brows = slice(17, 27)
        pts[brows, 1] -= FOREHEAD * height
        hard = np.zeros(covered.shape, np.uint8)
        cv2.fillConvexPoly(hard, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
        hard &= covered.astype(np.uint8)
        radius = max(1, int(round(self.mask_blur * max(height, 1.0))))
        inner = cv2.erode(hard, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
        soft = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), radius / 2 + 0.5)
        return soft * hard

    def render(self, image: np.ndarray, crop: DecaCrop, code: dict[str, torch.Tensor], i: int) -> np.ndarray:
        """Frontalize item `i`: texture from `image` (BGR), render at pose zero, composite."""
        return self.composite(*self.draw(image, crop, code, i))

    def draw(self, image: np.ndarray, crop: DecaCrop, code: dict[str, torch.Tensor],
             i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The frontal face of item `i` (float32 BGR, textured from `image`, with the detail
        gain when `detail`), the background it goes on and the soft composite mask."""
        m = self.model
        faces = m.flame.faces.cpu().numpy()
        crop_to_image = np.linalg.inv(crop.image_to_crop)
        fitted, _ = self.screen_mesh(code, i, code["pose"][i:i + 1], crop_to_image)
        texture, visible = extract_texture(image, fitted, faces, self.layout)
        if not visible.any():
            raise FrontalizationError("deca: no part of the fitted face is visible in the photo")
        texture = fill_hidden(texture, visible, self.layout)
        if self.detail:
            texture = texture * self.detail_gain(code, i)

        frontal_pose = torch.zeros(1, 6)
        if self.keep_jaw:
            frontal_pose[:, 3:] = code["pose"][i:i + 1, 3:]
        if self.paste_back:
            background, to_out = image, crop_to_image
        else:
            background = cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR)
            to_out = np.eye(3)
        frontal, landmarks = self.screen_mesh(code, i, frontal_pose, to_out)
        zbuf = rasterize_zbuffer(frontal[:, :2], frontal[:, 2], faces, background.shape[:2])
        texel = uv_to_pixels(zbuf.interpolate(m.template.vt[m.template.ft]).reshape(-1, 2), self.uv_size)
        texel = texel.reshape(*background.shape[:2], 2).astype(np.float32)
        drawn = cv2.remap(texture, texel[..., 0], texel[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return drawn, background, self.face_mask(landmarks, zbuf.mask)

    def composite(self, drawn: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """`drawn` over `background` (uint8) with the soft `alpha`; with blend="seamless" the
        drawn face is first Poisson-blended into the background over alpha's support, so the
        colour difference fades to zero at its edge. Pixels where alpha is 0 stay the
        background's."""
        drawn = np.asarray(drawn, np.float32)
        if self.blend == "seamless":
            blended = poisson_blend(drawn, background, alpha > 0)
            if blended is None:
                self.blend_fallbacks += 1
                why = "touches the image border" if alpha.any() else "is empty"
                log.info("deca: the face region %s: alpha composite instead of seamless (%d so far)",
                         why, self.blend_fallbacks)
            else:
                drawn = blended.astype(np.float32)
        a = alpha[..., None]
        out = a * drawn + (1 - a) * background.astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    # ---- CroppingFrontalizer API ------------------------------------------------------
    def frontalize_chunk(self, images: list[np.ndarray], crops: list[DecaCrop]) -> list[np.ndarray | Exception]:
        """Encode the chunk's faces as one batch, then render each (a failure stays on its face)."""
        code = self.encode(crops)
        out: list[np.ndarray | Exception] = []
        for k, (image, crop) in enumerate(zip(images, crops, strict=True)):
            try:
                out.append(self.render(image, crop, code, k))
            except ModelFileError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded per item by the caller
                out.append(exc)
        return out
