"""What a run looks like in the MLflow UI: a name that says what distinguishes it, a
Markdown description (the `mlflow.note.content` tag) with its result at a glance, and a saved
runs-list view of the experiment that shows the key metrics as columns."""

from __future__ import annotations

import json
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
    given = {_canonical(o) for o in sweep} if sweep is not None else set()
    return [o for o in job if _canonical(o) not in given]


def _canonical(override: str) -> tuple | str:
    """An override as Hydra reads it: a job's copy of `flag=false` from the sweep's command
    line reads `flag=False`, of `x=[1,2]` reads `x=[1, 2]`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_override(override)
    except Exception:  # noqa: BLE001 - not an override Hydra reads: compared as written
        return override
    return (parsed.type.name, parsed.get_key_element(), repr(parsed.value()))


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


#: MLflow 3.17's UI shows no metric column in a runs list until the user picks them (its
#: default columns are Dataset, Source and Models). A saved view is an experiment tag with this
#: prefix; the UI lists it under "Views" and opens it from `?viewStateShareKey=<id>`.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "frontal_exp_metrics"
VIEW_NAME = "frontal_exp: key metrics"
#: the view's metric columns, in order: a sweep parent's (see sweep_callback), frontalization's,
#: robustness'; verification's are per condition (CONDITION_METRICS)
VIEW_METRICS = (
    "best_net_gain", "n_jobs", "n_failed", "net_gain", "net_gain_ci_low", "net_gain_ci_high", "n", "win_rate",
    "not_paired", "fusion_gain", "angle_vs_gt", "impostor", "margin_angle_vs_gt",
)
CONDITION_METRICS = ("acc_mean", "auc", "n_scored")


def metric_column(key: str) -> str:
    """The UI's id of a metric column (its canonical sort key)."""
    return f"metrics.`{key}`"


def view_metric_keys(metric_keys: Iterable[str]) -> list[str]:
    """Which of a run's metrics the view shows: those of VIEW_METRICS it has, then each
    verification condition's accuracy, AUC and scored pairs."""
    keys = set(metric_keys)
    per_condition = sorted(k for k in keys if "." in k and k.rsplit(".", 1)[1] in CONDITION_METRICS)
    return [k for k in VIEW_METRICS if k in keys] + per_condition


def metrics_view_columns(tag_value: str | None) -> list[str] | None:
    """The metric columns of a view this project wrote ([] when there is none); None when the
    tag holds a view it cannot read (one the user saved over it in the UI: it is kept)."""
    if tag_value is None:
        return []
    try:
        state = json.loads(json.loads(tag_value)["state"])
        columns = state["selectedColumns"]
    except (ValueError, KeyError, TypeError):
        return None
    return [c for c in columns if isinstance(c, str) and c.startswith("metrics.")]


def metrics_view_value(metric_columns: list[str], created_at_ms: int) -> str:
    """The tag value of the view: MLflow's saved-view envelope (name, createdAt, state) whose
    state shows the run name (wide enough for a sweep job's name), start time and the metric
    columns, in this order."""
    first = ["attributes.`Run Name`", "attributes.`Created`"]
    state = {"selectedColumns": list(metric_columns), "columnOrder": first + list(metric_columns),
             "columnWidths": {first[0]: 300}}
    return json.dumps({"name": VIEW_NAME, "createdAt": created_at_ms, "state": json.dumps(state)})


def ensure_metrics_view(client, experiment_id: str, metric_keys: Iterable[str]) -> bool:  # noqa: ANN001
    """Add a run's key metrics to the experiment's view (creating it); True when the tag was
    written. Columns only accumulate, so runs of several protocols share one view; a view
    the user saved over it in the UI is left alone."""
    import time

    tag = VIEW_TAG_PREFIX + VIEW_ID
    existing = client.get_experiment(experiment_id).tags.get(tag)
    columns = metrics_view_columns(existing)
    if columns is None:
        return False
    known = [metric_column(k) for k in VIEW_METRICS]
    added = columns + [c for c in map(metric_column, view_metric_keys(metric_keys)) if c not in columns]
    # VIEW_METRICS' order first (a sweep parent's columns lead), the others as they came
    merged = sorted(added, key=lambda c: (known.index(c) if c in known else len(known), added.index(c)))
    if existing is not None and merged == columns:
        return False
    client.set_experiment_tag(experiment_id, tag, metrics_view_value(merged, int(time.time() * 1000)))
    return True


def metrics_view_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs list in that view (`workflowType`: the runs list, not the GenAI
    overview MLflow 3.17 opens otherwise)."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_ID}")
