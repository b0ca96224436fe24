"""Milliseconds per face of the DECA frontalizer on this machine, per step and end to end,
with detail off (the default) and on, with official-format random weights and a synthetic
FLAME of FLAME's size (about 5,000 vertices, 10,000 triangles; the cost depends on the
sizes, not on the values).

    python benchmarks/bench_deca.py [--device cpu|cuda|auto] [--batch-size 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from _common import timed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests._deca_files import write_head_files  # noqa: E402

from frontal_exp.frontalizers.deca import DecaFrontalizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    with tempfile.TemporaryDirectory() as tmp:
        write_head_files(tmp, seeded=False, rings=(70, 72))
        for detail in (False, True):
            _report(DecaFrontalizer(weights_dir=tmp, device=args.device, batch_size=args.batch_size,
                                    detail=detail), image, args)


def _report(fr: DecaFrontalizer, image: np.ndarray, args: argparse.Namespace) -> None:
    """Per-step and end-to-end times of one configuration."""
    if not fr.detail:
        print(f"device {fr._device}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
              f"image {image.shape[1]}x{image.shape[0]}, FLAME {len(fr.model.flame.v_template)} vertices / "
              f"{len(fr.model.flame.faces)} triangles, UV {fr.uv_size}")
    print(f"detail {'on' if fr.detail else 'off'}:")
    _ = fr.layout
    crop = fr.crop(image)
    crops = [crop] * args.batch_size
    code = fr.encode(crops)
    drawn, background, alpha = fr.draw(image, crop, code, 0)
    alpha_only = DecaFrontalizer(weights_dir=fr.models_dir, device=args.device, blend="alpha")
    steps = {
        "crop (detect + 106 landmarks)": (lambda: fr.crop(image), 1),
        "E_flame" + (" + E_detail + D_detail" if fr.detail else ""): (lambda: fr.encode(crops), args.batch_size),
        "texture, render" + (" (with detail gain)" if fr.detail else ""): (lambda: fr.draw(image, crop, code, 0), 1),
        "composite, seamless": (lambda: fr.composite(drawn, background, alpha), 1),
        "composite, alpha": (lambda: alpha_only.composite(drawn, background, alpha), 1),
    }
    if fr.detail:
        steps["  of which detail gain"] = (lambda: fr.detail_gain(code, 0), 1)
    for name, (fn, per) in steps.items():
        print(f"  {name:40s} {timed(fn, args.repeats) / per * 1000:9.1f} ms/face")
    e2e = timed(lambda: fr.frontalize_batch([image] * args.batch_size), args.repeats) / args.batch_size
    print(f"  end to end (seamless): {e2e * 1000:.1f} ms/face")

if __name__ == "__main__":
    main()
