"""Robustness, verification and the frontalization analyses (by_pose, identification) run on
the demo set, on a small real tree and on ../shared/data/real_faces (when present); their
metrics, tables and figures land in MLflow."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from frontal_exp.config import instantiate_checked
from frontal_exp.errors import ConfigError, DatasetError, FrontalizationError
from frontal_exp.evaluation import evaluate
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.images import write_image
from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
from tests.conftest import mlflow_db, shared_cache_dir
from tests.test_end_to_end import artifact_paths

FAST = ["eval.bootstrap=100", "eval.grid_samples=3", "device=cpu"]


def shared_cache(tmp_path_factory) -> str:
    """A cache folder for the whole test run (all xdist workers): the demo set is built once
    (see test_report)."""
    return f"cache_dir={shared_cache_dir(tmp_path_factory)}"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One output root for the module: caches and the MLflow database (its schema made) are shared."""
    return mlflow_db(tmp_path_factory.mktemp("protocols") / "mlflow.db", tmp_path_factory).parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return shared_cache(tmp_path_factory)


def logged(root: Path, run_id: str) -> tuple[dict[str, float], set[str]]:
    client = MlflowClient(default_sqlite_uri(root))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    return run.data.metrics, artifact_paths(client, run_id)


# -- demo data, logged ---------------------------------------------------------------------
def test_robustness_on_demo_is_logged(make_cfg, root, cache):
    result = evaluate(make_cfg("protocol=robustness", "protocol.max_pairs=30", cache, *FAST, output_root=root))
    m = result.metrics
    assert m["angle_vs_gt_n"] == 30 and m["angle_vs_angle_n"] == 30 and m["impostor_n"] == 30
    assert m["gt_vs_gt_n"] == 0 and np.isnan(m["gt_vs_gt"])  # one frontal photo per demo person
    assert m["no_face_images"] == 0
    # same person (synthetic views of real faces) far above different people
    assert m["angle_vs_gt"] > 0.5 and m["angle_vs_angle"] > 0.5 and abs(m["impostor"]) < 0.15
    assert result.tables["robustness"].pair_kind.tolist() == ["angle_vs_gt", "angle_vs_angle", "gt_vs_gt", "impostor"]
    metrics, arts = logged(root, result.run_id)
    assert metrics["angle_vs_gt"] == pytest.approx(m["angle_vs_gt"])
    assert {"figures/robustness_hist.png", "tables/robustness.json", "tables/pairs.json"} <= arts


def test_verification_on_demo_is_logged(make_cfg, root, cache):
    result = evaluate(make_cfg("protocol=verification", "protocol.max_pairs=40", cache, *FAST,
                               output_root=root))
    m = result.metrics
    assert result.params["pairs"] == "generated"
    assert m["n_pairs"] == 40 and m["n_same"] == 20 and m["n_different"] == 20
    # generated folds are disjoint by identity (the demo's folder per person), two people each
    # at least: as many folds as that allows, up to the 10 asked for
    pairs = result.tables["verification_pairs"]
    people = pd.concat([pairs.path_a, pairs.path_b]).map(lambda p: Path(p).parent.name)
    folds = pd.concat([pairs.fold, pairs.fold])
    assert (folds.groupby(people.values).nunique() == 1).all()
    n_folds = min(10, people.nunique() // 2)
    for cond in ("original", "frontalized", "fused"):
        assert m[f"{cond}.n_scored"] == 40 and m[f"{cond}.n_folds"] == n_folds and m[f"{cond}.n_excluded"] == 0
        assert 0 <= m[f"{cond}.tar_far_0.001"] <= m[f"{cond}.tar_far_0.01"] <= 1
    assert m["original.acc_mean"] > 0.9 and m["original.auc"] > 0.95
    metrics, arts = logged(root, result.run_id)
    assert metrics["frontalized.auc"] == pytest.approx(m["frontalized.auc"])
    assert {"figures/roc.png", "figures/score_hist.png", "tables/verification.json",
            "tables/verification_folds.json", "tables/verification_pairs.json"} <= arts
    # the report's verification table shows the same counts, one row per condition
    from frontal_exp.report import load_runs, table_verification

    client = MlflowClient(default_sqlite_uri(root))
    runs = load_runs(client, "frontal_exp")
    table = table_verification(runs[runs.run_id == result.run_id], client, root / "dl")
    assert table.Condition.tolist() == ["original", "frontalized", "fused"]
    assert table.Scored.tolist() == [40, 40, 40] and table.Excluded.tolist() == [0, 0, 0]
    assert table.Folds.tolist() == [n_folds] * 3


def test_frontalization_analyses_on_demo_are_logged(make_cfg, root, cache):
    cfg = make_cfg("protocol.analyses=[by_pose,identification]", "dataset.limit=12", cache, *FAST,
                   output_root=root)
    result = evaluate(cfg)
    m = result.metrics
    by_yaw = result.tables["by_yaw"]
    assert by_yaw.n.sum() == m["n"]  # every paired item lands in one bin
    # each item sits in the bin of its (estimated) |yaw|
    items = result.tables["items"].dropna(subset=["yaw"])
    for _, row in by_yaw[by_yaw.n > 0].iterrows():
        inside = items[(items.status == "ok") & (items.yaw.abs() >= row.lo) & (items.yaw.abs() < row.hi)]
        assert len(inside) == row.n, row.bin
    weighted = (by_yaw.net_gain.fillna(0) * by_yaw.n).sum() / by_yaw.n.sum()
    assert weighted == pytest.approx(m["net_gain"])
    assert m["gallery_size"] >= 3 and m["n_identify"] == m["n"]
    assert m["rank1_angle"] >= 0.8 and m["rank5_frontal"] >= m["rank1_frontal"]
    ident = result.tables["identification"]
    assert ((ident.rank_frontal == 1) == (ident.top1_frontal == ident.identity)).all()
    # the fused probe, on the same items: its paired rank-1 wins and losses against the angle
    assert ((ident.rank_fused == 1) == (ident.top1_fused == ident.identity)).all()
    assert m["rank1_fused"] == pytest.approx((ident.rank_fused == 1).mean())
    wins = int(((ident.rank_fused == 1) & (ident.rank_angle > 1)).sum())
    losses = int(((ident.rank_fused > 1) & (ident.rank_angle == 1)).sum())
    assert (m["rank1_fused_wins"], m["rank1_fused_losses"]) == (wins, losses)
    assert m["rank1_fusion_gain"] == pytest.approx((wins - losses) / m["n_identify"])
    assert m["rank1_fusion_gain_ci_low"] <= m["rank1_fusion_gain"] <= m["rank1_fusion_gain_ci_high"]
    metrics, arts = logged(root, result.run_id)
    assert {"rank1_frontal", "rank1_fused", "rank1_fused_wins"} <= set(metrics) and any(k.startswith("net_gain_yaw_") for k in metrics)
    assert {"figures/by_pose.png", "figures/identification.png", "tables/by_yaw.json",
            "tables/by_pitch.json", "tables/identification.json"} <= arts


def test_unknown_analysis_fails_when_the_protocol_is_built(make_cfg):
    cfg = make_cfg("protocol.analyses=[by_yaw]")
    with pytest.raises(ConfigError, match="by_pose"):
        instantiate_checked(cfg.protocol, "protocol")


# -- a small real tree -----------------------------------------------------------------------
TREE = ["dataset=folder", "dataset.gt=pattern", "tracking.enabled=false"]


@pytest.fixture(scope="module")
def four_identities(tmp_path_factory, identity_tree, package_photos, embedder) -> Path:
    """The identity tree and a fourth person (frontal, flipped and small copies)."""
    import cv2

    from tests.conftest import face_crop

    root = tmp_path_factory.mktemp("four") / "people"
    shutil.copytree(identity_tree, root)
    crop = face_crop(package_photos["tom_hanks"], embedder)
    write_image(root / "tom_hanks" / "frontal.png", crop)
    write_image(root / "tom_hanks" / "flip.jpg", cv2.flip(crop, 1))
    write_image(root / "tom_hanks" / "small.jpg", cv2.resize(crop, (120, 120), interpolation=cv2.INTER_AREA))
    return root


def test_protocols_on_a_small_real_tree(make_cfg, identity_tree, four_identities, root):
    tree = [*TREE, f"dataset.root={identity_tree}", *FAST]
    rob = evaluate(make_cfg("protocol=robustness", *tree, output_root=root)).metrics
    assert rob["angle_vs_gt_n"] == 6 and rob["angle_vs_angle_n"] == 3 and rob["gt_vs_gt_n"] == 0
    assert rob["angle_vs_gt"] > 0.6 > 0.2 > rob["impostor"]
    # three people cannot make two folds disjoint by identity; four can
    with pytest.raises(DatasetError, match="at least 4 identities"):
        evaluate(make_cfg("protocol=verification", "protocol.folds=2", *tree, output_root=root))
    four = [*TREE, f"dataset.root={four_identities}", *FAST]
    ver = evaluate(make_cfg("protocol=verification", "protocol.folds=2", *four, output_root=root)).metrics
    assert ver["n_same"] == 12 and ver["n_different"] == 12 and ver["original.n_folds"] == 2
    assert ver["original.n_no_face"] == 0 and ver["original.auc"] > 0.9
    result = evaluate(make_cfg("protocol.analyses=[by_pose,identification]", "protocol.pose_bins=[0,45,90]",
                               "model=identity", *tree, output_root=root))
    m = result.metrics
    assert m["rank1_angle"] == m["rank1_frontal"] == 1.0  # identity model: the same faces
    by_yaw = result.tables["by_yaw"]
    assert by_yaw.n.sum() == m["n"] == 6 and by_yaw.bin.tolist()[:2] == ["0-45", "45-90"]


def lfw_tree(identity_tree: Path, where: Path) -> Path:
    """An LFW-shaped tree (and pairs.txt next to it) of the identity tree's photos: image 1 is
    the frontal crop, 2 its flipped copy, 3 a small (120 px) copy; yao_ming_0004 has no face.
    Two folds of 2 same + 2 different pairs; two pairs show the faceless image, three others
    a small one."""
    lfw = where / "lfw"
    for person in ("astronaut", "grace_hopper", "yao_ming"):
        (lfw / person).mkdir(parents=True)
        for k, name in enumerate(("frontal.png", "flip.jpg", "small.jpg"), start=1):
            shutil.copy(identity_tree / person / name, lfw / person / f"{person}_{k:04d}.jpg")
    write_image(lfw / "yao_ming" / "yao_ming_0004.jpg", np.full((120, 120, 3), 128, np.uint8))
    (where / "pairs.txt").write_text(
        "2\t2\n"
        "astronaut\t1\t2\nyao_ming\t1\t4\nastronaut\t1\tyao_ming\t2\ngrace_hopper\t1\tyao_ming\t4\n"
        "grace_hopper\t1\t3\nyao_ming\t2\t3\ngrace_hopper\t2\tastronaut\t3\nyao_ming\t1\tastronaut\t2\n")
    return lfw


def lfw_config(lfw: Path, *extra: str) -> list[str]:
    return ["dataset=lfw", f"dataset.root={lfw}", "protocol=verification", "protocol.generate_if_missing=false",
            "tracking.enabled=false", *FAST, *extra]


def test_verification_with_pairs_txt_counts_pairs_without_faces(make_cfg, identity_tree, tmp_path):
    base = lfw_config(lfw_tree(identity_tree, tmp_path), "protocol.conditions=[original]")
    low = evaluate(make_cfg(*base)).metrics
    assert low["n_pairs"] == 8 and low["original.n_no_face"] == 2 and low["original.n_scored"] == 8
    excl = evaluate(make_cfg(*base, "protocol.no_face=exclude")).metrics
    assert excl["original.n_no_face"] == 2 and excl["original.n_scored"] == 6
    assert excl["original.n_excluded"] == 2
    assert excl["original.auc"] == 1.0 and excl["original.no_face_images"] == 1


class FailsOnSmall(Frontalizer):
    """Fails on images under 150 px (the small copies and the faceless one), like a model
    that finds no mesh there: the frontalized condition loses pairs the original keeps."""

    name = "fails_on_small"

    def __call__(self, image):
        if min(image.shape[:2]) < 150:
            raise FrontalizationError("no face mesh found")
        return image


def test_verification_exclude_compares_conditions_on_the_same_pairs(make_cfg, identity_tree, embedder,
                                                                     tmp_path, monkeypatch):
    """`no_face=exclude`: both conditions are scored on the pairs scorable in BOTH, and each
    reports its own pairs without a face and the pairs excluded."""
    from frontal_exp.enhancers.simple import NoEnhancer
    from frontal_exp.pipeline import EvaluationPipeline
    from frontal_exp.protocols import frontalization

    monkeypatch.setattr(frontalization, "build_pipeline", lambda cfg: EvaluationPipeline(
        embedder, FailsOnSmall(), NoEnhancer(), cache_dir=cfg.cache_dir))
    base = lfw_config(lfw_tree(identity_tree, tmp_path), f"cache_dir={tmp_path / 'cache'}")
    result = evaluate(make_cfg(*base, "protocol.no_face=exclude"))
    m, pairs = result.metrics, result.tables["verification_pairs"]
    has_original, has_frontal = pairs.score_original.notna(), pairs.score_frontalized.notna()
    both = int((has_original & has_frontal).sum())
    # the frontalized condition lost pairs the original scored: 6 -> 3 (the small copies)
    assert has_original.sum() == 6 and has_frontal.sum() == 3 and both == 3
    assert m["original.n_scored"] == m["frontalized.n_scored"] == both
    assert (pairs.scored == (has_original & has_frontal)).all()
    assert m["original.n_no_face"] == 2 and m["frontalized.n_no_face"] == 5
    assert m["original.n_excluded"] == m["frontalized.n_excluded"] == 8 - both
    table = result.tables["verification"].set_index("condition")
    assert table.loc["original", "n_excluded"] == 5 and table.loc["frontalized", "n_no_face"] == 5
    # `low` keeps every pair in both conditions (the missing ones scored -1)
    low = evaluate(make_cfg(*base)).metrics
    assert low["original.n_scored"] == low["frontalized.n_scored"] == 8 and low["frontalized.n_excluded"] == 0


def test_lfw_recipe_without_pairs_txt_fails_clearly(make_cfg, identity_tree):
    cfg = make_cfg("experiment=lfw_verification", f"dataset.root={identity_tree}", "tracking.enabled=false")
    with pytest.raises(DatasetError, match="pairs.txt"):
        evaluate(cfg)
    cfg = make_cfg("experiment=lfw_verification", "dataset.root=null", "tracking.enabled=false")
    with pytest.raises(DatasetError, match="dataset.root="):
        evaluate(cfg)


# -- ../shared/data/real_faces (skipped when absent) ------------------------------------------
def test_protocols_on_real_faces(make_cfg, real_faces, root):
    # GT: the most frontal photo of each person by estimated pose (the folder default)
    real = ["dataset=folder", "tracking.enabled=false", f"dataset.root={real_faces}", *FAST]
    rob = evaluate(make_cfg("protocol=robustness", "protocol.max_pairs=40", *real, output_root=root)).metrics
    assert rob["angle_vs_gt_n"] >= 30 and rob["no_face_images"] <= 2
    assert rob["angle_vs_gt"] > 0.4 > 0.15 > rob["impostor"]
    ver = evaluate(make_cfg("protocol=verification", "protocol.max_pairs=60", "protocol.conditions=[original]",
                            *real, output_root=root)).metrics
    assert ver["original.acc_mean"] > 0.85 and ver["original.auc"] > 0.9
    result = evaluate(make_cfg("protocol.analyses=[by_pose,identification]", "dataset.limit=10", *real,
                               output_root=root))
    m = result.metrics
    assert m["n_identify"] >= 8 and m["rank5_angle"] >= 0.8
    assert result.tables["by_yaw"].n.sum() == m["n"]
