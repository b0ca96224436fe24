"""Figures of a run: Angled | Frontal | GT triplets with their scores, and failure cases."""

from __future__ import annotations

import cv2
import numpy as np

from frontal_exp.errors import BadImageError
from frontal_exp.images import read_image

TILE = 160
CAPTION = 40
#: height of the title bar over a grid of rows
TITLE_BAR = 28


def _tile(image: np.ndarray | None, label: str, colour=(255, 255, 255)) -> np.ndarray:
    tile = np.full((TILE + CAPTION, TILE, 3), 32, np.uint8)
    if image is not None:
        h, w = image.shape[:2]
        s = TILE / max(h, w)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        y, x = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
        tile[y : y + small.shape[0], x : x + small.shape[1]] = small
    else:
        cv2.putText(tile, "missing", (40, TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
    for k, line in enumerate(label.split("\n")[:2]):
        cv2.putText(tile, line[:26], (4, TILE + 15 + 17 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
    return tile


def _fmt(x: float | None) -> str:
    return "no face" if x is None else f"{x:.3f}"


def triplet_row(angle: np.ndarray | None, frontal: np.ndarray | None, gt: np.ndarray | None,
                record) -> np.ndarray:
    """One row: Angled | Frontal | GT, captioned with cosine similarities to GT."""
    gain = None
    if record.angle_to_gt is not None and record.frontal_to_gt is not None:
        gain = record.frontal_to_gt - record.angle_to_gt
    good = (120, 220, 120) if gain is not None and gain > 0 else (120, 120, 255)
    yaw = f" yaw {record.yaw:+.0f}" if record.yaw is not None else ""
    tiles = [
        _tile(angle, f"Angled{yaw}\nsim GT {_fmt(record.angle_to_gt)}"),
        _tile(frontal, f"Frontal\nsim GT {_fmt(record.frontal_to_gt)}"
              + (f" ({gain:+.3f})" if gain is not None else ""), good),
        _tile(gt, f"GT {record.identity}\n{record.status}"),
    ]
    return np.hstack(tiles)


def triplet_grid(rows: list[np.ndarray], title: str = "") -> np.ndarray:
    """Stack rows under a title bar."""
    if not rows:
        rows = [np.full((TILE + CAPTION, 3 * TILE, 3), 32, np.uint8)]
    grid = np.vstack(rows)
    bar = np.full((TITLE_BAR, grid.shape[1], 3), 0, np.uint8)
    cv2.putText(bar, title[:70], (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, grid])


def _safe_read(path: str) -> np.ndarray | None:
    try:
        return read_image(path)
    except BadImageError:
        return None


def records_figure(records, frontal_cache, title: str) -> np.ndarray:
    """Triplet grid for the given records, reading frontal outputs from the stage cache."""
    rows = []
    for rec in records:
        frontal = frontal_cache.get(rec.frontal_key) if rec.frontal_key else None
        rows.append(triplet_row(_safe_read(rec.angle_path), frontal, _safe_read(rec.gt_path), rec))
    return triplet_grid(rows, title)


def pick_samples(records, n: int, seed: int = 0) -> list:
    """A fixed (seeded) sample of records, the same across runs of a sweep."""
    rng = np.random.default_rng(seed)
    order = sorted(records, key=lambda r: r.item_id)
    if len(order) <= n:
        return order
    idx = sorted(rng.choice(len(order), size=n, replace=False))
    return [order[i] for i in idx]


def pick_failures(records, n: int) -> list:
    """Items where frontalization hurt most, then items whose frontal face was lost."""
    scored = [r for r in records if r.angle_to_gt is not None and r.frontal_to_gt is not None]
    worst = sorted(scored, key=lambda r: r.frontal_to_gt - r.angle_to_gt)[: max(1, n // 2)]
    lost = [r for r in records if not r.frontal_face and r.angle_face][: n - len(worst)]
    return (worst + lost)[:n]


def new_plot(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A matplotlib (figure, axes grid) drawn with Agg, without pyplot: no global backend
    state and no windows, so plots work in headless and parallel jobs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def plot_to_bgr(fig) -> np.ndarray:
    """A matplotlib figure (from `new_plot`) rendered to a BGR uint8 image."""
    fig.canvas.draw()
    return cv2.cvtColor(np.asarray(fig.canvas.buffer_rgba()), cv2.COLOR_RGBA2BGR)


def encode_image(image: np.ndarray, ext: str = ".png", max_width: int | None = None) -> bytes:
    """A BGR image as PNG (compressed hard) or JPEG (quality 85) file bytes, first downscaled
    to `max_width` pixels when wider."""
    if max_width and image.shape[1] > max_width:
        s = max_width / image.shape[1]
        image = cv2.resize(image, (max_width, max(1, round(image.shape[0] * s))), interpolation=cv2.INTER_AREA)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 85]
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as {ext}")
    return data.tobytes()


def grid_rows(grid: np.ndarray, n: int) -> np.ndarray:
    """The title bar and the first `n` rows of a `triplet_grid` image."""
    return grid[: TITLE_BAR + n * (TILE + CAPTION)]


def plot_to_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure (from `new_plot`) as PNG file bytes, cropped to what it draws
    (labels and legends outside the axes included)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
