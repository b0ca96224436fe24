"""Fusion Gain (fused probe normalize(e_angle + w e_frontal) vs the angle) per run and per pose
bin, with paired-bootstrap CIs and the break-even angle, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from frontal_exp.data.base import Item
from frontal_exp.embedders.base import Face
from frontal_exp.embedders.embedder import FaceEmbedding
from frontal_exp.enhancers.simple import NoEnhancer
from frontal_exp.evaluation import summarize
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.images import write_image
from frontal_exp.metrics.pose_bins import break_even, pose_bin_table
from frontal_exp.metrics.stats import bootstrap_ci
from frontal_exp.pipeline import EvaluationPipeline, ItemRecord
from frontal_exp.protocols.analyses import by_pose
from frontal_exp.protocols.frontalization import EvalResult, format_results

DIM = 8


class TableEmbedder:
    """A stand-in embedder: every image is one flat grey level, whose embedding is looked up in
    a table of hand-made vectors (not unit norm: the fusion must normalise each side itself)."""

    name = "table"

    def __init__(self, vectors: dict[int, np.ndarray]) -> None:
        self.vectors = vectors

    def cache_key(self) -> str:
        return "table-embedder"

    def embed_images(self, images: list[np.ndarray]) -> list[FaceEmbedding]:
        face = Face(bbox=np.array([0, 0, 16, 16.0]), kps=np.zeros((5, 2)), det_score=1.0)
        return [FaceEmbedding(self.vectors[int(im[0, 0, 0])].astype(np.float32), face) for im in images]


class Brighter(Frontalizer):
    """The "frontal" image of grey level v is grey level v + 1 (its own embedding)."""

    name = "brighter"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image + 1


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def fusion_setup(tmp_path_factory):
    """Two people, four angled photos each; grey levels: GTs 200, 210; angles 10, 20, ..."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("grey")
    vectors: dict[int, np.ndarray] = {}
    items = []
    for p, gt_level in enumerate((200, 210)):
        gt_path = root / f"gt{p}.png"
        write_image(gt_path, np.full((16, 16, 3), gt_level, np.uint8))
        centre = rng.normal(size=DIM)
        vectors[gt_level] = centre * 3.0
        for k in range(4):
            level = 10 + 40 * p + 10 * k
            path = root / f"a{level}.png"
            write_image(path, np.full((16, 16, 3), level, np.uint8))
            vectors[level] = (centre + rng.normal(scale=1.2, size=DIM)) * rng.uniform(0.5, 2)
            vectors[level + 1] = (centre + rng.normal(scale=1.0, size=DIM)) * rng.uniform(0.5, 2)
            items.append(Item(f"p{p}/{k}", f"p{p}", path, gt_path, yaw=float(15 * k), pitch=0.0))
    return items, vectors, tmp_path_factory.mktemp("cache")


def expected_fused(vectors: dict[int, np.ndarray], level: int, gt: int, w: float) -> float:
    fused = _unit(vectors[level]) + w * _unit(vectors[level + 1])
    return float(_unit(fused) @ _unit(vectors[gt]))


@pytest.mark.parametrize("weight", [0.5, 0.8])
def test_fused_to_gt_per_item_and_fusion_gain(fusion_setup, weight):
    items, vectors, cache = fusion_setup
    pipe = EvaluationPipeline(TableEmbedder(vectors), Brighter(), NoEnhancer(), cache, fusion_weight=weight)
    out = pipe.run(items)
    fused, angle = [], []
    for rec, it in zip(out.records, items, strict=True):
        level, gt = int(it.angle_path.stem[1:]), int(200 + 10 * int(it.identity[1]))
        assert rec.paired
        assert rec.angle_to_gt == pytest.approx(float(_unit(vectors[level]) @ _unit(vectors[gt])), abs=1e-6)
        assert rec.fused_to_gt == pytest.approx(expected_fused(vectors, level, gt, weight), abs=1e-6)
        assert rec.row()["fused_to_gt"] == rec.fused_to_gt
        fused.append(expected_fused(vectors, level, gt, weight))
        angle.append(rec.angle_to_gt)
    diff = np.array(fused) - np.array(angle)
    m = summarize(out.records, [], n_boot=300, seed=4)
    assert m["fused_to_gt"] == pytest.approx(np.mean(fused), abs=1e-6)
    assert m["fusion_gain"] == pytest.approx(diff.mean(), abs=1e-6)
    assert m["fusion_gain"] != pytest.approx(m["net_gain"], abs=1e-3)
    assert (m["fusion_gain_ci_low"], m["fusion_gain_ci_high"]) == pytest.approx(bootstrap_ci(diff, 300, 4), abs=1e-6)
    assert m["fusion_win_rate"] == pytest.approx((diff > 0).mean())
    text = format_results(m, {"model": "brighter", "net_gain_break_even_yaw": "30",
                              "fusion_gain_break_even_yaw": "none"}).splitlines()
    assert text[0] == "model=brighter"
    assert text[4].strip().startswith("Net Gain:") and text[5].strip().startswith("Fusion Gain:")
    assert "break-even |yaw|: Net Gain 30, Fusion Gain none" in text[-1]


def test_zero_weight_fuses_to_the_angle_alone(fusion_setup):
    items, vectors, cache = fusion_setup
    out = EvaluationPipeline(TableEmbedder(vectors), Brighter(), NoEnhancer(), cache, fusion_weight=0.0).run(items)
    m = summarize(out.records, [], n_boot=50)
    assert m["fusion_gain"] == pytest.approx(0.0, abs=1e-6)


def test_fusion_weight_comes_from_the_config(make_cfg):
    from frontal_exp.protocols.frontalization import build_pipeline

    assert make_cfg().eval.fusion_weight == 0.5
    cfg = make_cfg("eval.fusion_weight=0.25", "model=identity")
    assert build_pipeline(cfg).fusion_weight == 0.25


# -- by pose: per-bin CIs and the break-even angle -----------------------------------------

EDGES = [0, 10, 20, 30, 45, 60, 90]


def synthetic_records(seed: int = 0, top_gain: float = 0.05) -> list[ItemRecord]:
    """12 items per |yaw| bin: Net Gain -0.04 below 30 deg, +0.03 (low noise) from 30 up to
    60 and `top_gain` at 60-90; Fusion Gain +0.02 everywhere."""
    rng = np.random.default_rng(seed)
    recs = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        for k in range(12):
            yaw = rng.uniform(lo, hi) * (1 if k % 2 else -1)
            a = rng.uniform(0.3, 0.6)
            gain = -0.04 if lo < 30 else (0.03 if lo < 60 else top_gain)
            recs.append(ItemRecord(f"{lo}-{k}", "p", "x", "g", yaw=yaw, pitch=rng.uniform(-5, 5),
                                   angle_to_gt=a, frontal_to_gt=a + gain + rng.normal(0, 0.005),
                                   fused_to_gt=a + 0.02 + rng.normal(0, 0.003)))
    recs.append(ItemRecord("lost", "p", "x", "g", yaw=50.0, angle_to_gt=0.9, status="no_face_frontal"))
    return recs


def by_pose_of(recs: list[ItemRecord]):
    cfg = OmegaConf.create({"eval": {"bootstrap": 400}, "seed": 1, "protocol": {"pose_bins": EDGES}})
    result = EvalResult(metrics={}, params={"model": "m", "enhancer": "e", "embedder": "x", "dataset": "d"},
                        records=recs)
    return by_pose(result, cfg)


def test_by_pose_has_ci_per_bin_for_both_gains_and_the_break_even_yaw():
    recs = synthetic_records()
    out = by_pose_of(recs)
    table = out.tables["by_yaw"]
    paired = [r for r in recs if r.paired]
    for row in table.itertuples():
        inside = [r for r in paired if row.lo <= abs(r.yaw) < row.hi or (row.hi == 90 and abs(r.yaw) == 90)]
        net = np.array([r.frontal_to_gt - r.angle_to_gt for r in inside])
        fus = np.array([r.fused_to_gt - r.angle_to_gt for r in inside])
        assert row.n == len(inside) == 12
        assert row.net_gain == pytest.approx(net.mean()) and row.fusion_gain == pytest.approx(fus.mean())
        assert (row.net_gain_ci_low, row.net_gain_ci_high) == pytest.approx(bootstrap_ci(net, 400, 1))
        assert (row.fusion_gain_ci_low, row.fusion_gain_ci_high) == pytest.approx(bootstrap_ci(fus, 400, 1))
        assert row.fused_to_gt == pytest.approx(np.mean([r.fused_to_gt for r in inside]))
    assert out.metrics["net_gain_break_even_yaw"] == 30.0 and out.params["net_gain_break_even_yaw"] == "30"
    assert out.metrics["fusion_gain_break_even_yaw"] == 0.0 and out.params["fusion_gain_break_even_yaw"] == "0"
    assert out.metrics["fusion_gain_yaw_30-45"] == pytest.approx(table.fusion_gain[3])
    img = out.figures["by_pose"]
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 10


def test_no_break_even_when_the_top_bin_loses():
    out = by_pose_of(synthetic_records(top_gain=-0.05))
    assert out.params["net_gain_break_even_yaw"] == "none"
    assert "net_gain_break_even_yaw" not in out.metrics
    # pitch: one bin (|pitch| < 5) holding every item, whose Net Gain is negative on average
    assert out.params["net_gain_break_even_pitch"] == "none"


def test_break_even_rule():
    def table(lows: list[float], ns: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"lo": [0, 10, 20, 30, float("nan")][: len(lows)], "n": ns, "net_gain_ci_low": lows,
                             "net_gain": [low + 0.05 for low in lows]})

    assert break_even(table([-0.1, 0.01, -0.02, 0.0], [5, 5, 5, 5])) == 30
    assert break_even(table([-0.1, 0.01, 0.02, 0.03], [5, 5, 5, 5])) == 10
    # a bin of one item has no CI: passed over
    assert break_even(table([-0.1, 0.01, -0.5, 0.03], [5, 5, 1, 5])) == 10
    assert break_even(table([0.1, 0.1, 0.1, -0.01], [5, 5, 5, 5])) is None
    # rows with no edges (unknown / outside) never count
    assert break_even(table([-0.1, -0.1, -0.1, -0.1, 0.5], [5, 5, 5, 5, 9])) is None


def test_pose_bin_table_without_fusion_leaves_its_columns_nan():
    t = pose_bin_table(np.array([5.0, 15.0]), np.array([0.5, 0.4]), np.array([0.6, 0.3]), [0, 10, 20], n_boot=10)
    assert t.fusion_gain.isna().all() and t.net_gain.tolist() == pytest.approx([0.1, -0.1])


def test_a_model_that_changes_nothing_has_no_break_even():
    # identity: every bin's gain is exactly 0 with CI [0, 0]; that is no gain
    table = pd.DataFrame({"lo": [0.0, 20.0, 40.0], "n": [5, 5, 5], "net_gain": [0.0, 0.0, 0.0],
                          "net_gain_ci_low": [0.0, 0.0, 0.0], "net_gain_ci_high": [0.0, 0.0, 0.0]})
    assert break_even(table) is None
    table["net_gain"] = 3e-17  # rounding, as identity's fused probe has
    assert break_even(table) is None
    table.loc[2, ["net_gain", "net_gain_ci_low", "net_gain_ci_high"]] = [0.02, 0.0, 0.04]
    assert break_even(table) == 40.0
