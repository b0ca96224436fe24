"""Metric code against hand-computed answers: verification (k-fold, ROC AUC, TAR@FAR),
identification (rank-k), pose binning, and the pair samplers of the protocols."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from frontal_exp.data.base import Item, LoadedDataset
from frontal_exp.metrics.identification import cmc, identity_scores, rank_k_accuracy, true_ranks
from frontal_exp.metrics.pose_bins import assign_bins, pose_bin_table
from frontal_exp.metrics.verification import (
    accuracy_at,
    best_threshold,
    kfold_accuracy,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_metrics,
)


# -- verification ------------------------------------------------------------------------
def test_best_threshold_is_the_midpoint_of_the_gap():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    assert best_threshold(scores, labels) == pytest.approx(0.45)
    assert accuracy_at(scores, labels, 0.45) == 1.0
    assert accuracy_at(scores, labels, 0.65) == pytest.approx(5 / 6)


def test_ten_fold_accuracy_with_one_hard_pair():
    """Ten folds of (same 0.8, 0.9; different 0.1, 0.2); in fold 0 one same pair scores 0.05.
    Every fold's threshold (picked on the other nine) is 0.5: fold 0 scores 3/4, the rest 1,
    so the mean is 0.975 and the (population) std 0.075."""
    scores, labels, folds = [], [], []
    for k in range(10):
        scores += [0.05 if k == 0 else 0.8, 0.9, 0.1, 0.2]
        labels += [True, True, False, False]
        folds += [k] * 4
    res = kfold_accuracy(np.array(scores), np.array(labels), np.array(folds))
    np.testing.assert_allclose(res.thresholds, 0.5)
    np.testing.assert_allclose(res.accuracies, [0.75] + [1.0] * 9)
    assert res.mean == pytest.approx(0.975)
    assert res.std == pytest.approx(0.075)


def _accuracy(scores, labels, threshold) -> float:
    """Share of pairs classified right, one by one ('same' when score >= threshold)."""
    return sum((s >= threshold) == y for s, y in zip(scores, labels, strict=True)) / len(scores)


def _best_thresholds(scores, labels) -> list[float]:
    """Every threshold of highest accuracy, by trying each score (and one above all)."""
    candidates = sorted(set(scores)) + [math.inf]
    accs = [_accuracy(scores, labels, t) for t in candidates]
    return [t for t, a in zip(candidates, accs, strict=True) if a == max(accs)]


#: three folds on very different score scales: each fold's own best threshold is far from the
#: others', so a threshold picked on all pairs (leaking the test fold) changes the answer
SHIFTED_FOLDS = {
    0: ([0.52, 0.48, 0.42, 0.39], [0.23, 0.19, 0.12, -0.04]),
    1: ([0.26, 0.18, 0.03], [-0.10, -0.24, -0.31]),
    2: ([-0.25, -0.39], [-0.58, -0.60]),
}


def test_kfold_picks_each_threshold_without_the_test_fold():
    """Expected accuracies come from a brute force over thresholds on the OTHER folds."""
    scores, labels, folds = [], [], []
    for k, (same, different) in SHIFTED_FOLDS.items():
        scores += same + different
        labels += [True] * len(same) + [False] * len(different)
        folds += [k] * (len(same) + len(different))
    expected, leaky = [], []
    leaky_best = _best_thresholds(scores, labels)
    assert len(leaky_best) == 1  # the data leave no tie to break
    for k in SHIFTED_FOLDS:
        train = [(s, y) for s, y, f in zip(scores, labels, folds, strict=True) if f != k]
        test = [(s, y) for s, y, f in zip(scores, labels, folds, strict=True) if f == k]
        best = _best_thresholds(*zip(*train, strict=True))
        assert len(best) == 1
        expected.append(_accuracy(*zip(*test, strict=True), best[0]))
        leaky.append(_accuracy(*zip(*test, strict=True), leaky_best[0]))
    assert expected != leaky  # the data can tell a leaky implementation apart
    res = kfold_accuracy(np.array(scores), np.array(labels), np.array(folds))
    np.testing.assert_allclose(res.accuracies, expected)
    # each threshold is one of the best on its training folds
    for k, th in zip(SHIFTED_FOLDS, res.thresholds, strict=True):
        train = [(s, y) for s, y, f in zip(scores, labels, folds, strict=True) if f != k]
        tr_scores, tr_labels = zip(*train, strict=True)
        assert _accuracy(tr_scores, tr_labels, th) == _accuracy(tr_scores, tr_labels,
                                                                _best_thresholds(tr_scores, tr_labels)[0])


def test_roc_auc_counts_ordered_pairs():
    # same-person pairs beat 8 of the 9 (same, different) combinations
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0], bool)
    assert roc_auc(scores, labels) == pytest.approx(8 / 9)
    far, tar, th = roc_curve(scores, labels)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    # ties count one half
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0], bool)) == pytest.approx(0.5)


def test_roc_auc_matches_sklearn_on_random_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 1.0), 2)  # rounding makes ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_tar_at_far_on_a_constructed_score_set():
    """1000 impostors at 0.000 .. 0.999: FAR 1e-3 allows one (threshold 0.999), 1e-2 ten
    (any threshold down to 0.9891); 10 genuine pairs pass the first, 10 + 30 the second
    (the 20 at 0.9885 would need an 11th impostor)."""
    negatives = np.arange(1000) / 1000
    positives = np.array([1.5] * 10 + [0.995] * 30 + [0.9885] * 20 + [0.5] * 40)
    scores = np.r_[positives, negatives]
    labels = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    assert tar_at_far(scores, labels, 1e-3) == pytest.approx(0.1)
    assert tar_at_far(scores, labels, 1e-2) == pytest.approx(0.4)
    m = verification_metrics(scores, labels, np.arange(scores.size) % 10)
    assert m["tar_far_0.001"] == pytest.approx(0.1) and m["tar_far_0.01"] == pytest.approx(0.4)
    assert m["n_folds"] == 10 and 0 < m["auc"] < 1


def test_perfectly_separated_scores():
    scores = np.r_[np.linspace(0.5, 0.9, 20), np.linspace(-0.2, 0.2, 20)]
    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    m = verification_metrics(scores, labels, np.arange(40) % 10)
    assert m["acc_mean"] == 1.0 and m["acc_std"] == 0.0 and m["auc"] == 1.0 and m["tar_far_0.001"] == 1.0


# -- identification ----------------------------------------------------------------------
def test_rank_k_on_a_constructed_gallery():
    e = np.eye(4)
    # gallery: a, b (two images), c
    gallery = np.stack([e[0], e[1], e[2], e[3]])
    gallery_ids = ["a", "b", "b", "c"]
    q = np.array([
        [0.9, 0.1, 0.0, 0.0],   # a: a is closest                      -> rank 1
        [0.5, 0.0, 0.6, 0.2],   # b: via its second image (0.6) > a    -> rank 1
        [0.7, 0.6, 0.0, 0.3],   # c: a and b beat it                   -> rank 3
        [0.4, 0.4, 0.0, 0.0],   # a: tied with b, ties do not cost     -> rank 1
        [0.0, 0.2, 0.0, 0.1],   # c: b beats it                        -> rank 2
    ])
    scores, names = identity_scores(q, gallery, gallery_ids)
    assert names == ["a", "b", "c"]
    # cosines: the query's dot products over its norm (the gallery rows are unit vectors)
    np.testing.assert_allclose(scores[1], np.array([0.5, 0.6, 0.2]) / math.sqrt(0.5**2 + 0.6**2 + 0.2**2))
    # scaling a query or a gallery image does not change a similarity
    scaled, _ = identity_scores(7 * q, 0.5 * gallery, gallery_ids)
    np.testing.assert_allclose(scaled, scores)
    ranks = true_ranks(scores, np.array([names.index(t) for t in ["a", "b", "c", "a", "c"]]))
    assert ranks.tolist() == [1, 1, 3, 1, 2]
    assert rank_k_accuracy(ranks, 1) == pytest.approx(3 / 5)
    assert rank_k_accuracy(ranks, 2) == pytest.approx(4 / 5)
    assert rank_k_accuracy(ranks, 5) == 1.0
    np.testing.assert_allclose(cmc(ranks, 3), [0.6, 0.8, 1.0])


# -- pose bins ---------------------------------------------------------------------------
def test_assign_bins_edges_are_half_open_last_closed():
    edges = (0, 10, 20, 30, 45, 60, 90)
    got = assign_bins(np.array([0, 9.99, 10, -15, 45, -90, 90.5, np.nan]), edges)
    assert got.tolist() == [0, 0, 1, 1, 4, 5, -1, -1]


def test_pose_bin_table_on_constructed_records():
    yaw = np.array([-5, 5, 15, -25, 28, 50, 95, np.nan, 12])
    a = np.array([0.5, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0, 0.5, np.nan])  # last: not paired
    b = np.array([0.4, 0.6, 0.6, 0.4, 0.3, 0.4, 0.1, 0.7, 0.9])
    t = pose_bin_table(yaw, a, b, (0, 10, 20, 30, 90), n_boot=50).set_index("bin")
    assert t.index.tolist() == ["0-10", "10-20", "20-30", "30-90", "unknown", "outside"]
    assert t.n.tolist() == [2, 1, 2, 1, 1, 1]
    assert t.loc["0-10", "angle_to_gt"] == pytest.approx(0.55)
    assert t.loc["0-10", "frontal_to_gt"] == pytest.approx(0.5)
    assert t.loc["0-10", "net_gain"] == pytest.approx(-0.05)
    assert t.loc["20-30", "net_gain"] == pytest.approx(0.1)
    assert t.loc["20-30", "win_rate"] == pytest.approx(1.0)
    assert t.loc["30-90", "net_gain"] == pytest.approx(0.3)
    empty = pose_bin_table(yaw, a, b, (60, 70), n_boot=10)
    assert empty.loc[0, "n"] == 0 and np.isnan(empty.loc[0, "net_gain"])


# -- pair samplers -----------------------------------------------------------------------
def small_dataset(people: int = 3, angles: int = 3, extra: int = 2) -> LoadedDataset:
    items = [Item(f"p{i}/a{j}", f"p{i}", Path(f"/d/p{i}/a{j}.jpg"), Path(f"/d/p{i}/gt.jpg"), 20.0 * j)
             for i in range(people) for j in range(angles)]
    extras = {f"p{i}": [Path(f"/d/p{i}/f{k}.jpg") for k in range(extra)] for i in range(people)}
    return LoadedDataset("t", items, [], extras)


def test_robustness_pairs_counts_and_cap():
    from frontal_exp.protocols.robustness import robustness_pairs

    pairs = robustness_pairs(small_dataset(), max_pairs=None, seed=0)
    assert len(pairs["angle_vs_gt"]) == 9
    assert len(pairs["angle_vs_angle"]) == 3 * 3  # C(3,2) per person
    assert len(pairs["gt_vs_gt"]) == 3 * 3  # GT + 2 extra frontals: C(3,2) per person
    assert len(pairs["impostor"]) == 9
    for a, b in pairs["impostor"]:
        assert Path(a).parent.name != Path(b).parent.name and Path(b).name != "a0.jpg"
    capped = robustness_pairs(small_dataset(), max_pairs=4, seed=0)
    assert all(len(v) == 4 for v in capped.values())
    assert capped == robustness_pairs(small_dataset(), max_pairs=4, seed=0)  # seeded


def test_parse_lfw_pairs(tmp_path):
    from frontal_exp.protocols.verification import parse_pairs

    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nBob\t1\t3\nCy\t2\tAnn\t1\n")
    pairs = parse_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert [(p.same, p.fold) for p in pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert pairs[1].path_a.endswith("lfw/Ann/Ann_0001.jpg") and pairs[1].path_b.endswith("lfw/Bob/Bob_0003.jpg")


def test_generated_verification_pairs_are_balanced():
    from frontal_exp.protocols.verification import generate_pairs

    pairs = generate_pairs(small_dataset(people=8), folds=3, max_pairs=40, seed=1)
    same = [p for p in pairs if p.same]
    diff = [p for p in pairs if not p.same]
    assert len(same) == len(diff) == 20
    assert all(Path(p.path_a).parent == Path(p.path_b).parent for p in same)
    assert all(Path(p.path_a).parent != Path(p.path_b).parent for p in diff)
    assert sorted({p.fold for p in pairs}) == [0, 1, 2]
    for k in range(3):  # as many different-person as same-person pairs in every fold
        assert sum(p.same for p in pairs if p.fold == k) == sum(not p.same for p in pairs if p.fold == k)
    assert pairs == generate_pairs(small_dataset(people=8), folds=3, max_pairs=40, seed=1)  # seeded


def test_generated_verification_folds_are_disjoint_by_identity():
    """No identity appears in two folds: the threshold picked on the other folds never saw
    the people of the fold it is tested on."""
    from frontal_exp.protocols.verification import generate_pairs

    for seed in range(3):
        pairs = generate_pairs(small_dataset(people=9), folds=4, max_pairs=None, seed=seed)
        folds_of: dict[str, set[int]] = {}
        for p in pairs:
            for path in (p.path_a, p.path_b):
                folds_of.setdefault(Path(path).parent.name, set()).add(p.fold)
        assert len(folds_of) == 9 and all(len(f) == 1 for f in folds_of.values()), folds_of
        assert {p.fold for p in pairs} == {0, 1, 2, 3}


def test_generated_verification_folds_need_two_identities_each():
    from frontal_exp.errors import DatasetError
    from frontal_exp.protocols.verification import generate_pairs

    # 5 people make 2 folds at most (two people each at least), whatever is asked for
    pairs = generate_pairs(small_dataset(people=5), folds=10, max_pairs=None, seed=0)
    assert {p.fold for p in pairs} == {0, 1}
    with pytest.raises(DatasetError, match="at least 4 identities"):
        generate_pairs(small_dataset(people=3), folds=3, max_pairs=None, seed=0)


def test_generated_verification_pairs_reach_every_fold_when_one_person_dominates():
    """One person with 20 photos, five with one: same-person pairs are shared over the folds,
    not drawn where most of them are (which would leave folds without pairs)."""
    from frontal_exp.protocols.verification import generate_pairs

    big = [Item(f"big/a{j}", "big", Path(f"/d/big/a{j}.jpg"), Path("/d/big/gt.jpg")) for j in range(20)]
    small = [Item(f"p{i}/a0", f"p{i}", Path(f"/d/p{i}/a0.jpg"), Path(f"/d/p{i}/gt.jpg")) for i in range(5)]
    pairs = generate_pairs(LoadedDataset("t", big + small, [], {}), folds=3, max_pairs=20, seed=0)
    for k in range(3):
        fold = [p for p in pairs if p.fold == k]
        assert any(p.same for p in fold) and any(not p.same for p in fold), k
    assert sum(p.same for p in pairs) == 10
