"""The README's mesh3d figures: demo views of a package photo and mesh3d's output for each.

    python benchmarks/make_mesh3d_figures.py            # writes docs/images/mesh3d_<person>.jpg

Row 1: the demo set's GT crop and its synthetic views (requested yaw -40, -20, +20, +40, as
`dataset=demo` builds them); row 2: mesh3d with its defaults (rotation capped at
`max_rotation`); row 3: mesh3d rotating fully to frontal (`max_rotation=0`). Each tile is
labelled with the yaw the face mesh reads on it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.data.demo import DemoDataset
from frontal_exp.face3d.pose import estimate_head_pose
from frontal_exp.frontalizers.mesh3d import Mesh3DFrontalizer
from frontal_exp.images import read_image

TILE = 220


def tile(image: np.ndarray | None, text: str) -> np.ndarray:
    out = np.full((TILE, TILE, 3), 255, np.uint8) if image is None else cv2.resize(image, (TILE, TILE))
    if text:
        cv2.putText(out, text, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def yaw_text(prefix: str, image: np.ndarray) -> str:
    pose = estimate_head_pose(image)
    return f"{prefix}, yaw {pose.yaw:+.0f}" if pose is not None else f"{prefix}, no mesh"


def figure(root: Path, person: str, items: list[dict]) -> np.ndarray:
    capped, full = Mesh3DFrontalizer(), Mesh3DFrontalizer(max_rotation=0.0)
    mine = sorted((d for d in items if d["identity"] == person), key=lambda d: d["requested_yaw"])
    gt = read_image(root / mine[0]["gt"])
    rows = [[tile(gt, yaw_text("GT", gt))], [tile(None, "")], [tile(None, "")]]
    for d in mine:
        view = read_image(root / d["angle"])
        rows[0].append(tile(view, yaw_text(f"view {d['requested_yaw']:+.0f}", view)))
        for row, model, name in ((rows[1], capped, "mesh3d"), (rows[2], full, "full")):
            out = model(view)
            row.append(tile(out, yaw_text(name, out)))
    return np.vstack([np.hstack(r) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", nargs="+", default=["grace_hopper", "astronaut"])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images")
    parser.add_argument("--cache-dir", default=None, help="where the demo set is built (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = DemoDataset(cache_dir=args.cache_dir or tmp)
        data.load()
        items = json.loads((data.root / "manifest.json").read_text())["items"]
        args.out.mkdir(parents=True, exist_ok=True)
        for person in args.people:
            path = args.out / f"mesh3d_{person}.jpg"
            cv2.imwrite(str(path), figure(data.root, person, items), [cv2.IMWRITE_JPEG_QUALITY, 85])
            print(path)


if __name__ == "__main__":
    main()
