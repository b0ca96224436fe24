"""Extra views of a frontalization run, computed from its embeddings (no new model calls):
`by_pose` (Net Gain and Fusion Gain per |yaw| / |pitch| bin, break-even angles) and
`identification` (rank in a GT gallery)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from frontal_exp.errors import ConfigError
from frontal_exp.metrics.identification import identity_scores, rank_k_accuracy, true_ranks
from frontal_exp.metrics.pose_bins import DEFAULT_EDGES, break_even, pose_bin_table
from frontal_exp.metrics.similarity import fused_template
from frontal_exp.metrics.stats import paired_comparison
from frontal_exp.protocols.base import RunResult

if TYPE_CHECKING:
    from frontal_exp.protocols.frontalization import EvalResult


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def pose_edges(cfg: DictConfig) -> list[float]:
    edges = cfg.protocol.get("pose_bins") if "protocol" in cfg and cfg.protocol is not None else None
    return [float(e) for e in (edges or DEFAULT_EDGES)]


def by_pose(result: EvalResult, cfg: DictConfig) -> RunResult:
    """Tables `by_yaw` / `by_pitch` (similarities, Net Gain and Fusion Gain per bin, each with
    its 95% paired-bootstrap CI), the break-even angle of each gain (metric
    `<gain>_break_even_<axis>` when there is one; param of the same name, "none" otherwise)
    and a plot of them per bin with the CI bands."""
    from frontal_exp.figures import new_plot, plot_to_bgr

    edges = pose_edges(cfg)
    recs = result.records
    a = np.array([_nan(r.angle_to_gt) for r in recs])
    b = np.array([_nan(r.frontal_to_gt) for r in recs])
    fused = np.array([_nan(getattr(r, "fused_to_gt", None)) for r in recs])
    # the study's Net Gain is over paired items only: mask the rest
    paired = np.array([r.paired for r in recs], dtype=bool)
    a[~paired] = np.nan
    out = RunResult(metrics={})
    fig, axes = new_plot(1, 2, size=(5.5, 4.4))
    for ax, axis in zip(axes[0], ("yaw", "pitch"), strict=True):
        angles = np.array([_nan(getattr(r, axis)) for r in recs])
        table = pose_bin_table(angles, a, b, edges, n_boot=cfg.eval.bootstrap, seed=cfg.seed, fused_to_gt=fused)
        out.tables[f"by_{axis}"] = table
        for row in table.itertuples():
            if row.n and row.bin not in ("unknown", "outside"):
                out.metrics[f"net_gain_{axis}_{row.bin}"] = float(row.net_gain)
                out.metrics[f"fusion_gain_{axis}_{row.bin}"] = float(row.fusion_gain)
                out.metrics[f"n_{axis}_{row.bin}"] = int(row.n)
        for gain in ("net_gain", "fusion_gain"):
            edge = break_even(table, gain)
            out.params[f"{gain}_break_even_{axis}"] = "none" if edge is None else f"{edge:g}"
            if edge is not None:
                out.metrics[f"{gain}_break_even_{axis}"] = edge
        _plot_bins(ax, table[(table.n > 0) & table.lo.notna()], edges, axis)
    p = result.params
    fig.suptitle(f"{p.get('model')}+{p.get('enhancer')} | {p.get('embedder')} | {p.get('dataset')}", fontsize=9)
    fig.tight_layout()
    out.figures["by_pose"] = plot_to_bgr(fig)
    return out


def _plot_bins(ax, shown: pd.DataFrame, edges: list[float], axis: str) -> None:
    """Similarities and gains per bin, the gains with their CI as a band and as error bars (a
    lone bin has no band to show). Item counts go on a top axis, outside the plot, and the
    legend below it, so no label covers a marker or an error bar. Frontal-GT equal to
    Angle-GT in every bin (identity) would hide the Angle-GT line: it is drawn dashed with
    hollow markers, and the legend says so."""
    centres = ((shown.lo + shown.hi) / 2).to_numpy()
    ax.plot(centres, shown.angle_to_gt, "o-", label="Mean(Angle-GT)")
    if np.allclose(shown.frontal_to_gt, shown.angle_to_gt, rtol=0, atol=1e-9, equal_nan=True):
        ax.plot(centres, shown.frontal_to_gt, "s--", mfc="none", label="Mean(Frontal-GT) = Mean(Angle-GT) (identical)")
    else:
        ax.plot(centres, shown.frontal_to_gt, "s-", label="Mean(Frontal-GT)")
    for gain, style, colour, label in (("net_gain", "^--", "C2", "Net Gain"),
                                       ("fusion_gain", "v:", "C3", "Fusion Gain")):
        if shown[gain].notna().any():
            y = shown[gain].to_numpy(float)
            low, high = shown[f"{gain}_ci_low"].to_numpy(float), shown[f"{gain}_ci_high"].to_numpy(float)
            ax.errorbar(centres, y, yerr=[np.maximum(y - low, 0), np.maximum(high - y, 0)], fmt=style, color=colour,
                        capsize=2, elinewidth=0.8, label=f"{label} (95% CI)")
            ax.fill_between(centres, low, high, alpha=0.2, color=colour)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(edges)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(f"|{axis}| (deg)")
    ax.set_ylabel("cosine similarity")
    top = ax.secondary_xaxis("top")
    top.set_xticks(centres, labels=[f"N={n}" for n in shown.n], fontsize=7)
    ax.set_title(f"by |{axis}| (N: items per bin)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


#: identification probes: name -> how an item's probe embedding is made (w: eval.fusion_weight)
PROBES: dict[str, Callable] = {
    "angle": lambda r, w: r.angle_embedding,
    "frontal": lambda r, w: r.frontal_embedding,
    "fused": lambda r, w: fused_template(r.angle_embedding, r.frontal_embedding, w),
}
#: probe -> the name of its rank-1 gain over the angled probe (as net_gain / fusion_gain)
RANK1_GAINS = {"frontal": "rank1_gain", "fused": "rank1_fusion_gain"}


def identification(result: EvalResult, cfg: DictConfig) -> RunResult:
    """Rank every angled, frontalized and fused face against a gallery of every identity's GT.

    The fused probe is normalize(e_angle + w e_frontal), w = `eval.fusion_weight`. All three
    are scored on the same items (those with an angled AND a frontal embedding and their
    identity in the gallery), so rank-k of angled inputs is the paired baseline: for frontal
    and fused, `rank1_gain` / `rank1_fusion_gain` (rank-1 minus the angled rank-1) with its
    95% paired-bootstrap CI, and the paired counts `rank1_<probe>_wins` / `_losses` (items the
    probe finds at rank 1 and the angled face does not / the reverse).
    """
    gt_by_path = result.output.gt_embeddings
    identity_of = {r.gt_path: r.identity for r in result.records}
    gallery_paths = sorted(p for p, e in gt_by_path.items() if e is not None and p in identity_of)
    out = RunResult(metrics={"gallery_size": len({identity_of[p] for p in gallery_paths})})
    if not gallery_paths:
        return out
    gallery = np.stack([gt_by_path[p] for p in gallery_paths])
    gallery_ids = [identity_of[p] for p in gallery_paths]
    recs = [r for r in result.records if r.angle_embedding is not None and r.frontal_embedding is not None
            and r.identity in set(gallery_ids)]
    out.metrics["n_identify"] = len(recs)
    if not recs:
        return out
    weight = float(cfg.eval.fusion_weight)
    rows = {r.item_id: {"item_id": r.item_id, "identity": r.identity} for r in recs}
    scores_by, ranks_by = {}, {}
    for kind, probe in PROBES.items():
        scores, names = identity_scores(np.stack([probe(r, weight) for r in recs]), gallery, gallery_ids)
        ranks = true_ranks(scores, np.array([names.index(r.identity) for r in recs]))
        scores_by[kind], ranks_by[kind] = (scores, names), ranks
        for k in (1, 5):
            out.metrics[f"rank{k}_{kind}"] = rank_k_accuracy(ranks, k)
        for r, rank, row in zip(recs, ranks, scores, strict=True):
            rows[r.item_id][f"rank_{kind}"] = int(rank)
            rows[r.item_id][f"top1_{kind}"] = names[int(np.argmax(row))]
    hit_angle = (ranks_by["angle"] == 1).astype(np.float64)
    for kind, gain in RANK1_GAINS.items():
        hit = (ranks_by[kind] == 1).astype(np.float64)
        cmp = paired_comparison(hit_angle, hit, n_boot=cfg.eval.bootstrap, seed=cfg.seed)
        out.metrics[gain] = out.metrics[f"rank1_{kind}"] - out.metrics["rank1_angle"]
        out.metrics[f"{gain}_ci_low"], out.metrics[f"{gain}_ci_high"] = cmp.ci_low, cmp.ci_high
        out.metrics[f"rank1_{kind}_wins"] = int(((hit == 1) & (hit_angle == 0)).sum())
        out.metrics[f"rank1_{kind}_losses"] = int(((hit == 0) & (hit_angle == 1)).sum())
    out.tables["identification"] = pd.DataFrame(list(rows.values()))
    if cfg.tracking.log_images:
        out.figures["identification"] = ranking_figure(result, recs, scores_by["frontal"], gallery_paths,
                                                       gallery_ids, cfg, ranks=ranks_by)
    return out


def ranking_figure(result: EvalResult, recs: list, frontal_scores: tuple[np.ndarray, list[str]],
                   gallery_paths: list[str], gallery_ids: list[str], cfg: DictConfig,
                   max_gallery: int = 8, ranks: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Per sampled item: Angled | Frontal (the query), then the gallery ordered by similarity
    to the frontal face, with scores; the true identity framed in green. With `ranks` (probe ->
    rank of the true identity per item of `recs`), each face's caption gives its rank, the
    frontal one's also the fused probe's."""
    from frontal_exp.figures import _safe_read, _tile, pick_samples, triplet_grid

    scores, names = frontal_scores
    gt_image = {}
    for path, ident in zip(gallery_paths, gallery_ids, strict=True):
        gt_image.setdefault(ident, path)
    index = {r.item_id: i for i, r in enumerate(recs)}
    sample = pick_samples(recs, cfg.eval.grid_samples, cfg.seed)
    rows = []
    for rec in sample:
        row = scores[index[rec.item_id]]
        frontal = result.output.frontal_cache.get(rec.frontal_key) if rec.frontal_key else None
        angle_label, frontal_label = f"Angled {rec.identity}", "Frontal (query)"
        if ranks is not None:
            i = index[rec.item_id]
            angle_label += f"\nrank {int(ranks['angle'][i])}"
            frontal_label += f"\nrank {int(ranks['frontal'][i])}, fused {int(ranks['fused'][i])}"
        tiles = [_tile(_safe_read(rec.angle_path), angle_label), _tile(frontal, frontal_label)]
        for rank, j in enumerate(np.argsort(-row)[:max_gallery], start=1):
            true = names[j] == rec.identity
            colour = (80, 220, 80) if true else (255, 255, 255)
            tile = _tile(_safe_read(gt_image[names[j]]), f"#{rank} {names[j]}\nsim {row[j]:.3f}", colour)
            if true:
                cv2.rectangle(tile, (1, 1), (tile.shape[1] - 2, tile.shape[0] - 2), colour, 3)
            tiles.append(tile)
        width = (2 + min(max_gallery, len(names))) * tiles[0].shape[1]
        line = np.hstack(tiles)
        rows.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=32))
    p = result.params
    return triplet_grid(rows, f"identification: {p.get('model')}+{p.get('enhancer')} | {p.get('embedder')}")


#: analysis name -> function(result, cfg) -> RunResult (merged into the run's result)
ANALYSES: dict[str, Callable[[EvalResult, DictConfig], RunResult]] = {
    "by_pose": by_pose,
    "identification": identification,
}


def check_analyses(names: list[str]) -> list[str]:
    """The names, or a ConfigError listing the valid ones (raised when the protocol is built,
    before any model runs)."""
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise ConfigError(f"protocol.analyses: unknown analysis {unknown}; choose from {sorted(ANALYSES)}")
    return names


def run_analyses(names: list[str], result: EvalResult, cfg: DictConfig) -> RunResult:
    """Run the named analyses on a frontalization result, merged into one RunResult."""
    check_analyses(names)
    out = RunResult(metrics={})
    for name in names:
        out.add(ANALYSES[name](result, cfg))
    return out
