"""FFWM's face crop, approximated from the project's 106 landmarks, and the way back.

The reference (data_process/process.py) crops LFW and Multi-PIE from Face++ DENSE
landmarks, which include the hairline: it rotates the photo about its centre by the
eye-line angle truncated to whole degrees, centres a square on the top of the nose, takes
as its half side r the largest vertical distance from that centre to any landmark (hairline
to chin), zero-pads, and resizes the 2r square to 128x128 (bicubic).

Here the same rule runs on insightface's 106 points (the detector + landmarker LivePortrait's
crop uses), which stop at the eyebrows. The approximation: the eye centres are the means of
the eye contours, the top of the nose is point 72 (nose bridge between the eyes), and the
hairline is estimated by the rule of facial thirds, `forehead_ratio` x the brow-to-subnasale
height above the brows (0: landmarks only). Faces with a high or low hairline, or bangs,
get a slightly different scale than the reference would give them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from frontal_exp.errors import FrontalizationError
from frontal_exp.frontalizers.liveportrait.crop import LEFT_EYE_CENTRE, RIGHT_EYE_CENTRE

#: side of the networks' input and output
CROP_SIZE = 128
# insightface 2d106det indices (checked on a labelled photo)
NOSE_TOP = 72
SUBNASALE = 80
BROWS = [*range(43, 52), *range(97, 106)]


@dataclass(frozen=True)
class CropRule:
    """The reference's crop parameters for one face: rotation (whole degrees, about the
    image centre) and the square [cy - r, cy + r) x [cx - r, cx + r) in the rotated image."""

    degrees: int
    cx: int
    cy: int
    radius: int


def _rotate(points: np.ndarray, radians: float, centre: tuple[float, float]) -> np.ndarray:
    # the image rotation of cv2.getRotationMatrix2D(centre, +angle) applied to points
    c, s = math.cos(radians), math.sin(radians)
    x0, y0 = points[:, 0] - centre[0], points[:, 1] - centre[1]
    return np.stack([x0 * c + y0 * s + centre[0], -x0 * s + y0 * c + centre[1]], axis=1)


def crop_rule(landmarks: np.ndarray, image_size: tuple[int, int], forehead_ratio: float = 1.0) -> CropRule:
    """FFWM's crop parameters from 106 landmarks in an image of `image_size` = (w, h).

    As in the reference, the landmarks are rotated by the exact eye-line angle and the
    image by that angle truncated to whole degrees; centre and radius are truncated to ints.
    """
    pts = np.asarray(landmarks, np.float64)
    left, right = pts[LEFT_EYE_CENTRE].mean(0), pts[RIGHT_EYE_CENTRE].mean(0)
    dx = left[0] - right[0]
    angle = math.atan((left[1] - right[1]) / dx) if abs(dx) > 1e-9 else 0.0
    w, h = image_size
    rotated = _rotate(pts, angle, (w / 2, h / 2))
    brow_y = rotated[BROWS, 1].mean()
    hairline_y = brow_y - forehead_ratio * (rotated[SUBNASALE, 1] - brow_y)
    cx, cy = int(rotated[NOSE_TOP, 0]), int(rotated[NOSE_TOP, 1])
    ys = np.append(rotated[:, 1], hairline_y)
    radius = int(max(abs(ys.max() - cy), abs(ys.min() - cy)))
    if radius < 4:
        raise FrontalizationError(f"ffwm: face too small to crop (radius {radius} px)")
    return CropRule(int(math.degrees(angle)), cx, cy, radius)


def crop_matrix(rule: CropRule, image_size: tuple[int, int], size: int = CROP_SIZE) -> np.ndarray:
    """3x3 map from the original image to the `size` crop: the rotation, the 2r window,
    then the resize (cv2.resize's pixel-centre convention)."""
    w, h = image_size
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D((w // 2, h // 2), rule.degrees, 1.0)
    window = np.array([[1.0, 0, rule.radius - rule.cx], [0, 1.0, rule.radius - rule.cy], [0, 0, 1]])
    s = size / (2 * rule.radius)
    resize = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
    return resize @ window @ rot


@dataclass
class FaceCrop:
    """One face prepared for the networks, and what is needed to put the result back."""

    image: np.ndarray  # CROP_SIZE x CROP_SIZE x 3, RGB uint8 (the networks' input)
    image_to_crop: np.ndarray  # 3x3, original image -> CROP_SIZE crop
    rule: CropRule


def cut(image_bgr: np.ndarray, rule: CropRule, size: int = CROP_SIZE) -> np.ndarray:
    """The crop as the reference makes it (BGR): rotate (bilinear, black corners), take the
    2r window with zero padding, resize with INTER_CUBIC. The window is an integer shift of
    the rotated image, so one warpAffine gives the same pixels as rotating then slicing."""
    h, w = image_bgr.shape[:2]
    rot = cv2.getRotationMatrix2D((w // 2, h // 2), rule.degrees, 1.0)
    rot[:, 2] += (rule.radius - rule.cx, rule.radius - rule.cy)
    side = 2 * rule.radius
    # at 0 degrees this is an exact integer shift: the pixels the reference slices out
    window = cv2.warpAffine(image_bgr, rot, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # the reference rotates onto the photo's own w x h canvas, then pads: what rotates
    # beyond that canvas is black even where the photo had pixels
    x0, y0 = rule.cx - rule.radius, rule.cy - rule.radius
    window[:max(0, -y0)] = 0
    window[max(0, h - y0):] = 0
    window[:, :max(0, -x0)] = 0
    window[:, max(0, w - x0):] = 0
    return cv2.resize(window, (size, size), interpolation=cv2.INTER_CUBIC)


def crop_face(image_bgr: np.ndarray, landmarks: np.ndarray, forehead_ratio: float = 1.0,
              size: int = CROP_SIZE) -> FaceCrop:
    """Cut FFWM's crop out of a BGR image given its 106 landmarks (RGB for the networks)."""
    h, w = image_bgr.shape[:2]
    rule = crop_rule(landmarks, (w, h), forehead_ratio)
    rgb = cv2.cvtColor(cut(image_bgr, rule, size), cv2.COLOR_BGR2RGB)
    return FaceCrop(rgb, crop_matrix(rule, (w, h), size), rule)
