"""Face crop as LivePortrait makes it: detect, 106 landmarks, a roll-free square around the
face (scale 2.3, shifted by vy_ratio), and the way back into the original image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: side of the crop the generator's 512x512 output corresponds to
CROP_SIZE = 512
#: side of the networks' input
INPUT_SIZE = 256

# insightface 2d106det indices. Eye centres and mouth corners (LivePortrait uses the same
# points of this model to place its crop); lids and inner lips checked on a labelled photo.
LEFT_EYE_CENTRE = [33, 35, 40, 39]
RIGHT_EYE_CENTRE = [87, 89, 94, 93]
MOUTH_CORNERS = (52, 61)
LEFT_EYE_LIDS, LEFT_EYE_CORNERS = (40, 33), (35, 39)
RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS = (94, 87), (89, 93)
INNER_LIPS = (62, 60)


def crop_matrix(
    landmarks: np.ndarray,
    size: int = CROP_SIZE,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    remove_roll: bool = True,
) -> np.ndarray:
    """3x3 similarity mapping the image onto a `size` x `size` crop around the face.

    The crop's vertical axis runs from the eye centre to the mouth centre (so head roll is
    removed); its side is `scale` times the larger extent of the landmarks in that frame,
    and its centre is shifted by `vx_ratio`/`vy_ratio` of the side (negative vy: the crop
    moves up, keeping more forehead).
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    eyes = (pts[LEFT_EYE_CENTRE].mean(0) + pts[RIGHT_EYE_CENTRE].mean(0)) / 2
    mouth = (pts[MOUTH_CORNERS[0]] + pts[MOUTH_CORNERS[1]]) / 2
    down = mouth - eyes
    norm = np.linalg.norm(down)
    down = down / norm if norm > 1e-3 else np.array([0.0, 1.0])
    right = np.array([down[1], -down[0]])
    rot = np.stack([right, down])  # rows: the crop's x and y axes in image coordinates

    mean = pts.mean(0)
    local = (pts - mean) @ rot.T
    lo, hi = local.min(0), local.max(0)
    side = scale * float((hi - lo).max())
    centre = mean + rot.T @ ((lo + hi) / 2)
    centre = centre + side * (vx_ratio * right + vy_ratio * down)

    if not remove_roll:
        rot = np.eye(2)
    s = size / side
    m = np.eye(3)
    m[:2, :2] = s * rot
    m[:2, 2] = size / 2 - s * rot @ centre
    return m


def eye_open_ratios(landmarks: np.ndarray) -> np.ndarray:
    """(left, right) lid distance over corner distance, from 106 landmarks."""

    def ratio(a: tuple[int, int], b: tuple[int, int]) -> float:
        num = np.linalg.norm(landmarks[a[0]] - landmarks[a[1]])
        return float(num / (np.linalg.norm(landmarks[b[0]] - landmarks[b[1]]) + 1e-6))

    return np.array(
        [ratio(LEFT_EYE_LIDS, LEFT_EYE_CORNERS), ratio(RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS)],
        dtype=np.float32,
    )


def lip_open_ratio(landmarks: np.ndarray) -> float:
    """Inner-lip gap over mouth width, from 106 landmarks."""
    gap = np.linalg.norm(landmarks[INNER_LIPS[0]] - landmarks[INNER_LIPS[1]])
    return float(gap / (np.linalg.norm(landmarks[MOUTH_CORNERS[0]] - landmarks[MOUTH_CORNERS[1]]) + 1e-6))


@dataclass
class FaceCrop:
    """One face prepared for the networks, and what is needed to put the result back."""

    image: np.ndarray  # INPUT_SIZE x INPUT_SIZE x 3, RGB uint8 (the networks' input)
    image_to_crop: np.ndarray  # 3x3, original image -> CROP_SIZE crop
    landmarks: np.ndarray  # 106 x 2, in the original image
    eye_open: np.ndarray  # (2,) left, right
    lip_open: float


def crop_face(
    image_bgr: np.ndarray,
    landmarks: np.ndarray,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    remove_roll: bool = True,
) -> FaceCrop:
    """Cut the LivePortrait crop out of a BGR image given its 106 landmarks."""
    m = crop_matrix(landmarks, CROP_SIZE, scale, vx_ratio, vy_ratio, remove_roll)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    big = cv2.warpAffine(rgb, m[:2], (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)
    small = cv2.resize(big, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return FaceCrop(small, m, np.asarray(landmarks, np.float32), eye_open_ratios(landmarks),
                    lip_open_ratio(landmarks))


def blend_mask(size: int = CROP_SIZE, margin: float = 0.02, blur: float = 0.012) -> np.ndarray:
    """Soft square (1 inside, 0 at the border) for pasting the generated crop back."""
    mask = np.zeros((size, size), np.float32)
    m = max(1, round(margin * size))
    mask[m:-m, m:-m] = 1.0
    sigma = max(0.5, blur * size)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def paste_back(face_bgr: np.ndarray, image_to_crop: np.ndarray, original: np.ndarray,
               mask: np.ndarray) -> np.ndarray:
    """Warp the generated CROP_SIZE face into the original image and blend it with `mask`."""
    h, w = original.shape[:2]
    back = np.linalg.inv(image_to_crop)[:2]
    face = cv2.warpAffine(face_bgr, back, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, back, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = alpha * face.astype(np.float32) + (1 - alpha) * original.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)

