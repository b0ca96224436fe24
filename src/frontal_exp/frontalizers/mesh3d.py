"""Classical 3D frontalization on MediaPipe's face mesh (after Hassner et al., CVPR 2015).

The person's own 478-point mesh is rotated to face the camera about a pivot behind the
face, re-rendered by warping each triangle from the photo, the self-occluded side is filled
by soft symmetry, and the warp fades smoothly into the surroundings so no seam shows.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from frontal_exp.errors import ConfigError, FrontalizationError
from frontal_exp.face3d.canonical import mirror_index
from frontal_exp.face3d.facemesh import N_MESH, get_face_mesh, mesh_triangles
from frontal_exp.face3d.pose import PoseFit, pose_from_landmarks, rotation_from_euler
from frontal_exp.face3d.render import rasterize, signed_areas
from frontal_exp.frontalizers.base import Frontalizer


class Mesh3DFrontalizer(Frontalizer):
    """Frontalize by rotating the face's 3D mesh and re-rendering it from the photo.

    Args:
        symmetry: weight of the mirrored texture where the direct texture is poorly seen
            (0 = never mirror, 1 = fully replace what the photo does not show).
        strength: fraction of the way to frontal to rotate (1 = fully frontal, 0.5 = half).
        min_angle: head rotation (degrees) below which the image is returned unchanged;
            frontalizing an already frontal face only loses detail.
        keep_roll: keep the in-plane tilt (the embedder's alignment removes it anyway, and
            rotating the face against unrotated hair looks odd).
        keep_pitch: keep the up/down tilt and correct yaw (and roll) only; on real photos
            correcting pitch cost similarity (pitch zero is a convention, see face3d.canonical).
        pivot_depth: rotation centre behind the centroid of the face mesh, in face widths
            (a real head turns about the neck, so its face also shifts sideways; with a
            pivot at the skin, FaceMesh reads a re-rendered 40 deg view as only ~12 deg).
        feather: width of the blend from the re-rendered face into the warped surroundings,
            in face widths.
        surround: how far beyond the face the warp fades out, in face widths (0 = paste
            the rendered face with a feathered edge only); longer where the face border
            moves far, so the warp never folds.
        occlusion_low: texture quality (source/target area ratio of a triangle, times
            visibility) at or below which the photo's pixels get no weight.
        occlusion_high: quality at or above which they get full weight.
        max_side: longest side of the face region at which the warp is computed; the
            warp is then upsampled and the photo sampled at full resolution.
    """

    name = "mesh3d"

    def __init__(
        self,
        *,
        symmetry: float = 1.0,
        strength: float = 1.0,
        min_angle: float = 6.0,
        keep_roll: bool = True,
        keep_pitch: bool = True,
        pivot_depth: float = 0.6,
        feather: float = 0.12,
        surround: float = 0.5,
        occlusion_low: float = 0.25,
        occlusion_high: float = 0.7,
        max_side: int = 320,
    ) -> None:
        if not 0.0 <= symmetry <= 1.0:
            raise ConfigError(f"symmetry must be in [0, 1], got {symmetry}")
        if occlusion_high <= occlusion_low:
            raise ConfigError("occlusion_high must be larger than occlusion_low")
        self.symmetry = symmetry
        self.strength = strength
        self.min_angle = min_angle
        self.keep_roll = keep_roll
        self.keep_pitch = keep_pitch
        self.pivot_depth = pivot_depth
        self.feather = feather
        self.surround = surround
        self.occlusion_low = occlusion_low
        self.occlusion_high = occlusion_high
        self.max_side = max_side

    # -- public ---------------------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> np.ndarray:
        landmarks, fit = self._fit(image)
        pose = fit.pose
        kept_pitch = pose.pitch if self.keep_pitch else 0.0
        kept_roll = pose.roll if self.keep_roll else 0.0
        if _angle_between(fit.rotation, rotation_from_euler(0.0, kept_pitch, kept_roll)) < self.min_angle:
            return image.copy()
        # partial frontalization moves each corrected angle the same fraction of the way
        a = self.strength
        target = rotation_from_euler(
            (1 - a) * pose.yaw, (1 - a) * pose.pitch + a * kept_pitch, (1 - a) * pose.roll + a * kept_roll
        )
        return self._render(image, landmarks, fit, target)

    def render_pose(self, image: np.ndarray, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
        """Re-render the largest face of `image` at an absolute pose (degrees, see face3d.pose)."""
        landmarks, fit = self._fit(image)
        return self._render(image, landmarks, fit, rotation_from_euler(yaw, pitch, roll))

    # -- steps ----------------------------------------------------------------------------
    def _fit(self, image: np.ndarray) -> tuple[np.ndarray, PoseFit]:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise FrontalizationError(f"expected a BGR uint8 HxWx3 image, got {getattr(image, 'shape', image)!r}")
        landmarks = get_face_mesh().landmarks(image)
        return landmarks, pose_from_landmarks(landmarks)

    def _render(self, image: np.ndarray, landmarks: np.ndarray, fit: PoseFit, target: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        tris = mesh_triangles()
        mirror = mirror_index()[:N_MESH]
        src = landmarks[:N_MESH].astype(np.float64)
        face_w = fit.scale  # canonical unit = face width, so the fitted scale is px per face width

        # rotate the observed mesh (keeps the person's shape) about a pivot inside the head
        pivot = fit.translation + fit.scale * fit.rotation @ np.array([0.0, 0.0, self.pivot_depth])
        rel = target @ fit.rotation.T
        dst = (src - pivot) @ rel.T + pivot

        # work on a region around both meshes, at most max_side px, then sample at full res
        margin = (self.surround + self.feather) * face_w + 4
        pts = np.concatenate([src[:, :2], dst[:, :2]])
        x0, y0 = np.floor(pts.min(0) - margin).astype(int)
        x1, y1 = np.ceil(pts.max(0) + margin).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            raise FrontalizationError("the face mesh lies outside the image")
        k = min(1.0, self.max_side / max(x1 - x0, y1 - y0))
        ww, wh = max(8, round((x1 - x0) * k)), max(8, round((y1 - y0) * k))
        kx, ky = ww / (x1 - x0), wh / (y1 - y0)
        origin = np.array([x0, y0])
        scale = np.array([kx, ky])

        def to_work(p: np.ndarray) -> np.ndarray:
            return (p[:, :2] - origin + 0.5) * scale - 0.5

        src_w, dst_w = to_work(src), to_work(dst)
        depth_scale = (kx + ky) / 2

        # how well the photo shows each vertex: foreshortening (area ratio) x not hidden
        a_src, a_dst = signed_areas(src_w, tris), signed_areas(dst_w, tris)
        ratio = np.where((a_src < 0) & (a_dst < 0), a_src / np.minimum(a_dst, -1e-9), 0.0)
        tri_q = np.clip(ratio, 0.0, 1.0)
        vis = self._unoccluded(src_w, src[:, 2] * depth_scale, tris, (wh, ww), 0.04 * face_w * depth_scale)
        vert_q = _vertex_mean(tri_q, tris, len(src)) * vis
        weight = _smoothstep((vert_q - self.occlusion_low) / (self.occlusion_high - self.occlusion_low))

        raster = rasterize(dst_w, dst[:, 2], tris, (wh, ww), cull_backfaces=True)
        if len(raster.ys) == 0:
            raise FrontalizationError("the rotated face mesh covers no pixel")
        per_vertex = np.column_stack([src_w, src_w[mirror], weight, weight[mirror]])
        vals = raster.interpolate(per_vertex)
        ys, xs = raster.ys, raster.xs
        w_direct, w_mirror = np.clip(vals[:, 4], 0, 1), np.clip(vals[:, 5], 0, 1)
        beta = raster.to_image(self.symmetry * (1.0 - w_direct) * w_mirror)

        # alpha: 1 inside the face, ramping to 0 at the mesh border (distance transform)
        mask = raster.mask.astype(np.uint8)
        ramp = max(1.0, self.feather * face_w * depth_scale)
        alpha = _smoothstep(cv2.distanceTransform(mask, cv2.DIST_L2, 3) / ramp)

        face_x, face_y = raster.to_image(vals[:, 0]), raster.to_image(vals[:, 1])
        grid_y, grid_x = np.mgrid[0:wh, 0:ww].astype(np.float32)
        sur_x, sur_y = self._surround_maps(face_x - grid_x, face_y - grid_y, mask, face_w * depth_scale)
        map_x = alpha * face_x + (1 - alpha) * (grid_x + sur_x)
        map_y = alpha * face_y + (1 - alpha) * (grid_y + sur_y)
        mir_x = raster.to_image(vals[:, 2])
        mir_y = raster.to_image(vals[:, 3])
        beta *= alpha
        del xs, ys

        # back to full resolution: upsample the maps, sample the full-resolution photo
        fw, fh = x1 - x0, y1 - y0

        def to_full(m: np.ndarray, axis: int) -> np.ndarray:
            up = cv2.resize(m, (fw, fh), interpolation=cv2.INTER_LINEAR) if (fw, fh) != (ww, wh) else m
            return ((up + 0.5) / scale[axis] - 0.5 + origin[axis]).astype(np.float32)

        out = image.copy()
        direct = cv2.remap(image, to_full(map_x, 0), to_full(map_y, 1), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        if self.symmetry > 0 and beta.max() > 1e-3:
            mirrored = cv2.remap(image, to_full(mir_x, 0), to_full(mir_y, 1), cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            b = cv2.resize(beta, (fw, fh), interpolation=cv2.INTER_LINEAR)[:, :, None] if (fw, fh) != (ww, wh) else beta[:, :, None]
            direct = (direct * (1 - b) + mirrored * b + 0.5).astype(np.uint8)
        out[y0:y1, x0:x1] = direct
        return out

    @staticmethod
    def _unoccluded(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray, shape: tuple[int, int],
                    tol: float) -> np.ndarray:
        """Per vertex 1.0 where no nearer part of the mesh covers it in the photo, else 0.0."""
        raster = rasterize(xy, depth, tris, shape, cull_backfaces=True)
        zbuf = raster.to_image(raster.interpolate(depth), fill=np.inf)
        h, w = shape
        xi = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        return (depth <= zbuf[yi, xi] + tol).astype(np.float64)

    def _surround_maps(self, dx: np.ndarray, dy: np.ndarray, mask: np.ndarray, face_w: float) -> tuple[np.ndarray, np.ndarray]:
        """Extend the face's displacement smoothly outside it, fading to zero (no seam)."""
        if self.surround <= 0:
            return np.zeros_like(dx), np.zeros_like(dy)
        # normalized convolution on a coarse grid, certainty = a thin band inside the mesh
        # border: just outside the face, the warp then continues the border's displacement,
        # so pixels next to the new silhouette sample next to the old one (background, hair)
        # instead of ghosting the old face
        h, w = mask.shape
        f = max(1, int(face_w / 32))
        small = (max(1, w // f), max(1, h // f))
        band = (mask > 0) & (cv2.distanceTransform(mask, cv2.DIST_L2, 3) < max(2.0, 0.04 * face_w))
        band = band.astype(np.float32)
        b = cv2.resize(band, small, interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.float32), small, interpolation=cv2.INTER_AREA)
        stack = np.dstack([dx * band, dy * band]).astype(np.float32)
        d = cv2.resize(stack, small, interpolation=cv2.INTER_AREA)
        sigma = max(1.0, 0.15 * face_w / f)
        bb = cv2.GaussianBlur(b, (0, 0), sigma)
        db = cv2.GaussianBlur(d, (0, 0), sigma)
        ext = db / np.maximum(bb, 1e-6)[:, :, None]
        # fade to no displacement over `surround` face widths, or longer where the border
        # moves far, so that the warp never folds (a fold shows as smeared copies of the
        # face): |d| * max slope of the fade (1.5 / reach) stays below 1
        band_shift = np.linalg.norm(d, axis=2) / np.maximum(b, 1e-6)
        far = float(band_shift[b > 0.25].max(initial=0.0))
        reach = max(self.surround * face_w / f, 2.5 * far, 1.0)
        outside = cv2.distanceTransform((m < 0.5).astype(np.uint8), cv2.DIST_L2, 3)
        fade = _smoothstep(1.0 - outside / reach)[:, :, None]
        out = cv2.resize(ext * fade, (w, h), interpolation=cv2.INTER_LINEAR)
        return out[:, :, 0], out[:, :, 1]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def _vertex_mean(per_tri: np.ndarray, tris: np.ndarray, n: int) -> np.ndarray:
    total = np.zeros(n)
    count = np.zeros(n)
    for k in range(3):
        np.add.at(total, tris[:, k], per_tri)
        np.add.at(count, tris[:, k], 1.0)
    return total / np.maximum(count, 1.0)


def _angle_between(r1: np.ndarray, r2: np.ndarray) -> float:
    cos = (np.trace(r1.T @ r2) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))
