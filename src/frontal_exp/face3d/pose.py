"""Head pose (yaw, pitch, roll) from the 3D FaceMesh, by Procrustes fit to the canonical face.

Sign convention (camera frame: x to the image's right, y down, z away from the camera):
- yaw > 0: the nose points toward the image's RIGHT (the subject turns to their own left);
- pitch > 0: the nose points UP (chin raised);
- roll > 0: the face is rotated CLOCKWISE on screen (the top of the head moves to the
  image's right, i.e. toward the subject's left shoulder).
All zero = facing the camera upright. Angles are in degrees. The rotation matrix `R` maps
canonical face coordinates to camera coordinates and factors as
R = Ry(-yaw) @ Rx(-pitch) @ Rz(roll) (roll applied first, yaw last), with Rx, Ry, Rz the
usual right-handed rotations about the camera axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from frontal_exp.face3d.canonical import canonical_mesh, similarity_fit
from frontal_exp.face3d.facemesh import N_MESH, get_face_mesh


@dataclass(frozen=True)
class HeadPose:
    """Head orientation in degrees; see the module docstring for the signs."""

    yaw: float
    pitch: float
    roll: float

    @property
    def angle_from_frontal(self) -> float:
        """How far the face is turned from the camera, in degrees (roll ignored).

        The angle between the face's forward direction and the direction to the camera,
        which ranks photos by frontality (0 = looking into the camera).
        """
        fwd = rotation_from_euler(self.yaw, self.pitch, 0.0) @ np.array([0.0, 0.0, -1.0])
        return float(np.degrees(np.arccos(np.clip(-fwd[2], -1.0, 1.0))))


class PoseFit(NamedTuple):
    """Result of `pose_from_landmarks`: landmarks ~= scale * canonical @ rotation.T + translation."""

    pose: HeadPose
    rotation: np.ndarray
    scale: float
    translation: np.ndarray


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (canonical -> camera) for a pose in degrees."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    return _ry(-y) @ _rx(-p) @ _rz(r)


def euler_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a canonical -> camera rotation."""
    b = math.asin(float(np.clip(-rot[1, 2], -1.0, 1.0)))
    a = math.atan2(rot[0, 2], rot[2, 2])
    c = math.atan2(rot[1, 0], rot[1, 1])
    return -math.degrees(a), -math.degrees(b), math.degrees(c)


def pose_from_landmarks(landmarks: np.ndarray) -> PoseFit:
    """Fit the canonical mesh to 478 (or 468) FaceMesh landmarks in pixel units.

    A similarity (Umeyama) fit on the 468 mesh points, refitted once with weights that
    shrink points far off (open mouth, raised brows), so expressions bias the pose less.
    """
    obs = np.asarray(landmarks, dtype=np.float64)[:N_MESH]
    ref = canonical_mesh()[:N_MESH].astype(np.float64)
    s, rot, t = similarity_fit(ref, obs)
    resid = np.linalg.norm(obs - (s * ref @ rot.T + t), axis=1)
    weights = 1.0 / (1.0 + (resid / (np.median(resid) + 1e-9)) ** 2)
    s, rot, t = similarity_fit(ref, obs, weights=weights)
    return PoseFit(HeadPose(*euler_from_rotation(rot)), rot, s, t)


def estimate_head_pose(
    image: np.ndarray, box: tuple[float, float, float, float] | None = None
) -> HeadPose | None:
    """Head pose of the largest face in a BGR image (or in `box`), None when no face mesh."""
    landmarks = get_face_mesh().detect(image, box)
    if landmarks is None:
        return None
    return pose_from_landmarks(landmarks).pose
