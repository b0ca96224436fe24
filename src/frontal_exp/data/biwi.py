"""BIWI Kinect Head Pose: 24 sequences of 20 people, ground-truth head pose per frame."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from frontal_exp.data.base import Dataset, Item, LoadedDataset, Skip, require_dir

LAYOUT = """  ROOT/01/frame_00003_rgb.png
  ROOT/01/frame_00003_pose.txt   (3x3 rotation, then head centre in mm)
  ROOT/01/rgb.cal                 (optional: depth->RGB camera extrinsics)
  ROOT/02/..."""

_FRAME = re.compile(r"frame_(\d+)_rgb\.(png|jpg)$")


def angles_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head rotation in camera coordinates.

    Read as the head-pose literature reads BIWI (Hopenet, FSA-Net: pitch about x, yaw about
    y, roll about z), with the yaw sign flipped to this project's convention (yaw > 0: the
    nose points to the image's right; see frontal_exp.face3d.pose.HeadPose), where the
    literature's positive yaw points the nose to the image's left.
    """
    r = np.asarray(rot, dtype=np.float64)
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2])))
    roll = -math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


def head_rotation(pose_matrix: np.ndarray, rgb_rotation: np.ndarray | None = None) -> np.ndarray:
    """The head rotation of a pose file, in the RGB camera when `rgb.cal`'s rotation is given.

    BIWI writes the matrix row-wise, i.e. transposed (as the literature reads it); the pose is
    measured in the depth camera, and rgb.cal rotates the depth camera into the RGB camera.
    """
    r = np.asarray(pose_matrix, dtype=np.float64).T
    return r if rgb_rotation is None else rgb_rotation @ r


def read_pose(path: Path) -> np.ndarray:
    """The 3x3 rotation matrix of a BIWI `frame_XXXXX_pose.txt`."""
    values = [float(v) for v in path.read_text().split()]
    if len(values) < 9:
        raise ValueError(f"{path}: expected a 3x3 rotation matrix, got {len(values)} numbers")
    return np.array(values[:9]).reshape(3, 3)


def read_rgb_extrinsic_rotation(path: Path) -> np.ndarray | None:
    """Rotation from the depth to the RGB camera in `rgb.cal` (intrinsics, distortion, R, T)."""
    if not path.is_file():
        return None
    values = [float(v) for v in path.read_text().split()]
    if len(values) < 22:
        return None
    return np.array(values[13:22]).reshape(3, 3)


class BiwiDataset(Dataset):
    """Angled items are frames whose |yaw| or |pitch| exceeds the thresholds; GT is the most
    frontal frame of each person (smallest sqrt(yaw^2 + pitch^2)).

    BIWI recorded 4 of its 20 people twice; its annotations do not say which sequences share
    a person, so `same_person` maps a sequence to the one holding the same person
    (e.g. {"18": "14"}); unmapped sequences are their own person.
    """

    name = "biwi"
    root_env = "BIWI_ROOT"

    def __init__(
        self,
        root: str | None = None,
        min_yaw: float = 15.0,
        min_pitch: float = 15.0,
        max_gt_angle: float = 10.0,
        frame_stride: int = 1,
        same_person: dict[str, str] | None = None,
        use_rgb_calibration: bool = True,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(limit=limit, seed=seed)
        self.root = root
        self.min_yaw = min_yaw
        self.min_pitch = min_pitch
        self.max_gt_angle = max_gt_angle
        self.frame_stride = max(1, frame_stride)
        self.same_person = {str(k).zfill(2): str(v).zfill(2) for k, v in (same_person or {}).items()}
        self.use_rgb_calibration = use_rgb_calibration

    def _frames(self, root: Path, skipped: list[Skip]) -> dict[str, list[tuple[Path, float, float, float]]]:
        """Frames with pose, grouped by person id."""
        by_person: dict[str, list[tuple[Path, float, float, float]]] = {}
        for seq in sorted(p for p in root.iterdir() if p.is_dir()):
            person = self.same_person.get(seq.name, seq.name)
            cal = read_rgb_extrinsic_rotation(seq / "rgb.cal") if self.use_rgb_calibration else None
            frames = sorted(p for p in seq.iterdir() if _FRAME.search(p.name))
            for rgb in frames[:: self.frame_stride]:
                number = _FRAME.search(rgb.name).group(1)
                pose_file = seq / f"frame_{number}_pose.txt"
                if not pose_file.is_file():
                    skipped.append(Skip(str(rgb), "no_pose_file"))
                    continue
                try:
                    rot = read_pose(pose_file)
                except ValueError:
                    skipped.append(Skip(str(pose_file), "bad_pose_file"))
                    continue
                angles = angles_from_rotation(head_rotation(rot, cal))
                by_person.setdefault(person, []).append((rgb, *angles))
        return by_person

    def _load(self) -> LoadedDataset:
        root = require_dir(self.root, LAYOUT, self.root_env)
        skipped: list[Skip] = []
        by_person = self._frames(root, skipped)
        if not by_person:
            from frontal_exp.errors import DatasetError

            raise DatasetError(f"no BIWI frames (frame_XXXXX_rgb.png) under {root}. Expected layout:\n{LAYOUT}")
        items: list[Item] = []
        extra: dict[str, list[Path]] = {}
        for person, frames in sorted(by_person.items()):
            def off_axis(f):
                return math.hypot(f[1], f[2])
            gt = min(frames, key=off_axis)
            if off_axis(gt) > self.max_gt_angle:
                skipped.append(Skip(f"person {person}", "no_gt"))
                continue
            extra[person] = [f[0] for f in frames if f is not gt and off_axis(f) <= self.max_gt_angle]
            for path, yaw, pitch, roll in frames:
                if path == gt[0] or (abs(yaw) < self.min_yaw and abs(pitch) < self.min_pitch):
                    continue
                items.append(Item(f"{path.parent.name}/{path.stem}", person, path, gt[0], yaw, pitch, roll))
        return LoadedDataset(self.name, items, skipped, extra)
