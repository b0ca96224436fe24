"""Embedder robustness (the study's third table): how similar an embedder finds two photos of
the same person (Angled vs GT, Angled vs Angled, GT vs GT) and of different people (impostor).

Only dataset images are embedded (no frontalization); pair counts are capped by a seeded
sampler, so the images to embed are chosen before any model runs.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from frontal_exp.config import instantiate_checked
from frontal_exp.data.base import LoadedDataset
from frontal_exp.metrics.similarity import pair_cosine
from frontal_exp.metrics.stats import bootstrap_ci
from frontal_exp.pipeline import EvaluationPipeline
from frontal_exp.protocols.base import Protocol, RunResult
from frontal_exp.protocols.frontalization import dataset_label

log = logging.getLogger(__name__)

#: pair kinds, in the order of the study's table (impostor last: the scale of the others)
KINDS = ("angle_vs_gt", "angle_vs_angle", "gt_vs_gt", "impostor")
LABELS = {"angle_vs_gt": "Angled vs GT", "angle_vs_angle": "Angled vs Angled", "gt_vs_gt": "GT vs GT",
          "impostor": "Impostor (Angled vs other's GT)"}

Pair = tuple[str, str]


def embedding_pipeline(cfg: DictConfig) -> EvaluationPipeline:
    """A pipeline whose only work is embedding (the identity frontalizer is never called);
    it shares the embedding cache with frontalization runs of the same embedder."""
    from frontal_exp.enhancers.simple import NoEnhancer
    from frontal_exp.frontalizers.identity import IdentityFrontalizer

    embedder = instantiate_checked(cfg.embedder, "embedder")
    return EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), cache_dir=cfg.cache_dir,
                              batch_size=cfg.eval.batch_size, io_workers=cfg.eval.io_workers,
                              use_cache=cfg.eval.use_cache)


def sample(pairs: Iterable[Pair], max_pairs: int | None, rng: random.Random) -> list[Pair]:
    """At most `max_pairs` of the pairs, chosen with the seeded rng (all when under the cap)."""
    pairs = sorted(set(pairs))
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    return sorted(rng.sample(pairs, max_pairs))


def robustness_pairs(data: LoadedDataset, max_pairs: int | None, seed: int) -> dict[str, list[Pair]]:
    """Image path pairs of each kind (see KINDS), each capped at max_pairs."""
    rng = random.Random(seed)
    angles: dict[str, set[str]] = {}
    gts: dict[str, set[str]] = {}
    for it in data.items:
        angles.setdefault(it.identity, set()).add(str(it.angle_path))
        gts.setdefault(it.identity, set()).add(str(it.gt_path))
    for identity, extra in data.extra_frontals.items():
        if identity in gts:  # only people who are in the (possibly limited) item set
            gts[identity] |= {str(p) for p in extra}
    same_gt = {(it.identity, str(it.angle_path), str(it.gt_path)) for it in data.items}
    out = {
        "angle_vs_gt": sample([(a, g) for _, a, g in same_gt], max_pairs, rng),
        "angle_vs_angle": sample(
            (p for paths in angles.values() for p in itertools.combinations(sorted(paths), 2)), max_pairs, rng),
        "gt_vs_gt": sample(
            (p for paths in gts.values() for p in itertools.combinations(sorted(paths), 2)), max_pairs, rng),
    }
    # impostors: an angled photo of one person vs the GT of another, drawn at random (the
    # full cross product is quadratic in the dataset size)
    people = sorted(set(angles) & set(gts))
    impostors: set[Pair] = set()
    n_possible = sum(len(angles[p]) * sum(len(gts[q]) for q in people if q != p) for p in people)
    target = min(n_possible, max_pairs if max_pairs is not None else len(data.items))
    flat_angles = [(p, a) for p in people for a in sorted(angles[p])]
    while len(impostors) < target:
        p, a = rng.choice(flat_angles)
        q = rng.choice([q for q in people if q != p])
        impostors.add((a, rng.choice(sorted(gts[q]))))
    out["impostor"] = sorted(impostors)
    return out


def pair_scores(pairs: list[Pair], emb: dict[str, np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Cosine similarity of each pair with both faces found, and the count of the others."""
    scores = [pair_cosine(emb, a, b) for a, b in pairs]
    found = [s for s in scores if s is not None]
    return np.array(found, dtype=np.float64), len(pairs) - len(found)


class RobustnessProtocol(Protocol):
    """Same-person and impostor similarity distributions of one embedder on one dataset.

    `max_pairs` caps each kind of pair (seeded sample); null uses every pair (impostors:
    as many as there are items).
    """

    name = "robustness"

    def __init__(self, max_pairs: int | None = 2000) -> None:
        self.max_pairs = max_pairs

    def run(self, cfg: DictConfig) -> RunResult:
        pipeline = embedding_pipeline(cfg)  # model files are checked before the dataset loads
        data = instantiate_checked(cfg.dataset, "dataset").load()
        pairs = robustness_pairs(data, self.max_pairs, cfg.seed)
        paths = sorted({p for kind in pairs.values() for pair in kind for p in pair})
        log.info("robustness: %d images in %s", len(paths), {k: len(v) for k, v in pairs.items()})
        emb, reasons = pipeline.embed_paths(paths)
        angle_paths = {str(it.angle_path) for it in data.items}
        unreadable = {p for p, r in reasons.items() if r.startswith("unreadable")}
        no_face = {p for p in paths if emb[p] is None and p not in unreadable}
        metrics: dict[str, float] = {
            "n_images": len(paths),
            "no_face_images": len(no_face),
            "no_face_angle": len(no_face & angle_paths),
            "no_face_gt": len(no_face - angle_paths),
            "unreadable_images": len(unreadable),
            "n_identities": len(data.identities),
            "dataset_skipped": len(data.skipped),
        }
        rows, per_pair, dists = [], [], {}
        for kind in KINDS:
            scores, missing = pair_scores(pairs[kind], emb)
            dists[kind] = scores
            lo, hi = bootstrap_ci(scores, n_boot=cfg.eval.bootstrap, seed=cfg.seed)
            mean = float(scores.mean()) if scores.size else float("nan")
            std = float(scores.std()) if scores.size else float("nan")
            metrics.update({kind: mean, f"{kind}_std": std, f"{kind}_n": int(scores.size),
                            f"{kind}_ci_low": lo, f"{kind}_ci_high": hi, f"{kind}_pairs_no_face": missing})
            rows.append({"pair_kind": kind, "label": LABELS[kind], "n": int(scores.size), "mean": mean,
                         "std": std, "ci_low": lo, "ci_high": hi, "pairs_sampled": len(pairs[kind]),
                         "pairs_no_face": missing})
            per_pair += [{"pair_kind": kind, "a": a, "b": b, "similarity": pair_cosine(emb, a, b)}
                         for a, b in pairs[kind]]
        # the gap the study's Angled-vs-GT numbers should be read against
        metrics["margin_angle_vs_gt"] = metrics["angle_vs_gt"] - metrics["impostor"]
        params = {"dataset": dataset_label(cfg), "embedder": pipeline.embedder.name,
                  "device": str(cfg.device), "max_pairs": str(self.max_pairs)}
        result = RunResult(metrics=metrics, params=params,
                           tables={"robustness": pd.DataFrame(rows), "pairs": pd.DataFrame(per_pair)})
        if cfg.tracking.log_images:
            result.figures["robustness_hist"] = histogram(dists, f"{params['embedder']} | {params['dataset']}")
        return result


def histogram(dists: dict[str, np.ndarray], title: str) -> np.ndarray:
    """Overlaid similarity histograms of each pair kind."""
    from frontal_exp.figures import new_plot, plot_to_bgr

    fig, axes = new_plot(1, 1, size=(7.0, 4.0))
    ax = axes[0][0]
    bins = np.linspace(-0.3, 1.0, 53)
    for kind, scores in dists.items():
        if scores.size:
            ax.hist(np.clip(scores, -0.3, 1.0), bins=bins, alpha=0.45, density=True,
                    label=f"{LABELS[kind]} (N={scores.size}, mean {scores.mean():.3f})")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return plot_to_bgr(fig)
