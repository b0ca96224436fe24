"""Classical 3D frontalization on MediaPipe's face mesh (after Hassner et al., CVPR 2015).

The person's own 478-point mesh is rotated toward the camera about a pivot behind the face
and re-rendered by warping each triangle from the photo. Where the photo shows a part of
the face poorly (turned away, or hidden behind the nose), the other side's texture is used
instead (soft symmetry, weighted per pixel by how well each side is seen, its colour matched
to the side it replaces). Outside the face, a radial warp sends the new silhouette's
surroundings to the old silhouette's surroundings, so the old face never shows next to the
new one (no ghost), and it fades to no change inside the region that is rewritten (no
rectangle). Face and surroundings are blended as colours, not as sample positions (no
halo). Fits that cannot be trusted return the photo unchanged and are counted.
"""

from __future__ import annotations

import collections
import math
import threading
from functools import lru_cache

import cv2
import numpy as np

from frontal_exp.errors import ConfigError, FrontalizationError
from frontal_exp.face3d.canonical import canonical_mesh, mirror_index
from frontal_exp.face3d.facemesh import N_MESH, get_face_mesh, mesh_triangles
from frontal_exp.face3d.pose import PoseFit, pose_from_landmarks, rotation_from_euler
from frontal_exp.face3d.render import rasterize, signed_areas
from frontal_exp.frontalizers.base import Frontalizer

#: number of ray directions of the surround warp
_N_RAYS = 360


class Mesh3DFrontalizer(Frontalizer):
    """Frontalize by rotating the face's 3D mesh and re-rendering it from the photo.

    Args:
        symmetry: weight of the mirrored texture where the photo hides (or barely shows)
            the face (0 = never mirror, 1 = fully replace what the photo does not show).
        strength: fraction of the way to frontal to rotate (1 = fully frontal, 0.5 = half).
        max_rotation: the most the head is rotated, in degrees (0 = no limit): a face
            turned further is rotated this far toward frontal only. A face turned far
            away shows its far side in few pixels, and a full rotation stretches them.
        min_angle: head rotation (degrees) below which the image is returned unchanged;
            frontalizing an already frontal face only loses detail.
        keep_roll: keep the in-plane tilt (the embedder's alignment removes it anyway, and
            rotating the face against unrotated hair looks odd).
        keep_pitch: keep the up/down tilt and correct yaw (and roll) only; on real photos
            correcting pitch cost similarity (pitch zero is a convention, see face3d.canonical).
        pivot_depth: rotation centre behind the centroid of the face mesh, in face widths
            (a real head turns about the neck, so its face also shifts sideways; with a
            pivot at the skin, FaceMesh reads a re-rendered 40 deg view as only ~12 deg).
        feather: width of the blend from the re-rendered face into its warped
            surroundings, in face widths.
        surround: how far beyond the face the surroundings are warped, in face widths
            (longer where the silhouette moves far, so the warp never folds).
        occlusion_low: how well a pixel is seen (foreshortening: the source/target area
            ratio, times per-pixel visibility, less near the photo's occluding contour) at or
            below which the photo's pixel gets no weight; low values keep the photo's own,
            foreshortened texture wherever it shows the face at all (measured better for
            identity than mirroring the other side).
        occlusion_high: quality at or above which it gets full weight.
        match_colour: scale the mirrored texture's colour to the side it fills (light
            usually falls on one side of a face; an unmatched mirror shows a seam).
        max_landmark_error: fallback: when the face mesh's eyes, nose tip and mouth corners
            lie further than this (mean, in face widths) from the 5 keypoints of an
            independent detector (the packaged SCRFD), the mesh is not trusted and the photo
            is returned unchanged (counted: `fallback_count`, `fallback_reason`); 0 = never.
        max_side: longest side of the face region at which the warp is computed; the
            warp is then upsampled and the photo sampled at full resolution.
    """

    name = "mesh3d"
    runtime_attrs = ("_lock", "_fallbacks", "_fallback_total")

    def __init__(
        self,
        *,
        symmetry: float = 1.0,
        strength: float = 1.0,
        max_rotation: float = 15.0,
        min_angle: float = 6.0,
        keep_roll: bool = True,
        keep_pitch: bool = True,
        pivot_depth: float = 0.6,
        feather: float = 0.06,
        surround: float = 0.5,
        occlusion_low: float = 0.05,
        occlusion_high: float = 0.25,
        match_colour: bool = True,
        max_landmark_error: float = 0.1,
        max_side: int = 320,
    ) -> None:
        if not 0.0 <= symmetry <= 1.0:
            raise ConfigError(f"symmetry must be in [0, 1], got {symmetry}")
        if not 0.0 <= strength <= 1.0:
            raise ConfigError(f"strength must be in [0, 1], got {strength}")
        if occlusion_high <= occlusion_low:
            raise ConfigError("occlusion_high must be larger than occlusion_low")
        for key, value in (("max_rotation", max_rotation), ("max_landmark_error", max_landmark_error),
                           ("feather", feather), ("surround", surround)):
            if value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}")
        self.symmetry = symmetry
        self.strength = strength
        self.max_rotation = max_rotation
        self.min_angle = min_angle
        self.keep_roll = keep_roll
        self.keep_pitch = keep_pitch
        self.pivot_depth = pivot_depth
        self.feather = feather
        self.surround = surround
        self.occlusion_low = occlusion_low
        self.occlusion_high = occlusion_high
        self.match_colour = match_colour
        self.max_landmark_error = max_landmark_error
        self.max_side = max_side
        self._lock = threading.Lock()
        #: input pixel hash -> why the photo was returned unchanged (recent calls only)
        self._fallbacks: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._fallback_total = 0

    # -- public ---------------------------------------------------------------------------
    def __call__(self, image: np.ndarray) -> np.ndarray:
        landmarks, fit = self._fit(image)
        target = self.target_rotation(fit)
        if target is None:
            return image.copy()
        reason = self.implausible(image, landmarks, fit)
        if reason:
            self._note_fallback(image, reason)
            return image.copy()
        return self._render(image, landmarks, fit, target)

    def target_rotation(self, fit: PoseFit) -> np.ndarray | None:
        """The rotation (canonical -> camera) the face is rendered at, or None when the face
        is within `min_angle` of it already."""
        pose = fit.pose
        kept_pitch = pose.pitch if self.keep_pitch else 0.0
        kept_roll = pose.roll if self.keep_roll else 0.0
        full = _angle_between(fit.rotation, rotation_from_euler(0.0, kept_pitch, kept_roll))
        if full < self.min_angle:
            return None
        # partial frontalization moves each corrected angle the same fraction of the way
        a = self.strength
        if self.max_rotation > 0 and a * full > self.max_rotation:
            a = self.max_rotation / full
        return rotation_from_euler(
            (1 - a) * pose.yaw, (1 - a) * pose.pitch + a * kept_pitch, (1 - a) * pose.roll + a * kept_roll
        )

    def implausible(self, image: np.ndarray, landmarks: np.ndarray, fit: PoseFit) -> str:
        """Why this face mesh should not be re-rendered ("" when it can be)."""
        if self.max_landmark_error > 0:
            err = landmark_error(image, landmarks, fit)
            if err is not None and err > self.max_landmark_error:
                return (f"face mesh disagrees with the detector's keypoints by {err:.2f} face widths "
                        f"(> max_landmark_error {self.max_landmark_error:g})")
        return ""

    @property
    def fallback_count(self) -> int:
        """Photos returned unchanged because the fit was implausible, since construction."""
        return self._fallback_total

    def fallback_reason(self, key: str) -> str:
        """Why the photo with pixel hash `key` (see frontal_exp.cache.pixel_hash) was returned
        unchanged by a recent call, "" if it was not."""
        with self._lock:
            return self._fallbacks.get(key, "")

    def render_pose(self, image: np.ndarray, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
        """Re-render the largest face of `image` at an absolute pose (degrees, see face3d.pose)."""
        landmarks, fit = self._fit(image)
        return self._render(image, landmarks, fit, rotation_from_euler(yaw, pitch, roll))

    # -- steps ----------------------------------------------------------------------------
    def _note_fallback(self, image: np.ndarray, reason: str) -> None:
        from frontal_exp.cache import pixel_hash

        key = pixel_hash(image)
        with self._lock:
            self._fallback_total += 1
            self._fallbacks[key] = reason
            self._fallbacks.move_to_end(key)
            while len(self._fallbacks) > 4096:
                self._fallbacks.popitem(last=False)

    def _fit(self, image: np.ndarray) -> tuple[np.ndarray, PoseFit]:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise FrontalizationError(f"expected a BGR uint8 HxWx3 image, got {getattr(image, 'shape', image)!r}")
        landmarks = get_face_mesh().landmarks(image)
        return landmarks, pose_from_landmarks(landmarks)

    def _render(self, image: np.ndarray, landmarks: np.ndarray, fit: PoseFit, target: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        tris, loops, mirror = _closed_mesh()
        src = _with_hole_centres(landmarks[:N_MESH].astype(np.float64), loops)
        face_w = fit.scale  # canonical unit = face width, so the fitted scale is px per face width

        # rotate the person's shape about a pivot inside the head: the observed mesh where
        # the photo shows it, its mirror image where it does not (FaceMesh guesses the far
        # side of a turned face, and its guess does not turn back into a plausible face)
        shape = _symmetric_shape(src, fit, tris, mirror)
        pivot = fit.translation + fit.scale * fit.rotation @ np.array([0.0, 0.0, self.pivot_depth])
        rel = target @ fit.rotation.T
        dst = (shape - pivot) @ rel.T + pivot

        # the region rewritten: both meshes and the surround warp, which fades out inside it
        # (a warp cut off at its edge would show as a rectangle)
        shift = float(np.linalg.norm(dst[:, :2] - src[:, :2], axis=1).max())
        reach = max(self.surround * face_w, 2.0 * shift, 4.0)
        margin = reach + 0.1 * face_w + 4
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
        src_w = (src[:, :2] - origin + 0.5) * scale - 0.5
        dst_w = (dst[:, :2] - origin + 0.5) * scale - 0.5
        unit = face_w * (kx + ky) / 2  # one face width in work pixels
        src_z, dst_z = src[:, 2] * (kx + ky) / 2, dst[:, 2] * (kx + ky) / 2

        raster = rasterize(dst_w, dst_z, tris, (wh, ww), cull_backfaces=True)
        if len(raster.ys) == 0:
            raise FrontalizationError("the rotated face mesh covers no pixel")
        mask = raster.mask
        # the photo's side: its z-buffer, and the face's silhouette in it
        seen = rasterize(src_w, src_z, tris, (wh, ww), cull_backfaces=True)
        zbuf = seen.to_image(seen.interpolate(src_z), fill=np.inf)
        old = seen.mask.astype(np.uint8)

        # foreshortening: how many photo pixels a target pixel gets (<= 1), per vertex, for
        # the direct texture and for the mirrored one (the mirror triangle's area in the
        # photo, its corners running the other way round, against this one's in the target)
        a_src, a_dst = signed_areas(src_w, tris), signed_areas(dst_w, tris)
        a_mir = -signed_areas(src_w, mirror[tris])
        fq = _vertex_mean(_area_ratio(a_src, a_dst), tris, len(src))
        fq_m = _vertex_mean(_area_ratio(a_mir, a_dst), tris, len(src))

        vals = raster.interpolate(np.column_stack([src_w, src_w[mirror], src_z, src_z[mirror], fq, fq_m]))
        # visibility per pixel: the point's depth against the photo's z-buffer at its place
        tol = 0.03 * unit
        vis_d = _visible(zbuf, vals[:, 0], vals[:, 1], vals[:, 4], tol)
        vis_m = _visible(zbuf, vals[:, 2], vals[:, 3], vals[:, 5], tol)
        fq_d = np.clip(vals[:, 6], 0.0, 1.0)
        hidden = raster.to_image(1.0 - vis_d * np.clip(fq_d * 10, 0.0, 1.0))
        # near the photo's silhouette where the face turns away (a profile's nose, lips,
        # chin) a sample may miss the face by the mesh's error and take the background
        contour = _contour_distance(src_w, a_src < 0, old)
        edge = max(1.0, 0.04 * unit)
        edge_d = _smoothstep(_lookup(contour, vals[:, 0], vals[:, 1]) / edge)
        edge_m = _smoothstep(_lookup(contour, vals[:, 2], vals[:, 3]) / edge)
        span = self.occlusion_high - self.occlusion_low
        w_direct = _smoothstep((fq_d * vis_d * edge_d - self.occlusion_low) / span)
        w_mirror = _smoothstep((np.clip(vals[:, 7], 0.0, 1.0) * vis_m * edge_m - self.occlusion_low) / span)
        # how much of each pixel's colour is seen, from either side (the rest is filled in
        # from its neighbourhood)
        seen_q = raster.to_image(np.maximum(w_direct, self.symmetry * w_mirror), fill=1.0)
        beta = raster.to_image(self.symmetry * (1.0 - w_direct) * w_mirror)
        use_mirror = self.symmetry > 0 and beta.max() > 1e-3
        if use_mirror:
            # soft symmetry that fades smoothly: no step where the mirrored side begins
            s = max(0.5, 0.025 * unit)
            m = mask.astype(np.float32)
            beta = cv2.GaussianBlur(beta, (0, 0), s) / np.maximum(cv2.GaussianBlur(m, (0, 0), s), 1e-3) * m

        grow = max(1, int(round(0.01 * unit)))
        old = cv2.dilate(old, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        face_x, face_y = raster.to_image(vals[:, 0]), raster.to_image(vals[:, 1])
        sur_x, sur_y, jump = _surround_maps(mask, old > 0, face_x, face_y, hidden, reach * (kx + ky) / 2,
                                            0.05 * unit, (x0 > 0, y0 > 0, x1 < w, y1 < h))
        # alpha: 1 inside the face, ramping to 0 at its edge over `feather`; narrower where
        # the surroundings do not continue the face's edge (a hidden far side moved out
        # from behind the profile): a wide blend there would show the face half transparent
        ramp = np.maximum(1.0, self.feather * unit / (1.0 + (jump / max(1.0, 0.02 * unit)) ** 2)).astype(np.float32)
        alpha = _smoothstep(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3) / ramp)

        # back to full resolution: upsample the maps (bilinear, as cv2.resize would) and
        # sample the full-resolution photo; the surroundings over the whole region, the face
        # and its blends only over the face's box
        fw, fh = x1 - x0, y1 - y0
        col = ((np.arange(fw) + 0.5) * kx - 0.5).astype(np.float32)  # work x of each column
        row = ((np.arange(fh) + 0.5) * ky - 0.5).astype(np.float32)

        def up(m: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
            bx0, by0, bx1, by1 = box
            mx = np.ascontiguousarray(np.broadcast_to(col[None, bx0:bx1], (by1 - by0, bx1 - bx0)))
            my = np.ascontiguousarray(np.broadcast_to(row[by0:by1, None], (by1 - by0, bx1 - bx0)))
            return cv2.remap(m, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        def sample(mx: np.ndarray, my: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
            xy = up(np.dstack([mx, my]), box)
            xy[:, :, 0] = (xy[:, :, 0] + 0.5) / kx - 0.5 + x0
            xy[:, :, 1] = (xy[:, :, 1] + 0.5) / ky - 0.5 + y0
            return cv2.remap(image, xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        out = image.copy()
        region = out[y0:y1, x0:x1]
        region[:] = sample(sur_x, sur_y, (0, 0, fw, fh))
        ys, xs = np.nonzero(alpha > 0)
        box = (max(0, int((xs.min() - 1) / kx)), max(0, int((ys.min() - 1) / ky)),
               min(fw, int(np.ceil((xs.max() + 2) / kx)) + 1), min(fh, int(np.ceil((ys.max() + 2) / ky)) + 1))
        # inside the face the maps hold the face's samples; outside, where alpha is 0, the
        # face's are not used: fill them with the surround's (for a smooth upsampling)
        inside = alpha > 0
        face = sample(np.where(inside, face_x, sur_x), np.where(inside, face_y, sur_y), box).astype(np.float32)
        weights = up(np.dstack([alpha, beta, seen_q]), box)
        if use_mirror:
            mir_x, mir_y = raster.to_image(vals[:, 2]), raster.to_image(vals[:, 3])
            mirrored = sample(np.where(inside, mir_x, sur_x), np.where(inside, mir_y, sur_y), box).astype(np.float32)
            if self.match_colour:
                # where the far side is still seen (too foreshortened to be used directly),
                # its colour tells how the light falls on the side the mirror fills
                both = raster.to_image(vis_d * vis_m * edge_d * np.clip(fq_d * 10, 0.0, 1.0) * (1 - w_direct))
                mirrored *= _colour_gain(face, mirrored, up(both, box))
            face += (mirrored - face) * weights[:, :, 1:2]
        if seen_q.min() < 0.3:
            face = _fill_unseen(face, _smoothstep(weights[:, :, 2] / 0.3), 0.03 * face_w)
        bx0, by0, bx1, by1 = box
        sur = region[by0:by1, bx0:bx1].astype(np.float32)
        region[by0:by1, bx0:bx1] = np.clip(sur + (face - sur) * weights[:, :, 0:1] + 0.5, 0, 255).astype(np.uint8)
        return out


@lru_cache(maxsize=1)
def _closed_mesh() -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """FaceMesh's triangles with its eye and mouth openings closed (a fan from a new vertex
    at each opening's centre, so the eyes and mouth are re-rendered with the face), the
    openings' vertex loops, and the left-right mirror index of the extended vertex set."""
    tris = mesh_triangles()
    uses = collections.Counter(tuple(sorted(e)) for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    border = collections.defaultdict(list)
    for (a, b), n in uses.items():
        if n == 1:
            border[a].append(b)
            border[b].append(a)
    loops, seen = [], set()
    for start in sorted(border):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [v for v in border[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(np.array(loop))
    loops.sort(key=len)
    holes = tuple(loops[:-1])  # the longest loop is the face's outline
    canon = _with_hole_centres(canonical_mesh()[:N_MESH].astype(np.float64), holes)
    fans = []
    for k, loop in enumerate(holes):
        centre = N_MESH + k
        for a, b in zip(loop, np.roll(loop, -1), strict=True):
            fans.append((a, b, centre))
    fans = np.array(fans, dtype=np.int32)
    flip = signed_areas(canon, fans) > 0  # front faces have negative area (see facemesh)
    fans[flip] = fans[flip][:, [1, 0, 2]]
    base = mirror_index()[:N_MESH]
    extra = []
    for loop in holes:
        mirrored = set(base[loop].tolist())
        extra.append(N_MESH + next(j for j, other in enumerate(holes) if set(other.tolist()) == mirrored))
    return np.concatenate([tris, fans]), holes, np.concatenate([base, extra]).astype(np.int64)


def _with_hole_centres(points: np.ndarray, holes: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.concatenate([points, np.stack([points[loop].mean(0) for loop in holes])])


def _symmetric_shape(points: np.ndarray, fit: PoseFit, tris: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """The mesh's 3D points (pixels), each vertex replaced by the mirror image of its
    counterpart on the other side of the face in proportion to how much better that
    counterpart faces the camera (a vertex that faces it at least as well stays as seen)."""
    a, b, c = (points[tris[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    facing = -normals[:, 2] / np.maximum(np.linalg.norm(normals, axis=1), 1e-9)  # z away from camera
    # turned away from the camera (or grazing): a guess; facing it by 0.2 or more: seen
    seen = np.clip((_vertex_mean(facing, tris, len(points)) + 0.05) / 0.25, 0.0, 1.0)
    own = np.clip(seen / np.maximum(seen[mirror], 1e-6), 0.0, 1.0)[:, None]
    canon = (points - fit.translation) @ fit.rotation / fit.scale
    mirrored = canon[mirror] * np.array([-1.0, 1.0, 1.0])
    mixed = own * canon + (1 - own) * mirrored
    return fit.scale * mixed @ fit.rotation.T + fit.translation


#: FaceMesh points of the 5 keypoints face detectors give: the iris centres (refined
#: landmarks; else the eye corners' midpoints), the nose tip and the mouth corners
_IRIS = (468, 473)
_EYE_CORNERS = ((33, 133), (362, 263))
_NOSE_TIP = 1
_MOUTH_CORNERS = (61, 291)


def landmark_error(image: np.ndarray, landmarks: np.ndarray, fit: PoseFit) -> float | None:
    """Mean distance (face widths) between the face mesh's 5 keypoints and those the packaged
    SCRFD detector finds for the same face (None when it finds no face there). Eyes and mouth
    corners are paired by their order across the image, so a mirrored guess is no excuse."""
    from frontal_exp.landmarks import landmark_service

    lm = np.asarray(landmarks, dtype=np.float64)
    if len(lm) > max(_IRIS):
        eyes = lm[list(_IRIS), :2]
    else:
        eyes = np.stack([lm[list(pair), :2].mean(0) for pair in _EYE_CORNERS])
    mesh5 = np.vstack([eyes, lm[[_NOSE_TIP], :2], lm[list(_MOUTH_CORNERS), :2]])
    # detect on a crop around the mesh (fast, and the face is large enough in it)
    h, w = image.shape[:2]
    lo, hi = lm[:N_MESH, :2].min(0), lm[:N_MESH, :2].max(0)
    pad = 0.6 * (hi - lo).max()
    x0, y0 = (np.maximum(0, np.floor(lo - pad))).astype(int)
    x1, y1 = np.minimum([w, h], np.ceil(hi + pad)).astype(int)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    boxes, kps = landmark_service().detect(np.ascontiguousarray(image[y0:y1, x0:x1]), 160, 0.3)
    if kps is None or len(boxes) == 0:
        return None
    centre = (lo + hi) / 2 - (x0, y0)
    j = int(np.argmin([np.hypot(*((b[:2] + b[2:4]) / 2 - centre)) for b in boxes]))
    det5 = np.asarray(kps[j], dtype=np.float64) + (x0, y0)

    def by_x(p: np.ndarray) -> np.ndarray:
        return p[np.argsort(p[:, 0])]

    a = np.vstack([by_x(mesh5[:2]), mesh5[2:3], by_x(mesh5[3:])])
    b = np.vstack([by_x(det5[:2]), det5[2:3], by_x(det5[3:])])
    return float(np.linalg.norm(a - b, axis=1).mean() / fit.scale)


def _surround_maps(
    new: np.ndarray, old: np.ndarray, face_x: np.ndarray, face_y: np.ndarray, hidden: np.ndarray,
    reach: float, margin: float, inner_sides: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample positions for the surroundings of the re-rendered face (work pixels), and per
    pixel how far (work pixels) they jump from the face's samples at the face's edge.

    Along each ray from a centre inside both silhouettes, the new silhouette's edge samples
    where the face warp samples there, pushed out along its own direction to just beyond
    the photo's face silhouette where it lies inside it (a hidden far side: sampling there
    would show the old face next to the new one). That displacement fades to none over
    `reach`, or twice its length so the warp never folds, and always before the sides of
    the region that are `inner_sides` (left, top, right, bottom; not the image's edges).
    Inside the new silhouette each ray keeps its edge's displacement (used only where the
    face fades into it)."""
    h, w = new.shape
    both = (new & old).astype(np.uint8)
    if not both.any():
        both = new.astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(both, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    theta = np.arange(_N_RAYS) * (2 * np.pi / _N_RAYS)
    ys, xs = np.nonzero(new | old)
    r_max = float(np.sqrt(((xs - cx) ** 2 + (ys - cy) ** 2).max())) + 2
    radii = np.arange(0.0, r_max, 0.75)
    px = np.round(cx + np.cos(theta)[:, None] * radii[None]).astype(int)
    py = np.round(cy + np.sin(theta)[:, None] * radii[None]).astype(int)
    inside_img = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    pxc, pyc = np.clip(px, 0, w - 1), np.clip(py, 0, h - 1)

    def outermost(m: np.ndarray) -> np.ndarray:
        hit = m[pyc, pxc] & inside_img
        return np.where(hit.any(1), hit.shape[1] - 1 - np.argmax(hit[:, ::-1], axis=1), 0)

    rays = np.arange(_N_RAYS)
    last_new = outermost(new)
    r_new = radii[last_new]
    r_old = radii[outermost(old)]
    # where the face warp samples at the new edge, pushed out of the old silhouette
    r_old_at = np.append(r_old, r_old[0])

    def pushed(x: np.ndarray, y: np.ndarray, amount: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (relative to the centre) moved out along their direction to `margin`
        beyond the old silhouette (the mesh's silhouette may fall short of the photo's
        nose and lips), by `amount` (0 = not moved, 1 = all the way)."""
        rad = np.maximum(np.hypot(x, y), 1e-6)
        edge = np.interp((np.arctan2(y, x) % (2 * np.pi)) * (_N_RAYS / (2 * np.pi)), np.arange(_N_RAYS + 1), r_old_at)
        scale = 1.0 + amount * (np.maximum(rad, edge + margin) / rad - 1.0)
        return x * scale, y * scale

    # the face's samples at its new edge: kept where the photo shows them (continuous with
    # the face), moved out of the old silhouette where it hides them
    ey, ex = pyc[rays, last_new], pxc[rays, last_new]
    fx, fy = face_x[ey, ex] - cx, face_y[ey, ex] - cy
    k = max(1, _N_RAYS // 90)  # 4 degrees
    amount = np.clip(_circular_filter(hidden[ey, ex], k, np.max), 0.0, 1.0)
    bx, by = np.cos(theta) * r_new, np.sin(theta) * r_new
    tx, ty = pushed(fx, fy, amount)
    # smooth across rays (a jump between neighbouring rays shows as a wedge), then push
    # again what smoothing pulled back inside, and smooth lightly
    tx, ty = pushed(bx + _circular_smooth(tx - bx, k), by + _circular_smooth(ty - by, k), amount)
    dx_edge = _circular_smooth(tx - bx, max(1, k // 4))
    dy_edge = _circular_smooth(ty - by, max(1, k // 4))
    r_new = _circular_smooth(r_new, max(1, k // 2))
    length = np.maximum(reach, 2.0 * np.hypot(dx_edge, dy_edge))
    # the warp must end inside the region, except at the image's own edges
    exits = [np.full(_N_RAYS, np.inf)]
    cos, sin = np.cos(theta), np.sin(theta)
    with np.errstate(divide="ignore"):
        for inner, dist, along in ((inner_sides[0], cx, -cos), (inner_sides[1], cy, -sin),
                                   (inner_sides[2], w - 1 - cx, cos), (inner_sides[3], h - 1 - cy, sin)):
            if inner:
                exits.append(np.where(along > 1e-6, dist / np.maximum(along, 1e-6), np.inf))
    room = np.min(exits, axis=0) - r_new - 1.0
    length = np.minimum(length, np.maximum(room, 1.0))

    # the displacement is smooth: evaluate it on a half-resolution grid (at the places
    # cv2.resize puts the coarse pixels' centres) and upsample
    w2, h2 = (w + 1) // 2, (h + 1) // 2
    cgx = ((np.arange(w2, dtype=np.float32) + 0.5) * (w / w2) - 0.5)[None, :]
    cgy = ((np.arange(h2, dtype=np.float32) + 0.5) * (h / h2) - 0.5)[:, None]
    dx, dy = cgx - cx, cgy - cy
    r = np.hypot(dx, dy)
    pos = (np.arctan2(dy, dx) % (2 * np.pi)) * (_N_RAYS / (2 * np.pi))
    i0 = np.floor(pos).astype(int) % _N_RAYS
    i1 = (i0 + 1) % _N_RAYS
    f = (pos - np.floor(pos)).astype(np.float32)

    def at(table: np.ndarray) -> np.ndarray:
        table = table.astype(np.float32)
        return table[i0] * (1 - f) + table[i1] * f

    fade = 1.0 - _smoothstep((r - at(r_new)) / at(length))
    jump = np.hypot(tx - fx, ty - fy)
    coarse = np.dstack([at(dx_edge) * fade, at(dy_edge) * fade, at(_circular_smooth(jump, k))])
    fine = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    fine[:, :, 0] += np.arange(w, dtype=np.float32)[None, :]
    fine[:, :, 1] += np.arange(h, dtype=np.float32)[:, None]
    return fine[:, :, 0], fine[:, :, 1], fine[:, :, 2]


def _circular_filter(v: np.ndarray, k: int, fn) -> np.ndarray:
    """`fn` (e.g. np.max) over a window of 2k+1 neighbours on a circle."""
    padded = np.concatenate([v[-k:], v, v[:k]])
    return fn(np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1), axis=1)


def _circular_smooth(v: np.ndarray, k: int) -> np.ndarray:
    """Gaussian smoothing (sigma k samples) on a circle."""
    x = np.arange(-3 * k, 3 * k + 1)
    g = np.exp(-0.5 * (x / k) ** 2)
    padded = np.concatenate([v[-3 * k:], v, v[:3 * k]])
    return np.convolve(padded, g / g.sum(), mode="valid")


def _area_ratio(a_from: np.ndarray, a_to: np.ndarray) -> np.ndarray:
    """Per triangle min(1, photo area / target area), 0 where either side faces away."""
    ratio = np.where((a_from < 0) & (a_to < 0), a_from / np.minimum(a_to, -1e-9), 0.0)
    return np.clip(ratio, 0.0, 1.0)


def _contour_distance(xy: np.ndarray, front: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """Distance (pixels) to the mesh's occluding contour (the edges between a triangle that
    faces the camera and one that does not) where it is the outline of `silhouette`, the
    mesh's mask (a contour inside it, e.g. a nose over a cheek, borders skin, not
    background)."""
    pairs, owners = _interior_edges()
    contour = pairs[front[owners[:, 0]] != front[owners[:, 1]]]
    lines = np.zeros(silhouette.shape, np.uint8)
    if len(contour):
        pts = np.round(xy[contour] * 16).astype(np.int32)
        cv2.polylines(lines, list(pts), False, 1, 1, cv2.LINE_8, 4)
    outline = cv2.distanceTransform(np.pad(silhouette, 1), cv2.DIST_L2, 3)[1:-1, 1:-1] <= 2.5
    far = np.where((lines > 0) & outline, 0, 255).astype(np.uint8)
    return cv2.distanceTransform(far, cv2.DIST_L2, 3)


@lru_cache(maxsize=1)
def _interior_edges() -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) vertex pairs of the closed mesh's edges shared by two triangles, and the two
    triangles sharing each."""
    tris = _closed_mesh()[0]
    owners: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for t, (a, b, c) in enumerate(tris.tolist()):
        for e in ((a, b), (b, c), (a, c)):
            owners[tuple(sorted(e))].append(t)
    shared = [(e, o) for e, o in owners.items() if len(o) == 2]
    return np.array([e for e, _ in shared]), np.array([o for _, o in shared])


def _lookup(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = image.shape
    return image[np.clip(np.round(y).astype(int), 0, h - 1), np.clip(np.round(x).astype(int), 0, w - 1)]


def _fill_unseen(colour: np.ndarray, seen: np.ndarray, sigma: float) -> np.ndarray:
    """Replace colour where it is not seen (weight `seen` < 1) by the weighted average of
    its seen neighbourhood (normalized convolution on a coarse grid, near those pixels)."""
    ys, xs = np.nonzero(seen < 1)
    if len(ys) == 0:
        return colour
    pad = int(4 * sigma) + 2
    y0, y1 = max(0, ys.min() - pad), min(seen.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(seen.shape[1], xs.max() + pad + 1)
    colour[y0:y1, x0:x1] = _fill_all(colour[y0:y1, x0:x1], seen[y0:y1, x0:x1], sigma)
    return colour


def _fill_all(colour: np.ndarray, seen: np.ndarray, sigma: float) -> np.ndarray:
    h, w = seen.shape
    f = max(1, int(sigma / 3))
    small = (max(1, w // f), max(1, h // f))
    wgt = cv2.resize(seen, small, interpolation=cv2.INTER_AREA)
    col = cv2.resize(colour * seen[:, :, None], small, interpolation=cv2.INTER_AREA)
    s = max(1.0, sigma / f)
    num = cv2.GaussianBlur(col, (0, 0), s)
    den = cv2.GaussianBlur(wgt, (0, 0), s)
    fill = cv2.resize(num / np.maximum(den, 1e-4)[:, :, None], (w, h), interpolation=cv2.INTER_LINEAR)
    k = seen[:, :, None]
    return colour * k + fill * (1 - k)


def _visible(zbuf: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, tol: float) -> np.ndarray:
    """1 where a point (work pixel coordinates, depth) is not behind the photo's surface at
    its place, fading to 0 over `tol` beyond it."""
    h, w = zbuf.shape
    xi = np.clip(np.round(x).astype(int), 0, w - 1)
    yi = np.clip(np.round(y).astype(int), 0, h - 1)
    front = zbuf[yi, xi]
    behind = np.where(np.isfinite(front), z - front - tol, -1.0)
    return np.clip(1.0 - behind / tol, 0.0, 1.0).astype(np.float32)


def _colour_gain(direct: np.ndarray, mirrored: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-channel gain that brings the mirrored texture's colour to the side it fills: the
    weighted ratio of direct to mirrored colour (1 where there is too little to measure)."""
    step = 3  # a global gain: every third pixel is plenty
    wgt = weight[::step, ::step, None]
    total = float(wgt.sum())
    if total < 25 / step**2:
        return np.ones(3, np.float32)
    num = (direct[::step, ::step] * wgt).sum((0, 1))
    den = (mirrored[::step, ::step] * wgt).sum((0, 1))
    return np.clip(num / np.maximum(den, 1e-3), 0.67, 1.5).astype(np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return x * x * (3 - 2 * x)


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
