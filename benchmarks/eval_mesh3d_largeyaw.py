"""Net Gain of mesh3d settings by |yaw| bin on real large-yaw photos (embedded embedder pair).

    python benchmarks/eval_mesh3d_largeyaw.py [--root ../shared/data/largeyaw] \
        [--setting ""] [--setting "max_rotation=20,symmetry=0.5"] [--yaw 20,90] \
        [--figures /tmp/mesh3d_figs] [--items /tmp/mesh3d_items]

Each `--setting` is one mesh3d configuration: comma-separated key=value overrides of
conf/model/mesh3d.yaml ("" = the defaults; repeat the option to compare several). The data
set (folder per person, GT named by manifest.csv) is loaded once and the GT and angled
photos are embedded once (a throw-away cache shared by the settings, so no old cached
output is reused); each setting then runs through the study's own pipeline. Printed per
setting: N, mean cos(Angle, GT), mean cos(Frontal, GT) and Net Gain with its 95%
paired-bootstrap CI per |yaw| bin and overall, the items mesh3d returned unchanged because
its fit was implausible (fallbacks), failures, and the frontalizer's mean ms per face.
`--figures DIR` saves, per setting, a grid of angled | frontal face crops for the
largest-|yaw| items (settingK.png); `--items DIR` the per-item rows (settingK.csv, with
each item's `frontal_fallback` reason); `--yaw LO,HI` keeps only items with LO <= |yaw| < HI
(quick loops).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("LARGEYAW_ROOT", REPO.parent / "shared/data/largeyaw"))
BINS = (0, 10, 20, 30, 45, 90)


def parse_setting(text: str) -> dict:
    """'a=1,b=true' -> {'a': 1, 'b': True} (values parsed as YAML scalars)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise SystemExit(f"a setting is key=value[,key=value...], got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def make_mesh3d(overrides: dict):
    from hydra.utils import instantiate

    node = OmegaConf.load(REPO / "conf/model/mesh3d.yaml")
    unknown = set(overrides) - set(node.keys())
    if unknown:
        raise SystemExit(f"unknown mesh3d settings {sorted(unknown)}; known: {sorted(k for k in node if k != '_target_')}")
    node = OmegaConf.merge(node, overrides)
    return instantiate(node)


def make_embedder():
    from frontal_exp.embedders import FaceEmbedder
    from frontal_exp.embedders.detectors import InsightFaceDetector
    from frontal_exp.embedders.recognizers import ArcFaceRecognizer

    cfg = OmegaConf.load(REPO / "conf/embedder/scrfd500m_mbf.yaml")
    return FaceEmbedder(
        InsightFaceDetector(cfg.detector.model, det_size=cfg.detector.det_size,
                            det_thresh=cfg.detector.det_thresh, device="cpu"),
        ArcFaceRecognizer(cfg.recognizer.model, device="cpu"),
        name=cfg.name, select=cfg.select, pad=cfg.pad, max_side=cfg.max_side, flip=False,
    )


class Timed:
    """Wraps a frontalizer to time its calls (the pipeline sees the same object otherwise)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def frontalize_batch(self, images):
        t0 = time.perf_counter()
        out = self.inner.frontalize_batch(images)
        self.seconds += time.perf_counter() - t0
        self.calls += len(images)
        return out


def evaluate(frontalizer, items, embedder, cache_dir: Path, n_boot: int = 2000):
    """Run the pipeline; returns (records, pose-bin table, overall comparison, stats, ms/face)."""
    from frontal_exp.enhancers.simple import NoEnhancer
    from frontal_exp.metrics.pose_bins import pose_bin_table
    from frontal_exp.metrics.stats import paired_comparison
    from frontal_exp.pipeline import EvaluationPipeline

    timed = Timed(frontalizer)
    pipe = EvaluationPipeline(embedder, timed, NoEnhancer(), cache_dir=cache_dir, batch_size=16)
    out = pipe.run(items)
    paired = [r for r in out.records if r.paired]
    yaw = np.array([np.nan if r.yaw is None else r.yaw for r in paired])
    a = np.array([r.angle_to_gt for r in paired])
    b = np.array([r.frontal_to_gt for r in paired])
    table = pose_bin_table(np.abs(yaw), a, b, edges=BINS, n_boot=n_boot)
    overall = paired_comparison(a, b, n_boot=n_boot)
    ms = 1000 * timed.seconds / max(1, timed.calls)
    return out, table, overall, ms


def print_result(label: str, out, table, overall, ms: float) -> None:
    recs = out.records
    stats = out.cache_stats
    fallbacks = stats.get("frontalizer_fallback", sum(bool(getattr(r, "frontal_fallback", "")) for r in recs))
    failed = sum(r.status == "frontalize_failed" for r in recs)
    no_face = sum(r.status == "no_face_frontal" for r in recs)
    print(f"\n== {label}")
    print(f"items {len(recs)}  paired {overall.n}  frontalize failed {failed}  no face in frontal {no_face}  "
          f"fallbacks {fallbacks}  frontalize {ms:.0f} ms/face (incl. face mesh)")
    print(f"{'|yaw|':>7} {'N':>4} {'cos(A,GT)':>10} {'cos(F,GT)':>10} {'Net Gain':>9}  95% CI")
    for row in table.itertuples():
        if row.n == 0:
            continue
        print(f"{row.bin:>7} {row.n:4d} {row.angle_to_gt:10.4f} {row.frontal_to_gt:10.4f} {row.net_gain:+9.4f}"
              f"  [{row.net_gain_ci_low:+.4f}, {row.net_gain_ci_high:+.4f}]")
    print(f"{'all':>7} {overall.n:4d} {overall.mean_a:10.4f} {overall.mean_b:10.4f} {overall.mean_diff:+9.4f}"
          f"  [{overall.ci_low:+.4f}, {overall.ci_high:+.4f}]  win rate {overall.win_rate:.2f}")


def save_figure(path: Path, out, embedder, n: int = 12, size: int = 224) -> None:
    """Angled | frontal face crops (same crop box, from the angled photo's detection) for
    the n largest-|yaw| items, with their yaw and cosines to GT."""
    recs = sorted((r for r in out.records if r.yaw is not None), key=lambda r: -abs(r.yaw))[:n]
    tiles = []
    for r in recs:
        angle = cv2.imread(r.angle_path)
        frontal = out.frontal_cache.get(r.frontal_key) if r.frontal_key else None
        faces = embedder.detector.detect(angle)
        if faces:
            x1, y1, x2, y2 = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])).bbox
        else:
            x1, y1, x2, y2 = 0, 0, angle.shape[1], angle.shape[0]
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.9 * max(x2 - x1, y2 - y1)
        box = np.array([cx - half, cy - half, cx + half, cy + half])

        def crop(im, box=box):
            if im is None:
                return np.zeros((size, size, 3), np.uint8)
            m = np.float32([[size / (box[2] - box[0]), 0, -box[0] * size / (box[2] - box[0])],
                            [0, size / (box[3] - box[1]), -box[1] * size / (box[3] - box[1])]])
            return cv2.warpAffine(im, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)

        pair = np.hstack([crop(angle), crop(frontal)])
        label = f"{Path(r.angle_path).parent.name}/{Path(r.angle_path).stem} yaw {r.yaw:+.0f}"
        sims = f"A {r.angle_to_gt or float('nan'):.2f} F {r.frontal_to_gt or float('nan'):.2f}"
        for k, text in enumerate((label, sims)):
            cv2.putText(pair, text, (4, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3)
            cv2.putText(pair, text, (4, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
        tiles.append(pair)
    cols = 3
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    print(f"figure: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="folder per person + manifest.csv")
    parser.add_argument("--setting", action="append", default=None,
                        help='mesh3d overrides "k=v,k=v" ("" = defaults); repeat to compare settings')
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--yaw", default=None, metavar="LO,HI", help="only items with LO <= |yaw| < HI (quick loops)")
    parser.add_argument("--items", type=Path, default=None, help="write per-item rows (CSV) per setting here")
    parser.add_argument("--figures", type=Path, default=None, help="save angled | frontal grids here")
    args = parser.parse_args(argv)
    if not (args.root / "manifest.csv").is_file():
        raise SystemExit(f"{args.root} has no manifest.csv (pass --root or set LARGEYAW_ROOT)")
    settings = args.setting if args.setting is not None else [""]
    frontalizers = [(s or "defaults", make_mesh3d(parse_setting(s))) for s in settings]

    from frontal_exp.data.folder import FolderDataset

    data = FolderDataset(root=str(args.root), gt="manifest").load()
    if args.yaw:
        lo, hi = (float(v) for v in args.yaw.split(","))
        data.items = [it for it in data.items if it.yaw is not None and lo <= abs(it.yaw) < hi]
    print(f"{args.root}: {len(data.items)} items, {len(data.skipped)} skipped by the loader; "
          f"embedder scrfd500m_mbf (CPU); bins {list(BINS)} deg of |yaw| (manifest)")
    embedder = make_embedder()
    with tempfile.TemporaryDirectory(prefix="eval_mesh3d_") as tmp:
        for k, (label, frontalizer) in enumerate(frontalizers):
            out, table, overall, ms = evaluate(frontalizer, data.items, embedder, Path(tmp), args.bootstrap)
            print_result(label, out, table, overall, ms)
            if args.items:
                args.items.mkdir(parents=True, exist_ok=True)
                out_rows = [r.row() for r in out.records]
                import csv

                with open(args.items / f"setting{k}.csv", "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
                    writer.writeheader()
                    writer.writerows(out_rows)
            if args.figures:
                save_figure(args.figures / f"setting{k}.png", out, embedder)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
