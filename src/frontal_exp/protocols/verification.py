"""Face verification (LFW's pairs.txt, 10-fold protocol) on original vs frontalized images,
and on their fusion.

"frontalized" is the configured model + enhancer applied to BOTH images of every pair, through
the pipeline's caches. "fused" gives each image the template normalize(e_image + w e_frontalized)
(w = `eval.fusion_weight`, `metrics.similarity.fused_template`); an image lacking either
embedding has no fused template. Pairs where a face (or template) is missing are counted, then
scored as a fixed low similarity (`no_face: low`, LFW practice: every pair keeps its place) or
dropped (`exclude`) from EVERY condition, so the conditions are always compared on the same pairs.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from frontal_exp.config import instantiate_checked
from frontal_exp.data.base import LoadedDataset, require_dir
from frontal_exp.data.folder import LFW_LAYOUT
from frontal_exp.errors import BadImageError, ConfigError, DatasetError
from frontal_exp.images import read_image
from frontal_exp.metrics.similarity import fused_template, pair_cosine
from frontal_exp.metrics.verification import kfold_accuracy, roc_curve, verification_metrics
from frontal_exp.pipeline import EvaluationPipeline
from frontal_exp.protocols.base import Protocol, RunResult
from frontal_exp.quiet import progress_enabled

log = logging.getLogger(__name__)

CONDITIONS = ("original", "frontalized", "fused")
#: the embeddings each condition is made of (fused: both, the image's and its frontalized one's)
NEEDS = {"original": ("original",), "frontalized": ("frontalized",), "fused": ("original", "frontalized")}


@dataclass(frozen=True)
class VerificationPair:
    path_a: str
    path_b: str
    same: bool
    fold: int


def lfw_image(root: Path, name: str, number: str) -> str:
    return str(root / name / f"{name}_{int(number):04d}.jpg")


def parse_pairs(path: str | Path, root: str | Path) -> list[VerificationPair]:
    """LFW pairs.txt: header `folds n` then per fold n matched lines (`name i j`) and n
    mismatched lines (`name1 i name2 j`). A one-number header (pairsDevTest.txt) is one fold."""
    path, root = Path(path), Path(root)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DatasetError(f"{path} is empty; expected LFW's pairs.txt (header '10 300', then pairs)")
    header, body = lines[0], lines[1:]
    try:
        folds, per_fold = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    except ValueError as exc:
        raise DatasetError(f"{path}: bad header {' '.join(header)!r}; expected e.g. '10 300'") from exc
    pairs = []
    for i, tok in enumerate(body):
        fold = min(i // (2 * per_fold), folds - 1)
        if len(tok) == 3:
            pairs.append(VerificationPair(lfw_image(root, tok[0], tok[1]), lfw_image(root, tok[0], tok[2]), True, fold))
        elif len(tok) == 4:
            pairs.append(VerificationPair(lfw_image(root, tok[0], tok[1]), lfw_image(root, tok[2], tok[3]), False, fold))
        else:
            raise DatasetError(f"{path} line {i + 2}: expected 'name i j' or 'name1 i name2 j', got {' '.join(tok)!r}")
    if len(pairs) != 2 * folds * per_fold:
        log.warning("%s: %d pairs, the header announces %d", path, len(pairs), 2 * folds * per_fold)
    return pairs


def generate_pairs(data: LoadedDataset, folds: int, max_pairs: int | None, seed: int) -> list[VerificationPair]:
    """Seeded same/different-person pairs from a dataset's own images (for sets with no
    pairs.txt): up to max_pairs/2 of each, in folds DISJOINT BY IDENTITY, as LFW's are.

    Each identity belongs to one fold, and every pair of a fold (different-person pairs
    included) only shows identities of that fold: the threshold picked on the other folds
    never saw a face of the people it is tested on. A fold needs two identities for its
    different-person pairs, so there are at most (identities // 2) folds; fewer than `folds`
    is logged. Identities are spread so that folds offer similar numbers of same-person
    pairs, the pairs are shared evenly over the folds, and each fold gets as many
    different-person as same-person pairs where it can.
    """
    rng = random.Random(seed)
    images: dict[str, set[str]] = {}
    for it in data.items:
        images.setdefault(it.identity, set()).update({str(it.angle_path), str(it.gt_path)})
    for identity, extra in data.extra_frontals.items():
        if identity in images:
            images[identity].update(str(p) for p in extra)
    n_folds = min(folds, len(images) // 2)
    if n_folds < 2:
        raise DatasetError(f"verification with generated pairs needs at least 4 identities (folds are disjoint "
                           f"by identity, two per fold at least); dataset {data.name!r} has {len(images)}: "
                           "use a larger dataset or an LFW pairs.txt (protocol.pairs_file)")
    if n_folds < folds:
        log.warning("verification: %d folds instead of %d (folds are disjoint by identity, %d identities)",
                    n_folds, folds, len(images))
    same_of = {person: list(itertools.combinations(sorted(paths), 2)) for person, paths in images.items()}
    fold_people = _identity_folds(same_of, n_folds, rng)
    fold_same = [[pair for person in members for pair in same_of[person]] for members in fold_people]
    total = sum(len(f) for f in fold_same)
    budget = total if max_pairs is None else min(total, max_pairs // 2)
    quotas = _even_shares(budget, [len(f) for f in fold_same])
    pairs = []
    for k, (members, same, quota) in enumerate(zip(fold_people, fold_same, quotas, strict=True)):
        pairs += [VerificationPair(a, b, True, k) for a, b in sorted(rng.sample(same, quota))]
        pairs += [VerificationPair(a, b, False, k) for a, b in _different_pairs(members, images, quota, rng)]
    return pairs


def _identity_folds(same_of: dict[str, list], n_folds: int, rng: random.Random) -> list[list[str]]:
    """Identities split into n_folds folds of two identities at least, the identities with the
    most same-person pairs spread first (seeded order among equals), each to the fold with the
    fewest pairs so far among those that still lack their second identity, then among all."""
    people = sorted(same_of)
    rng.shuffle(people)
    people.sort(key=lambda p: -len(same_of[p]))  # stable: the shuffle orders equals
    members: list[list[str]] = [[] for _ in range(n_folds)]
    load = [0] * n_folds
    for person in people:
        k = min(range(n_folds), key=lambda f: (len(members[f]) >= 2, load[f], len(members[f])))
        members[k].append(person)
        load[k] += len(same_of[person])
    return [sorted(m) for m in members]


def _even_shares(total: int, available: list[int]) -> list[int]:
    """`total` split as evenly as possible over bins, none over its `available` count."""
    shares = [0] * len(available)
    remaining = total
    order = sorted(range(len(available)), key=lambda i: available[i])
    for n_left, i in zip(range(len(order), 0, -1), order, strict=True):
        shares[i] = min(available[i], remaining // n_left)
        remaining -= shares[i]
    return shares


def _different_pairs(people: list[str], images: dict[str, set[str]], n: int,
                     rng: random.Random) -> list[tuple[str, str]]:
    """Up to n distinct seeded pairs of images of two different people among `people`."""
    n_possible = sum(len(images[p]) * len(images[q]) for p, q in itertools.combinations(people, 2))
    diff: set[tuple[str, str]] = set()
    while len(diff) < min(n, n_possible):
        p, q = rng.sample(people, 2)
        diff.add(tuple(sorted((rng.choice(sorted(images[p])), rng.choice(sorted(images[q]))))))
    out = sorted(diff)
    rng.shuffle(out)
    return out


def fused_embeddings(original: dict[str, np.ndarray | None], frontalized: dict[str, np.ndarray | None],
                     weight: float) -> dict[str, np.ndarray | None]:
    """Each image's fused template normalize(e_image + weight * e_frontalized); None where
    either embedding is missing (no face in the image, or frontalization / its face lost)."""
    out: dict[str, np.ndarray | None] = {}
    for p, e in original.items():
        f = frontalized.get(p)
        out[p] = None if e is None or f is None else fused_template(e, f, weight)
    return out


def pair_scores(pairs: list[VerificationPair], emb: dict[str, np.ndarray | None]) -> np.ndarray:
    """Cosine similarity of each pair; NaN where a face is missing in either image."""
    scores = (pair_cosine(emb, p.path_a, p.path_b) for p in pairs)
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


class VerificationProtocol(Protocol):
    """Accuracy (threshold picked on the other folds) mean +- std, ROC AUC and TAR at FAR, per
    condition (`conditions`: original, frontalized, fused), all on the same pairs and folds.

    `pairs_file`: LFW's pairs.txt; null looks for `<dataset.root>/../pairs.txt` and
    `<dataset.root>/pairs.txt`. Where there is none and `generate_if_missing` is true, seeded
    pairs are drawn from the dataset's items (`max_pairs`, `folds`); otherwise it is an error.
    """

    name = "verification"

    def __init__(
        self,
        pairs_file: str | None = None,
        generate_if_missing: bool = True,
        conditions: list[str] | None = None,
        no_face: str = "low",
        no_face_score: float = -1.0,
        folds: int = 10,
        max_pairs: int | None = 600,
        fars: list[float] | None = None,
    ) -> None:
        self.conditions = list(conditions or CONDITIONS)
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if bad:
            raise ConfigError(f"protocol.conditions: unknown {bad}; choose from {list(CONDITIONS)}")
        if no_face not in ("low", "exclude"):
            raise ConfigError(f"protocol.no_face must be 'low' or 'exclude', got {no_face!r}")
        self.pairs_file = pairs_file
        self.generate_if_missing = generate_if_missing
        self.no_face = no_face
        self.no_face_score = no_face_score
        self.folds = max(2, folds)
        self.max_pairs = max_pairs
        self.fars = tuple(fars or (1e-3, 1e-2))

    # -- which pairs ------------------------------------------------------------------
    def pairs(self, cfg: DictConfig) -> tuple[list[VerificationPair], str]:
        """The pairs and where they came from (a pairs.txt path, or 'generated')."""
        root = OmegaConf.select(cfg, "dataset.root", default=None, throw_on_missing=False)
        root = None if root in (None, "", "???") else str(root)
        if self.pairs_file:
            path = Path(self.pairs_file).expanduser()
            if not path.is_file():
                raise DatasetError(f"protocol.pairs_file {path} does not exist; point it at LFW's pairs.txt")
            return parse_pairs(path, require_dir(root, LFW_LAYOUT, "LFW_ROOT")), str(path)
        looked = []
        if root:
            for candidate in (Path(root).expanduser() / ".." / "pairs.txt", Path(root).expanduser() / "pairs.txt"):
                looked.append(str(candidate.resolve()))
                if candidate.is_file():
                    return parse_pairs(candidate, require_dir(root, LFW_LAYOUT, "LFW_ROOT")), str(candidate.resolve())
        if not self.generate_if_missing:
            require_dir(root, LFW_LAYOUT, "LFW_ROOT")  # no root at all: say how to set it
            where = f" (looked at {', '.join(looked)})" if looked else " (no dataset.root set)"
            raise DatasetError(f"no LFW pairs.txt found{where}; set protocol.pairs_file=/path/to/pairs.txt, "
                               "or protocol.generate_if_missing=true to draw pairs from the dataset")
        data = instantiate_checked(cfg.dataset, "dataset").load()
        return generate_pairs(data, self.folds, self.max_pairs, cfg.seed), "generated"

    # -- embeddings per condition -----------------------------------------------------
    def condition_embeddings(self, pipeline: EvaluationPipeline, paths: list[str],
                             progress: bool = False) -> dict[str, dict[str, np.ndarray | None]]:
        """Every configured condition's embedding of each image (None: no face / template).
        Original and frontalized embeddings are computed once, also when only "fused" uses them."""
        base = {}
        for cond in ("original", "frontalized"):
            if any(cond in NEEDS[c] for c in self.conditions):
                base[cond] = self.embeddings(pipeline, paths, cond, progress)
        out = {c: base[c] for c in self.conditions if c in base}
        if "fused" in self.conditions:
            out["fused"] = fused_embeddings(base["original"], base["frontalized"], pipeline.fusion_weight)
        return out

    def embeddings(self, pipeline: EvaluationPipeline, paths: list[str], condition: str,
                   progress: bool = False) -> dict[str, np.ndarray | None]:
        """Embeddings of the images themselves ("original") or of their frontalized faces."""
        if condition == "original":
            return pipeline.embed_paths(paths)[0]
        out: dict[str, np.ndarray | None] = {}
        chunks = [paths[i : i + pipeline.batch_size] for i in range(0, len(paths), pipeline.batch_size)]
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="frontalize pairs", unit="batch")
        for chunk in chunks:
            images = {}
            for p in chunk:
                try:
                    images[p] = read_image(p)
                except BadImageError:
                    out[p] = None
            staged = pipeline.frontalize_enhance(list(images.values()))
            made = [(p, img) for p, (img, _) in zip(images, staged, strict=True) if img is not None]
            out.update({p: None for p, (img, _) in zip(images, staged, strict=True) if img is None})
            for (p, _), r in zip(made, pipeline.embed_many([img for _, img in made]), strict=True):
                out[p] = r.embedding
        return out

    def scored_pairs(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Which pairs every condition is scored on: all of them (`no_face: low`, a pair with
        a missing face scores `no_face_score`), or only those with both faces found in EVERY
        condition (`exclude`), so the conditions are compared on the same pairs."""
        n = len(next(iter(raw.values())))
        if self.no_face == "low":
            return np.ones(n, dtype=bool)
        return np.logical_and.reduce([~np.isnan(r) for r in raw.values()])

    def run(self, cfg: DictConfig) -> RunResult:
        from frontal_exp.protocols.frontalization import build_pipeline, describe

        pipeline = build_pipeline(cfg)  # model files are checked before the dataset loads
        pairs, source = self.pairs(cfg)
        paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
        log.info("verification: %d pairs (%s), %d images", len(pairs), source, len(paths))
        labels = np.array([p.same for p in pairs], dtype=bool)
        folds = np.array([p.fold for p in pairs])
        params = {**describe(cfg, pipeline), "pairs": source, "no_face": self.no_face}
        metrics: dict[str, float] = {"n_pairs": len(pairs), "n_same": int(labels.sum()),
                                     "n_different": int((~labels).sum()), "n_images": len(paths)}
        rows, fold_rows = [], []
        pair_table = pd.DataFrame({"fold": folds, "same": labels, "path_a": [p.path_a for p in pairs],
                                   "path_b": [p.path_b for p in pairs]})
        raw, no_face_images = {}, {}
        embeddings = self.condition_embeddings(pipeline, paths, progress_enabled(cfg.eval.progress))
        for cond in self.conditions:
            emb = embeddings[cond]
            raw[cond] = pair_scores(pairs, emb)
            no_face_images[cond] = sum(emb.get(p) is None for p in paths)
            pair_table[f"score_{cond}"] = raw[cond]
        keep = self.scored_pairs(raw)
        pair_table["scored"] = keep
        curves = {}
        for cond in self.conditions:
            missing = np.isnan(raw[cond])
            scores = np.where(missing, self.no_face_score, raw[cond])[keep]
            m = verification_metrics(scores, labels[keep], folds[keep], self.fars)
            m.update({"n_pairs": len(pairs), "n_no_face": int(missing.sum()), "n_excluded": int((~keep).sum()),
                      "n_scored": int(keep.sum()), "no_face_images": no_face_images[cond]})
            metrics.update({f"{cond}.{k}": float(v) for k, v in m.items()})
            rows.append({"condition": cond, **m})
            kf = kfold_accuracy(scores, labels[keep], folds[keep])
            fold_rows += [{"condition": cond, "fold": i, "threshold": t, "accuracy": a}
                          for i, (t, a) in enumerate(zip(kf.thresholds, kf.accuracies, strict=True))]
            curves[cond] = (scores, labels[keep])
        result = RunResult(metrics=metrics, params=params,
                           tables={"verification": pd.DataFrame(rows), "verification_folds": pd.DataFrame(fold_rows),
                                   "verification_pairs": pair_table})
        if cfg.tracking.log_images:
            title = f"{params['model']}+{params['enhancer']} | {params['embedder']} | {params['dataset']}"
            result.figures["roc"] = roc_figure(curves, title)
            result.figures["score_hist"] = score_histograms(curves, title)
        return result


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> np.ndarray:
    """ROC curves (TAR against FAR on a log axis) of each condition (see `roc_plot`)."""
    from frontal_exp.figures import plot_to_bgr

    return plot_to_bgr(roc_plot(curves, title))


def same_roc(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], tol: float = 1e-9) -> bool:
    """Whether two ROC curves ((FAR, TAR) steps) are the same: max |dTAR| < tol at every FAR
    where either curve steps."""
    grid = np.union1d(a[0], b[0])

    def tar_at(far: np.ndarray, tar: np.ndarray) -> np.ndarray:
        return tar[np.searchsorted(far, grid, side="right") - 1]

    return bool(np.max(np.abs(tar_at(*a) - tar_at(*b))) < tol)


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
    """The ROC figure (matplotlib, from `new_plot`). A curve identical to an earlier one (see
    `same_roc`) would hide under it: it is drawn dashed on top, and the legend says so
    (`original = frontalized (identical)`)."""
    from frontal_exp.figures import new_plot

    fig, axes = new_plot(1, 1, size=(6.0, 4.5))
    ax = axes[0][0]
    drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for cond, (scores, labels) in curves.items():
        if labels.any() and (~labels).any():
            far, tar, _ = roc_curve(scores, labels)
            auc = verification_metrics(scores, labels, np.zeros_like(labels, dtype=int))["auc"]
            # FAR = 0 has no place on a log axis: draw it at half the smallest resolvable FAR
            floor = 0.5 / max(1, int((~labels).sum()))
            twin = next((c for c, curve in drawn.items() if same_roc(curve, (far, tar))), None)
            text = f"{cond} (AUC {auc:.4f})" if twin is None else f"{twin} = {cond} (identical, AUC {auc:.4f})"
            ax.step(np.maximum(far, floor), tar, where="post", label=text,
                    ls="-" if twin is None else (0, (4, 3)), lw=1.5 if twin is None else 2.0)
            drawn[cond] = (far, tar)
    for f in (1e-3, 1e-2):
        ax.axvline(f, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("FAR (different-person pairs accepted)")
    ax.set_ylabel("TAR (same-person pairs accepted)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def score_histograms(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> np.ndarray:
    """Same-person vs different-person score histograms, one panel per condition."""
    from frontal_exp.figures import new_plot, plot_to_bgr

    fig, axes = new_plot(1, len(curves), size=(5.0, 3.8))
    bins = np.linspace(-1.0, 1.0, 81)
    for ax, (cond, (scores, labels)) in zip(axes[0], curves.items(), strict=True):
        ax.hist(scores[labels], bins=bins, alpha=0.5, label=f"same person (N={int(labels.sum())})", color="C2")
        ax.hist(scores[~labels], bins=bins, alpha=0.5, label=f"different (N={int((~labels).sum())})", color="C3")
        ax.set_title(cond, fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return plot_to_bgr(fig)
