"""What a run looks like in the MLflow UI: a name that says what distinguishes it, and a
Markdown description (the `mlflow.note.content` tag) with its result at a glance."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: the tag MLflow's UI shows (and edits) as a run's or an experiment's description
NOTE_TAG = "mlflow.note.content"
#: MLflow's limit on a run name
MAX_NAME = 250
#: Hydra config groups whose choice the name already shows as the model/enhancer short name
SHOWN_GROUPS = {"model", "enhancer"}
#: the reasons an item is not paired, in pipeline order (metric key, words)
NOT_PAIRED_REASONS = [
    ("dataset_skipped", "dataset skipped"), ("unreadable_angle", "unreadable angled"),
    ("unreadable_gt", "unreadable GT"), ("no_face_gt", "no face in GT"), ("no_face_angle", "no face in angled"),
    ("frontalize_failed", "frontalize failed"), ("enhance_failed", "enhance failed"),
    ("no_face_frontal", "no face in frontal"),
]
#: robustness: the pair kinds summarised (metric key, words)
ROBUSTNESS_KINDS = [("angle_vs_gt", "Angled vs GT"), ("angle_vs_angle", "Angled vs Angled"),
                    ("gt_vs_gt", "GT vs GT"), ("impostor", "Impostor")]


def short_label(params: Mapping[str, str]) -> str:
    """`model+enhancer` (just `model` without an enhancer), led by the protocol when it is
    not frontalization; "" when the run has none of these."""
    model, enhancer = params.get("model", ""), params.get("enhancer", "")
    label = model + (f"+{enhancer}" if enhancer and enhancer != "none" else "") if model else ""
    protocol = params.get("protocol", "")
    return " ".join(p for p in (protocol if protocol != "frontalization" else "", label) if p)


def single_run_name(params: Mapping[str, str]) -> str:
    """A run on its own: `model+enhancer | embedder | dataset`."""
    parts = [short_label(params), params.get("embedder", ""), params.get("dataset", "")]
    return " | ".join(p for p in parts if p)[:MAX_NAME]


def override_key(override: str) -> str:
    """The config key of a Hydra override (`+model.strength=1` -> `model.strength`)."""
    return override.split("=", 1)[0].lstrip("+~")


def varied_overrides(job: Iterable[str], sweep: Iterable[str] | None) -> list[str]:
    """The job's overrides that the sweep varied: those the sweep's command line did not
    give as they are (`enhancer=none,sharp` varies `enhancer`; `dataset.limit=4` does not).
    Without the sweep's overrides, every override of the job."""
    sweep = set(sweep) if sweep is not None else set()
    return [o for o in job if o not in sweep]


def sweep_job_name(params: Mapping[str, str], varied: Iterable[str]) -> str:
    """A sweep job: the model/enhancer short names plus each varied key's last component and
    value, e.g. `mesh3d strength=0.5 min_angle=6` (the full key where two last components
    clash; a varied model or enhancer choice shows in the short names)."""
    pairs = [(override_key(o), o.split("=", 1)[1] if "=" in o else "") for o in varied]
    pairs = [(k, v) for k, v in pairs if k not in SHOWN_GROUPS]
    lasts = [k.replace("/", ".").rsplit(".", 1)[-1] for k, _ in pairs]
    shown = [f"{last if lasts.count(last) == 1 else key}={value}" for (key, value), last in zip(pairs, lasts, strict=True)]
    label = short_label(params)
    if not shown:  # nothing but the model/enhancer varied, or a sweep of one job
        return single_run_name(params) if not label else label[:MAX_NAME]
    return " ".join([label, *shown] if label else shown)[:MAX_NAME]


def _num(value: float, fmt: str = "+.4f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _estimate(metrics: Mapping[str, float], key: str, label: str) -> str:
    """`**label** +0.0123 (95% CI [-0.0100, +0.0300])` for a metric with a CI."""
    ci = ""
    if f"{key}_ci_low" in metrics:
        ci = f" (95% CI [{_num(metrics[f'{key}_ci_low'])}, {_num(metrics[f'{key}_ci_high'])}])"
    return f"**{label}** {_num(metrics[key])}{ci}"


def run_note(metrics: Mapping[str, float], params: Mapping[str, str], figures: Iterable[str] = ()) -> str:
    """The run's description in Markdown: its result at a glance. Frontalization: Net Gain with
    its 95% CI, N, win rate, Fusion Gain when present, the non-zero not-paired counts by reason
    and the triplet figure's artifact path; robustness and verification: their key metrics."""
    m = metrics
    lines: list[str] = []
    if "net_gain" in m:
        n = f"N = {int(m['n'])} paired" if "n" in m else ""
        if "n_items" in m and n:
            n += f" of {int(m['n_items'])} items"
        lines.append(f"- {_estimate(m, 'net_gain', 'Net Gain')}, {n}, win rate {_num(m.get('win_rate'), '.2f')}")
        if "fusion_gain" in m:
            lines.append(f"- {_estimate(m, 'fusion_gain', 'Fusion Gain')}")
        reasons = [f"{words} {int(m[key])}" for key, words in NOT_PAIRED_REASONS if m.get(key)]
        if reasons:
            lines.append(f"- Not paired ({int(m.get('not_paired', 0))}): " + ", ".join(reasons))
    for key, words in ROBUSTNESS_KINDS:
        if key in m:
            lines.append(f"- {_estimate(m, key, words)}, N = {int(m.get(f'{key}_n', 0))} pairs")
    if "margin_angle_vs_gt" in m:
        lines.append(f"- **Margin (Angled vs GT - Impostor)** {_num(m['margin_angle_vs_gt'])}")
    conditions = sorted({k.rsplit(".", 1)[0] for k in m if k.endswith(".acc_mean")})
    for cond in conditions:
        lines.append(f"- **{cond}**: accuracy {_num(m[f'{cond}.acc_mean'], '.4f')} "
                     f"± {_num(m.get(f'{cond}.acc_std'), '.4f')}, AUC {_num(m.get(f'{cond}.auc'), '.4f')}, "
                     f"{int(m.get(f'{cond}.n_scored', 0))} pairs scored")
    figures = list(figures)
    if "triplets" in figures:
        lines.append("- Triplets (Angled | Frontal | GT): `figures/triplets.png`")
    elif figures:
        lines.append("- Figures: " + ", ".join(f"`figures/{name}.png`" for name in figures))
    title = single_run_name(params)
    return "\n".join([f"### {title}" if title else "### Result", "", *lines])
