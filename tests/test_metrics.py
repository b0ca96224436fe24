"""Statistics and summary metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frontal_exp.data.base import Skip
from frontal_exp.evaluation import summarize
from frontal_exp.metrics.stats import bootstrap_ci, paired_comparison, wilcoxon_p
from frontal_exp.pipeline import ItemRecord
from frontal_exp.protocols.frontalization import PROBLEM_COUNTS


def test_paired_comparison_hand_values():
    a = np.array([0.2, 0.4, 0.6, 0.8])
    b = np.array([0.3, 0.3, 0.9, 0.9])
    c = paired_comparison(a, b, n_boot=500, seed=1)
    assert c.n == 4
    assert c.mean_a == pytest.approx(0.5)
    assert c.mean_b == pytest.approx(0.6)
    assert c.mean_diff == pytest.approx(0.1)  # diffs 0.1, -0.1, 0.3, 0.1
    assert c.win_rate == pytest.approx(0.75) and c.tie_rate == 0.0
    ties = paired_comparison(np.array([0.5, 0.5, 0.2]), np.array([0.5, 0.6, 0.1]), n_boot=10)
    assert ties.win_rate == pytest.approx(1 / 3) and ties.tie_rate == pytest.approx(1 / 3)
    assert c.ci_low <= 0.1 <= c.ci_high
    # the bootstrap of a mean cannot leave the range of the data
    assert c.ci_low >= -0.1 and c.ci_high <= 0.3


def test_bootstrap_ci_shrinks_with_n_and_covers_mean():
    rng = np.random.default_rng(0)
    small = rng.normal(0.05, 0.1, 20)
    large = rng.normal(0.05, 0.1, 2000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=1000)
    lo_l, hi_l = bootstrap_ci(large, n_boot=1000)
    assert hi_l - lo_l < (hi_s - lo_s) / 4
    assert lo_l < large.mean() < hi_l
    # the width is about 2 * 1.96 * sd / sqrt(n)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * large.std() / math.sqrt(2000), rel=0.15)


def test_bootstrap_is_seeded_and_handles_edge_cases():
    x = np.arange(10.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    assert bootstrap_ci(np.array([0.5])) == (0.5, 0.5)


def test_wilcoxon():
    assert math.isnan(wilcoxon_p(np.zeros(5)))
    assert wilcoxon_p(np.linspace(0.1, 0.5, 12)) < 0.01  # all positive: significant
    assert wilcoxon_p(np.array([0.1, -0.1, 0.2, -0.2, 0.05, -0.05])) > 0.5


def _rec(i, a, f, status="ok", problems=""):
    r = ItemRecord(f"i{i}", "p", "a.png", "g.png", angle_to_gt=a, frontal_to_gt=f)
    r.status, r.problems = status, problems or ("" if status == "ok" else status)
    return r


def test_summarize_pairs_items_and_counts_failures():
    records = [
        _rec(0, 0.5, 0.7),
        _rec(1, 0.4, 0.3),
        _rec(2, 0.6, None, "no_face_frontal"),  # frontal lost: not paired
        _rec(3, None, None, "no_face_angle", "no_face_angle,no_face_frontal"),
        _rec(4, None, None, "unreadable_angle"),
    ]
    m = summarize(records, [Skip("x", "no_gt")], n_boot=200)
    assert m["n_items"] == 5 and m["n"] == 2 and m["not_paired"] == 3
    assert m["angle_to_gt"] == pytest.approx(0.45)
    assert m["frontal_to_gt"] == pytest.approx(0.5)
    assert m["net_gain"] == pytest.approx(0.05)
    assert m["win_rate"] == pytest.approx(0.5)
    # one reason per item, its status: item 3 lacks both faces but counts under no_face_angle only
    assert m["no_face_frontal"] == 1 and m["no_face_angle"] == 1 and m["unreadable_angle"] == 1
    assert sum(m[p] for p in PROBLEM_COUNTS) == m["not_paired"]
    assert m["dataset_skipped"] == 1
    # the survivors' mean of angle_to_gt includes item 2, which has no frontal
    assert m["angle_to_gt_all"] == pytest.approx(0.5) and m["n_angle_to_gt_all"] == 3
