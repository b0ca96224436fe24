"""The fused template normalize(e + w e_frontal) as a verification condition (each image's
template) and as an identification probe, checked against templates computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from frontal_exp.embedders.base import Face
from frontal_exp.embedders.embedder import FaceEmbedding
from frontal_exp.enhancers.simple import NoEnhancer
from frontal_exp.errors import FrontalizationError
from frontal_exp.evaluation import evaluate
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.images import write_image
from frontal_exp.metrics.stats import bootstrap_ci
from frontal_exp.pipeline import EvaluationPipeline, ItemRecord, PipelineOutput
from frontal_exp.protocols.analyses import identification
from frontal_exp.protocols.frontalization import EvalResult

DIM = 8


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) / np.linalg.norm(v)


def hand_fused(e: np.ndarray, f: np.ndarray, w: float) -> np.ndarray:
    return _unit(_unit(e) + w * _unit(f))


# -- identification -----------------------------------------------------------------------
E = np.eye(4)


def ident_result(items: list[tuple[str, np.ndarray, np.ndarray]]) -> EvalResult:
    """Items (identity, angle embedding, frontal embedding) against a gallery of three people,
    person k's GT on axis k."""
    gts = {f"gt{k}.png": E[k] for k in range(3)}
    recs = [ItemRecord(f"i{n}", ident, f"a{n}.png", f"gt{ident[-1]}.png", angle_embedding=a, frontal_embedding=f)
            for n, (ident, a, f) in enumerate(items)]
    # every gallery person appears as some record's GT (the gallery is the records' GTs)
    recs += [ItemRecord(f"lost{k}", f"p{k}", "x.png", f"gt{k}.png", status="no_face_angle") for k in range(3)]
    output = PipelineOutput(recs, gts, {}, frontal_cache=None)
    return EvalResult(metrics={}, params={}, records=recs, output=output)


def ident_cfg(weight: float = 0.5):
    return OmegaConf.create({"eval": {"bootstrap": 300, "fusion_weight": weight}, "seed": 2,
                             "tracking": {"log_images": False}})


#: person 0's items. i0: angle and frontal each lean to another person (both rank 2), their
#: fusion finds person 0; i1: the angle finds person 0, the frontal (person 1's direction)
#: drags the fusion to person 1; i2: everything finds person 0
FUSION_ITEMS = [
    ("p0", 0.7 * E[0] + 0.71 * E[1], 0.7 * E[0] + 0.71 * E[2]),
    ("p0", 0.8 * E[0] + 0.6 * E[1], 2.0 * E[1] + 0.1 * E[3]),
    ("p0", E[0] + 0.2 * E[3], 3.0 * E[0] + 0.3 * E[2]),
]


def hand_ranks(probes: list[np.ndarray]) -> list[int]:
    gallery = [E[k] for k in range(3)]
    ranks = []
    for p in probes:
        sims = [float(_unit(p) @ g) for g in gallery]
        ranks.append(1 + sum(s > sims[0] for s in sims))  # every item is person 0's
    return ranks


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_fused_probe_changes_rank1_decisions(weight):
    out = identification(ident_result(FUSION_ITEMS), ident_cfg(weight))
    m, table = out.metrics, out.tables["identification"]
    angle = hand_ranks([a for _, a, _ in FUSION_ITEMS])
    frontal = hand_ranks([f for _, _, f in FUSION_ITEMS])
    fused = hand_ranks([hand_fused(a, f, weight) for _, a, f in FUSION_ITEMS])
    assert angle == [2, 1, 1] and frontal == [2, 2, 1] and fused == [1, 2, 1]
    assert table.rank_angle.tolist() == angle and table.rank_frontal.tolist() == frontal
    assert table.rank_fused.tolist() == fused and table.top1_fused.tolist() == ["p0", "p1", "p0"]
    assert m["n_identify"] == 3 and m["gallery_size"] == 3
    assert m["rank1_angle"] == pytest.approx(2 / 3) and m["rank1_frontal"] == pytest.approx(1 / 3)
    assert m["rank1_fused"] == pytest.approx(2 / 3) and m["rank5_fused"] == 1.0
    # paired counts: the fusion wins i0 and loses i1; the frontal face only loses i1
    assert (m["rank1_fused_wins"], m["rank1_fused_losses"]) == (1, 1)
    assert (m["rank1_frontal_wins"], m["rank1_frontal_losses"]) == (0, 1)
    assert m["rank1_fusion_gain"] == pytest.approx(0.0) and m["rank1_gain"] == pytest.approx(-1 / 3)
    diff = (np.array(fused) == 1).astype(float) - (np.array(angle) == 1)
    assert (m["rank1_fusion_gain_ci_low"], m["rank1_fusion_gain_ci_high"]) == pytest.approx(bootstrap_ci(diff, 300, 2))
    assert m["rank1_fusion_gain_ci_low"] < 0 < m["rank1_fusion_gain_ci_high"]


def test_zero_fusion_weight_ranks_like_the_angle():
    out = identification(ident_result(FUSION_ITEMS), ident_cfg(0.0))
    table = out.tables["identification"]
    assert table.rank_fused.tolist() == table.rank_angle.tolist()
    assert out.metrics["rank1_fused_wins"] == out.metrics["rank1_fused_losses"] == 0


# -- verification ---------------------------------------------------------------------------
PEOPLE = ("Ann_A", "Bob_B", "Cat_C", "Dan_D")
NO_FACE = 50  # Ann_A_0003: no face in the image (its frontalized face is found)
FAILS = 90  # Bob_B_0002: frontalization fails (the image's own face is found)


def level(person: int, k: int) -> int:
    """Grey level of person's image k (1-based); its frontalized image is level + 5."""
    return 10 + 60 * person + 20 * (k - 1)


class GreyEmbedder:
    """Every image is one flat grey level (JPEG-safe: the nearest level of the table) whose
    embedding is a hand-made vector, not unit norm; NO_FACE has no face."""

    name = "grey"
    detector = recognizer = None  # where it runs: the run's params ask (cpu)

    def __init__(self, vectors: dict[int, np.ndarray]) -> None:
        self.vectors = vectors

    def cache_key(self) -> str:
        return "grey-embedder"

    def embed_images(self, images):
        face = Face(bbox=np.array([0, 0, 16, 16.0]), kps=np.zeros((5, 2)), det_score=1.0)
        out = []
        for im in images:
            lvl = min(self.vectors, key=lambda v: abs(v - float(im.mean())))
            out.append(FaceEmbedding(None, None, "no_face") if lvl == NO_FACE
                       else FaceEmbedding(self.vectors[lvl].astype(np.float32), face))
        return out


class PlusFive(Frontalizer):
    name = "plus_five"

    def __call__(self, image):
        if abs(float(image.mean()) - FAILS) < 3:
            raise FrontalizationError("no face mesh found")
        return image + 5


@pytest.fixture(scope="module")
def grey_lfw(tmp_path_factory):
    """An LFW-shaped tree of flat grey images (4 people x 3) with a pairs.txt of 2 folds of
    3 same + 3 different pairs, and the vectors behind each grey level."""
    rng = np.random.default_rng(7)
    where = tmp_path_factory.mktemp("grey_lfw")
    vectors = {}
    for p, person in enumerate(PEOPLE):
        centre = rng.normal(size=DIM)
        for k in (1, 2, 3):
            lvl = level(p, k)
            write_image(where / "lfw" / person / f"{person}_{k:04d}.jpg", np.full((16, 16, 3), lvl, np.uint8))
            vectors[lvl] = (centre + rng.normal(scale=1.0, size=DIM)) * rng.uniform(0.5, 2)
            vectors[lvl + 5] = (centre + rng.normal(scale=0.8, size=DIM)) * rng.uniform(0.5, 2)
    (where / "pairs.txt").write_text(
        "2\t3\n"
        "Ann_A\t1\t3\nAnn_A\t1\t2\nBob_B\t1\t2\n"
        "Ann_A\t3\tBob_B\t1\nAnn_A\t2\tBob_B\t2\nBob_B\t3\tAnn_A\t3\n"
        "Cat_C\t1\t2\nDan_D\t1\t3\nCat_C\t2\t3\n"
        "Cat_C\t1\tDan_D\t2\nDan_D\t3\tCat_C\t3\nCat_C\t2\tDan_D\t1\n")
    return where, vectors


def image_level(path: str) -> int:
    name = path.rsplit("/", 1)[-1]
    return level(PEOPLE.index(name[:5]), int(name[6:10]))


def run_grey(make_cfg, grey_lfw, tmp_path, monkeypatch, *extra: str):
    from frontal_exp.protocols import frontalization

    where, vectors = grey_lfw
    monkeypatch.setattr(frontalization, "build_pipeline", lambda cfg: EvaluationPipeline(
        GreyEmbedder(vectors), PlusFive(), NoEnhancer(), cache_dir=cfg.cache_dir,
        fusion_weight=cfg.eval.fusion_weight))
    return evaluate(make_cfg("dataset=lfw", f"dataset.root={where / 'lfw'}", "protocol=verification",
                             "protocol.generate_if_missing=false", "tracking.enabled=false", "eval.bootstrap=50",
                             f"cache_dir={tmp_path / 'cache'}", *extra))


@pytest.mark.parametrize("weight", [0.5, 0.8])
def test_fused_verification_scores_are_hand_fused_templates(make_cfg, grey_lfw, tmp_path, monkeypatch, weight):
    from frontal_exp.metrics.verification import verification_metrics

    _, vectors = grey_lfw
    result = run_grey(make_cfg, grey_lfw, tmp_path, monkeypatch, f"eval.fusion_weight={weight}")
    m, pairs = result.metrics, result.tables["verification_pairs"]
    assert result.tables["verification"].condition.tolist() == ["original", "frontalized", "fused"]

    def template(path: str) -> np.ndarray | None:
        lvl = image_level(path)
        if lvl in (NO_FACE, FAILS):
            return None
        return hand_fused(vectors[lvl], vectors[lvl + 5], weight)

    expected = []
    for a, b in zip(pairs.path_a, pairs.path_b, strict=True):
        ta, tb = template(a), template(b)
        expected.append(np.nan if ta is None or tb is None else float(ta @ tb))
    expected = np.array(expected)
    np.testing.assert_allclose(pairs.score_fused, expected, atol=1e-6)
    # the fused template is neither condition alone
    both = ~np.isnan(expected)
    assert np.abs(pairs.score_fused[both] - pairs.score_original[both]).max() > 1e-3
    assert np.abs(pairs.score_fused[both] - pairs.score_frontalized[both]).max() > 1e-3
    # the same 12 pairs and folds in every condition; a pair missing a template scores -1
    for cond in ("original", "frontalized", "fused"):
        assert m[f"{cond}.n_pairs"] == m[f"{cond}.n_scored"] == 12 and m[f"{cond}.n_folds"] == 2
    scores = np.where(np.isnan(expected), -1.0, expected)
    ref = verification_metrics(scores, pairs.same.to_numpy(), pairs.fold.to_numpy(), (1e-3, 1e-2))
    for key in ("acc_mean", "auc", "tar_far_0.01"):
        assert m[f"fused.{key}"] == pytest.approx(ref[key])


def test_fused_verification_counts_missing_templates(make_cfg, grey_lfw, tmp_path, monkeypatch):
    """Ann_A_0003 lacks its own face, Bob_B_0002 its frontalized one: the fused condition lacks
    both templates, and every pair showing either is counted (low: scored -1; exclude: left
    out of every condition)."""
    low = run_grey(make_cfg, grey_lfw, tmp_path, monkeypatch)
    m, pairs = low.metrics, low.tables["verification_pairs"]
    shows = {lvl: (pairs.path_a.map(image_level) == lvl) | (pairs.path_b.map(image_level) == lvl)
             for lvl in (NO_FACE, FAILS)}
    assert shows[NO_FACE].sum() == 3 and shows[FAILS].sum() == 2
    assert m["original.no_face_images"] == 1 and m["frontalized.no_face_images"] == 1
    assert m["fused.no_face_images"] == 2
    assert m["original.n_no_face"] == 3 and m["frontalized.n_no_face"] == 2 and m["fused.n_no_face"] == 5
    assert pairs.score_fused.isna().tolist() == (shows[NO_FACE] | shows[FAILS]).tolist()
    assert m["fused.n_scored"] == 12 and m["fused.n_excluded"] == 0
    excl = run_grey(make_cfg, grey_lfw, tmp_path, monkeypatch, "protocol.no_face=exclude").metrics
    for cond in ("original", "frontalized", "fused"):
        assert excl[f"{cond}.n_scored"] == 7 and excl[f"{cond}.n_excluded"] == 5
    assert excl["fused.n_no_face"] == 5


def test_fused_alone_still_embeds_both(make_cfg, grey_lfw, tmp_path, monkeypatch):
    result = run_grey(make_cfg, grey_lfw, tmp_path, monkeypatch, "protocol.conditions=[fused]")
    assert result.tables["verification"].condition.tolist() == ["fused"]
    assert result.metrics["fused.n_no_face"] == 5 and "original.auc" not in result.metrics
