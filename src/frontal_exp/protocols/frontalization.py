"""The study's main protocol: is the frontalized face closer to GT than the angled input?

Net Gain = mean sim(Frontal, GT) - mean sim(Angle, GT), computed on the SAME items (those
where all three faces were detected), with a bootstrap CI, the win rate and the counts of
every item that could not be paired, by reason. Fusion Gain is the same comparison for the
fused probe normalize(e_angle + w e_frontal) (w = `eval.fusion_weight`) against the angle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from frontal_exp.config import instantiate_checked
from frontal_exp.data.base import LoadedDataset, Skip
from frontal_exp.metrics.stats import paired_comparison
from frontal_exp.pipeline import STATUSES, EvaluationPipeline, ItemRecord, PipelineOutput
from frontal_exp.protocols.base import Protocol, RunResult
from frontal_exp.quiet import progress_enabled

log = logging.getLogger(__name__)

#: reasons an item is not paired, counted ONCE per item by its status (the first problem in
#: pipeline order, see pipeline.STATUSES): the counts add up to `not_paired`
PROBLEM_COUNTS = tuple(s for s in STATUSES if s != "ok")


@dataclass
class EvalResult(RunResult):
    """A frontalization run: also its per-item records, dataset and pipeline output."""

    records: list[ItemRecord] = field(default_factory=list)
    dataset: LoadedDataset | None = None
    output: PipelineOutput | None = None
    #: extra per-record columns of the items table, in record order (the gate's, model=gated)
    item_columns: list[dict] | None = None

    def items_table(self) -> pd.DataFrame:
        extra = self.item_columns or [{}] * len(self.records)
        return pd.DataFrame([{**r.row(), **e} for r, e in zip(self.records, extra, strict=True)])

    def skipped_table(self) -> pd.DataFrame:
        rows = [{"what": r.item_id, "stage": "item", "reason": r.problems} for r in self.records if not r.paired]
        rows += [{"what": s.what, "stage": "dataset", "reason": s.reason} for s in self.dataset.skipped]
        return pd.DataFrame(rows, columns=["what", "stage", "reason"])


def summarize(
    records: list[ItemRecord], dataset_skips: list[Skip], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Summary metrics of a run (see module docstring)."""
    paired = [r for r in records if r.paired]
    a = np.array([r.angle_to_gt for r in paired], dtype=np.float64)
    b = np.array([r.frontal_to_gt for r in paired], dtype=np.float64)
    cmp = paired_comparison(a, b, n_boot=n_boot, seed=seed)
    metrics: dict[str, float] = {
        "n_items": len(records),
        "n": cmp.n,
        "angle_to_gt": cmp.mean_a,
        "frontal_to_gt": cmp.mean_b,
        "net_gain": cmp.mean_diff,
        "net_gain_ci_low": cmp.ci_low,
        "net_gain_ci_high": cmp.ci_high,
        "win_rate": cmp.win_rate,
        "tie_rate": cmp.tie_rate,
        "wilcoxon_p": cmp.wilcoxon_p,
    }
    # every paired item has a fused probe; records made elsewhere (by hand) may not
    fusable = [r for r in paired if r.fused_to_gt is not None]
    fused = paired_comparison(np.array([r.angle_to_gt for r in fusable], dtype=np.float64),
                              np.array([r.fused_to_gt for r in fusable], dtype=np.float64), n_boot=n_boot, seed=seed)
    metrics.update({
        "fused_to_gt": fused.mean_b,
        "fusion_gain": fused.mean_diff,
        "fusion_gain_ci_low": fused.ci_low,
        "fusion_gain_ci_high": fused.ci_high,
        "fusion_win_rate": fused.win_rate,
    })
    # one reason per item (its status); `problems` keeps every problem found, per item
    for problem in PROBLEM_COUNTS:
        metrics[problem] = sum(r.status == problem for r in records)
    metrics["not_paired"] = len(records) - len(paired)
    metrics["dataset_skipped"] = len(dataset_skips)
    # Means over every item that has the pair, not only the paired subset: shows how much
    # a mean over survivors would differ from the honest paired one.
    for name in ("angle_to_gt", "frontal_to_gt"):
        values = [getattr(r, name) for r in records if getattr(r, name) is not None]
        metrics[f"{name}_all"] = float(np.mean(values)) if values else float("nan")
        metrics[f"n_{name}_all"] = len(values)
    return metrics


def build_pipeline(cfg: DictConfig) -> EvaluationPipeline:
    embedder = instantiate_checked(cfg.embedder, "embedder")
    frontalizer = instantiate_checked(cfg.model, "model")
    enhancer = instantiate_checked(cfg.enhancer, "enhancer")
    return EvaluationPipeline(
        embedder,
        frontalizer,
        enhancer,
        cache_dir=cfg.cache_dir,
        batch_size=cfg.eval.batch_size,
        io_workers=cfg.eval.io_workers,
        use_cache=cfg.eval.use_cache,
        fusion_weight=cfg.eval.fusion_weight,
    )


def device_of(component: object) -> str:
    """Where a component actually runs (for the run's params): cuda, cpu, or an ONNX provider."""
    for attr in ("device_used", "device"):
        value = getattr(component, attr, None)
        if value is not None and not callable(value):
            return str(value)
    session = getattr(getattr(component, "_model", None), "session", None)
    if session is not None:
        return session.get_providers()[0].replace("ExecutionProvider", "").lower()
    return "cpu"


def dataset_label(cfg: DictConfig) -> str:
    """A short dataset name for tables: the loader's name, and the root folder's when it has one."""
    from pathlib import Path

    from hydra.utils import get_object

    name = getattr(get_object(cfg.dataset._target_), "name", "dataset")
    root = OmegaConf.select(cfg, "dataset.root", default=None, throw_on_missing=False)
    return f"{name}:{Path(str(root)).name}" if root and name in ("folder",) else name


def describe(cfg: DictConfig, pipeline: EvaluationPipeline) -> dict[str, str]:
    """Short names of what ran, and on which device, for tables, run names and params."""
    return {
        "dataset": dataset_label(cfg),
        "model": pipeline.frontalizer.name,
        "enhancer": pipeline.enhancer.name,
        "embedder": pipeline.embedder.name,
        "device": str(cfg.device),
        "model_device": device_of(pipeline.frontalizer),
        "enhancer_device": device_of(pipeline.enhancer),
        "embedder_device": f"{device_of(pipeline.embedder.detector)}/{device_of(pipeline.embedder.recognizer)}",
    }


def format_results(metrics: dict[str, float], params: dict[str, str] | None = None) -> str:
    """A short human-readable results table."""
    lines = []
    params = params or {}
    shown = {k: v for k, v in params.items() if "_break_even_" not in k and not k.startswith("gate.")}
    if shown:
        lines.append("  ".join(f"{k}={v}" for k, v in shown.items()))
    m = metrics
    lines += [
        f"{'items':>16}: {int(m['n_items'])}  paired N = {int(m['n'])}  not paired = {int(m['not_paired'])}",
        f"{'Mean(Angle-GT)':>16}: {m['angle_to_gt']:.4f}",
        f"{'Mean(Frontal-GT)':>16}: {m['frontal_to_gt']:.4f}",
        f"{'Net Gain':>16}: {m['net_gain']:+.4f}  95% CI [{m['net_gain_ci_low']:+.4f}, {m['net_gain_ci_high']:+.4f}]"
        f"  win rate {m['win_rate']:.2f} (ties {m['tie_rate']:.2f})  Wilcoxon p {m['wilcoxon_p']:.3g}",
        f"{'not paired':>16}: unreadable {int(m['unreadable_angle'] + m['unreadable_gt'])}; "
        f"no face in gt {int(m['no_face_gt'])}, in angle {int(m['no_face_angle'])}; "
        f"frontalize failed {int(m['frontalize_failed'])}; enhance failed {int(m['enhance_failed'])}; "
        f"no face in frontal {int(m['no_face_frontal'])} (first reason per item, in pipeline order); "
        f"dataset skipped {int(m['dataset_skipped'])}",
    ]
    if "net_gain_break_even_yaw" in params:
        lines.append(f"{'break-even |yaw|':>16}: Net Gain {params['net_gain_break_even_yaw']}, "
                     f"Fusion Gain {params.get('fusion_gain_break_even_yaw', 'none')} (deg; 95% CI >= 0 from there up)")
    if "gate.n_on" in m:
        from frontal_exp.protocols.gating import summary_line

        lines.append(summary_line(m, params))
    if "fusion_gain" in m:
        after_net_gain = next(i for i, line in enumerate(lines) if "Net Gain:" in line) + 1
        lines.insert(after_net_gain, f"{'Fusion Gain':>16}: {m['fusion_gain']:+.4f}  95% CI [{m['fusion_gain_ci_low']:+.4f}, "
                        f"{m['fusion_gain_ci_high']:+.4f}]  Mean(Fused-GT) {m['fused_to_gt']:.4f}")
    return "\n".join(lines)


def apply_gate_to(output: PipelineOutput, gate):
    """Apply a gated model's rule (learned per fold by identity) to the run's records, before
    anything is summarized: items it does not fire on get the angled face as their result, and
    figures show them so (see protocols.gating)."""
    from frontal_exp.protocols.gating import GatedImageView, apply_gate

    outcome = apply_gate(output.records, gate)
    output.frontal_cache = GatedImageView(output.frontal_cache, outcome.angle_images)
    log.info("gate: %s", outcome.params["gate.rules"])
    return outcome


class FrontalizationProtocol(Protocol):
    """Angled -> frontalized -> enhanced, each embedded and compared with GT.

    `analyses` adds views computed from the same embeddings (see protocols.analyses);
    `pose_bins` are the |yaw| / |pitch| bin edges of the `by_pose` analysis.
    """

    name = "frontalization"

    def __init__(self, analyses: list[str] | None = None, pose_bins: list[float] | None = None) -> None:
        from frontal_exp.protocols.analyses import check_analyses

        self.analyses = check_analyses(list(analyses or []))
        self.pose_bins = pose_bins

    def run(self, cfg: DictConfig) -> EvalResult:
        from frontal_exp.figures import pick_failures, pick_samples, records_figure

        dataset = instantiate_checked(cfg.dataset, "dataset")
        # the models first: a missing or unusable model file stops the run before the dataset
        # is loaded (pose estimation alone can take minutes)
        pipeline = build_pipeline(cfg)
        data = dataset.load()
        log.info("dataset %s: %d items, %d skipped by the loader", data.name, len(data.items), len(data.skipped))
        gate = getattr(pipeline.frontalizer, "gate", None)  # model=gated (frontalizers/gated.py)
        if gate is not None:
            from frontal_exp.protocols.gating import assign_folds

            assign_folds((it.identity for it in data.items), gate.folds, gate.seed)  # < 2 identities: stop now
        output = pipeline.run(data.items, progress=progress_enabled(cfg.eval.progress))
        gated = apply_gate_to(output, gate) if gate is not None else None
        metrics = summarize(output.records, data.skipped, n_boot=cfg.eval.bootstrap, seed=cfg.seed)
        metrics.update(output.cache_stats)
        result = EvalResult(metrics=metrics, params=describe(cfg, pipeline), records=output.records,
                            dataset=data, output=output)
        if gated is not None:
            result.metrics.update(gated.metrics)
            result.params.update(gated.params)
            result.item_columns = gated.item_columns
            result.tables["gating"] = gated.folds
        result.tables["items"] = result.items_table()
        result.tables["skipped"] = result.skipped_table()
        if cfg.tracking.log_images:
            title = f"{result.params['model']}+{result.params['enhancer']} | {result.params['embedder']}"
            sample = pick_samples(output.records, cfg.eval.grid_samples, cfg.seed)
            result.figures["triplets"] = records_figure(sample, output.frontal_cache, title)
            failures = pick_failures(output.records, cfg.eval.failure_samples)
            if failures:
                result.figures["failures"] = records_figure(failures, output.frontal_cache, f"failure cases: {title}")
        if self.analyses:
            from frontal_exp.protocols.analyses import run_analyses

            result.add(run_analyses(self.analyses, result, cfg))
        return result
