"""`python -m frontal_exp.report --experiment NAME`: the paper's tables, rebuilt from MLflow.

Reads the finished runs of an experiment (or of one sweep: `--parent-run`) and writes Markdown
and CSV tables in the study's shapes: models x datasets, enhancers x embedder pairs, embedder
robustness, verification, Net Gain by pose, identification, paired comparisons with a
baseline, and links to every logged figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from frontal_exp.metrics.stats import paired_comparison

log = logging.getLogger(__name__)

CONFIG_KEYS = ("protocol", "dataset", "model", "enhancer", "embedder")
#: the baseline of paired comparisons: the run matching most of these
DEFAULT_BASELINE = {"model": "identity", "enhancer": "none"}


# -- reading runs ----------------------------------------------------------------------
def load_runs(client, experiment: str, parent_run: str | None = None, latest_only: bool = True) -> pd.DataFrame:
    """One row per finished job run: run_id, start time, config keys, metrics (m.<name>).

    With `latest_only`, a configuration run several times counts once (its latest run),
    so re-running a sweep into the same experiment replaces rather than duplicates rows.
    """
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SystemExit(f"no MLflow experiment {experiment!r}; experiments here: {names}")
    query = "tags.`frontal_exp.kind` = 'job' and attributes.status = 'FINISHED'"
    if parent_run:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run}'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=50000,
                              order_by=["attributes.start_time DESC"])
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "start_time": r.info.start_time,
               "artifact_uri": r.info.artifact_uri}
        row.update({k: r.data.params.get(f"run.{k}", "") for k in CONFIG_KEYS})
        row.update({f"m.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if latest_only:
        df = df.sort_values("start_time", ascending=False).drop_duplicates(list(CONFIG_KEYS), keep="first")
    return df.sort_values(list(CONFIG_KEYS)).reset_index(drop=True)


def download_table(client, run_id: str, name: str, dst: Path) -> pd.DataFrame | None:
    """A table a run logged as tables/<name>.json (MLflow's split format), or None."""
    try:
        path = client.download_artifacts(run_id, f"tables/{name}.json", str(dst))
    except Exception:  # noqa: BLE001 - absent in older runs or other protocols
        return None
    data = json.loads(Path(path).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def m(row: pd.Series, key: str) -> float:
    value = row.get(f"m.{key}", float("nan"))
    return float(value) if value is not None else float("nan")


def _varying(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The keys whose value differs between rows (always at least the first key)."""
    out = [k for k in keys if df[k].nunique() > 1]
    return out or [keys[0]]


def label(row: pd.Series) -> str:
    return f"{row['model']}+{row['enhancer']} | {row['embedder']} | {row['dataset']}"


# -- the tables ------------------------------------------------------------------------
def table_models(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: Model x Dataset: Mean(Angle-GT), Mean(Frontal-GT), Net Gain (95% CI), N."""
    if runs.empty:
        return pd.DataFrame()
    keys = ["model", "dataset", *[k for k in ("enhancer", "embedder") if runs[k].nunique() > 1]]
    rows = []
    for _, r in runs.iterrows():
        rows.append({**{k.capitalize(): r[k] for k in keys},
                     "Mean(Angle-GT)": m(r, "angle_to_gt"), "Mean(Frontal-GT)": m(r, "frontal_to_gt"),
                     "Net Gain": m(r, "net_gain"),
                     "95% CI": f"[{m(r, 'net_gain_ci_low'):+.4f}, {m(r, 'net_gain_ci_high'):+.4f}]",
                     "Win rate": m(r, "win_rate"), "N": _int(m(r, "n")),
                     "Not paired": _int(m(r, "not_paired"))})
    return pd.DataFrame(rows)


def table_enhancers(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2: enhancers (rows) x embedder pairs (columns); each cell Mean(Frontal-GT),
    Net Gain, N and the frontal faces not detected (ND)."""
    if runs.empty:
        return pd.DataFrame()
    rows_by = [k for k in ("dataset", "model") if runs[k].nunique() > 1] + ["enhancer"]
    cells: dict[tuple, dict[str, str]] = {}
    for _, r in runs.iterrows():
        key = tuple(r[k] for k in rows_by)
        cells.setdefault(key, {})[r["embedder"]] = (
            f"{m(r, 'frontal_to_gt'):.4f} ({m(r, 'net_gain'):+.4f}) N={_int(m(r, 'n'))} "
            f"ND={_int(m(r, 'no_face_frontal'))}")
    embedders = sorted(runs["embedder"].unique())
    out = [{**{k.capitalize(): v for k, v in zip(rows_by, key, strict=True)},
            **{e: cell.get(e, "") for e in embedders}} for key, cell in cells.items()]
    return pd.DataFrame(out)


def table_robustness(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per embedder pair, mean similarity (N) of Angled vs GT, Angled vs Angled,
    GT vs GT and impostor pairs, and the images with no face found."""
    from frontal_exp.protocols.robustness import KINDS, LABELS

    if runs.empty:
        return pd.DataFrame()
    rows = []
    for _, r in runs.iterrows():
        row = {"Embedder": r["embedder"], "Dataset": r["dataset"]}
        for kind in KINDS:
            n = _int(m(r, f"{kind}_n"))
            row[LABELS[kind].split(" (")[0]] = f"{m(r, kind):.4f} (N={n})" if n else "n/a (N=0)"
        row["No face (images)"] = _int(m(r, "no_face_images"))
        row["Images"] = _int(m(r, "n_images"))
        rows.append(row)
    return pd.DataFrame(rows)


def table_verification(runs: pd.DataFrame, client, tmp: Path) -> pd.DataFrame:
    """Verification: one row per run and condition (original / frontalized)."""
    rows = []
    for _, r in runs.iterrows():
        table = download_table(client, r["run_id"], "verification", tmp)
        if table is None:
            continue
        for _, t in table.iterrows():
            rows.append({"Dataset": r["dataset"], "Embedder": r["embedder"], "Model": r["model"],
                         "Enhancer": r["enhancer"], "Condition": t["condition"],
                         "Accuracy": f"{t['acc_mean']:.4f} ± {t['acc_std']:.4f}", "AUC": t["auc"],
                         "TAR@FAR=1e-3": t.get("tar_far_0.001", float("nan")),
                         "TAR@FAR=1e-2": t.get("tar_far_0.01", float("nan")),
                         "Pairs": _int(t["n_pairs"]), "No-face pairs": _int(t["n_no_face"]),
                         "Scored": _int(t["n_scored"])})
    return pd.DataFrame(rows)


def table_by_pose(runs: pd.DataFrame, client, tmp: Path, axis: str = "yaw") -> pd.DataFrame:
    """Net Gain (N) per |yaw| bin (rows) for each configuration (columns)."""
    columns: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for _, r in runs.iterrows():
        table = download_table(client, r["run_id"], f"by_{axis}", tmp)
        if table is None:
            continue
        col = columns.setdefault(label(r), {})
        for _, t in table.iterrows():
            if t["bin"] not in order:
                order.append(t["bin"])
            n = _int(t["n"])
            col[t["bin"]] = f"{t['net_gain']:+.4f} (N={n})" if n else "-"
    if not columns:
        return pd.DataFrame()
    return pd.DataFrame([{f"|{axis}| bin": b, **{c: v.get(b, "-") for c, v in columns.items()}} for b in order])


def table_identification(runs: pd.DataFrame) -> pd.DataFrame:
    """Rank-1 / rank-5 of angled inputs (the baseline) and frontalized faces, per run."""
    if "m.rank1_frontal" not in runs:
        return pd.DataFrame()
    rows = []
    for _, r in runs[runs["m.rank1_frontal"].notna()].iterrows():
        rows.append({"Config": label(r), "Gallery": _int(m(r, "gallery_size")), "N": _int(m(r, "n_identify")),
                     "Rank-1 angled": m(r, "rank1_angle"), "Rank-1 frontal": m(r, "rank1_frontal"),
                     "Rank-5 angled": m(r, "rank5_angle"), "Rank-5 frontal": m(r, "rank5_frontal")})
    return pd.DataFrame(rows)


def pick_baseline(group: pd.DataFrame, wanted: dict[str, str]) -> pd.Series:
    """The run matching most of `wanted` (ties: the first in config order)."""
    score = sum((group[k] == v).astype(int) for k, v in wanted.items())
    return group.loc[score.idxmax()]


def paired_comparisons(runs: pd.DataFrame, client, tmp: Path, baseline: dict[str, str],
                       n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each configuration vs the baseline of its (dataset, embedder): Mean(Frontal-GT) on the
    SAME items (joined by item_id, both paired), mean difference, bootstrap 95% CI, Wilcoxon p."""
    rows = []
    for (dataset, embedder), group in runs.groupby(["dataset", "embedder"], sort=True):
        if len(group) < 2:
            continue
        base = pick_baseline(group, baseline)
        base_items = download_table(client, base["run_id"], "items", tmp)
        if base_items is None:
            continue
        for _, r in group.iterrows():
            if r["run_id"] == base["run_id"]:
                continue
            items = download_table(client, r["run_id"], "items", tmp)
            if items is None:
                continue
            joined = _paired_items(base_items, items)
            c = paired_comparison(joined["frontal_to_gt_a"], joined["frontal_to_gt_b"], n_boot=n_boot, seed=seed)
            rows.append({"Dataset": dataset, "Embedder": embedder,
                         "Baseline": f"{base['model']}+{base['enhancer']}", "Config": f"{r['model']}+{r['enhancer']}",
                         "N (paired items)": c.n, "Baseline Mean(Frontal-GT)": c.mean_a,
                         "Config Mean(Frontal-GT)": c.mean_b, "Mean diff": c.mean_diff,
                         "95% CI": f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", "Win rate": c.win_rate,
                         "Wilcoxon p": c.wilcoxon_p})
    return pd.DataFrame(rows)


def _paired_items(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Items measured in both runs with a score in both (status ok in both)."""
    cols = ["item_id", "frontal_to_gt", "status"]
    j = a[cols].merge(b[cols], on="item_id", suffixes=("_a", "_b"))
    j = j[(j.status_a == "ok") & (j.status_b == "ok")]
    return j.dropna(subset=["frontal_to_gt_a", "frontal_to_gt_b"])


def figure_links(runs: pd.DataFrame, client) -> pd.DataFrame:
    rows = []
    for _, r in runs.iterrows():
        for f in client.list_artifacts(r["run_id"], "figures"):
            rows.append({"Run": r["run_name"], "Protocol": r["protocol"], "Figure": Path(f.path).stem,
                         "URI": f"{r['artifact_uri']}/{f.path}"})
    return pd.DataFrame(rows)


# -- Markdown --------------------------------------------------------------------------
def _int(x: float) -> int | str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _cell(x) -> str:
    if isinstance(x, float | np.floating):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x).replace("|", "\\|")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 decimals)."""
    if df.empty:
        return "_(no runs)_"
    head = "| " + " | ".join(_cell(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


SECTIONS = (
    ("table1_models", "Table 1: Model x Dataset (Net Gain = Mean(Frontal-GT) - Mean(Angle-GT), paired items)"),
    ("table2_enhancers", "Table 2: Enhancement x embedder pair (Mean(Frontal-GT) (Net Gain) N, ND = frontal "
                         "faces not detected)"),
    ("table3_robustness", "Table 3: Embedder pair robustness (mean cosine similarity, N pairs)"),
    ("verification", "Verification (10-fold accuracy mean ± std, threshold picked on the other folds)"),
    ("by_yaw", "Net Gain by |yaw| (N)"),
    ("by_pitch", "Net Gain by |pitch| (N)"),
    ("identification", "Identification (rank-k in a gallery of every identity's GT)"),
    ("paired", "Paired comparisons with the baseline (same items; bootstrap 95% CI, Wilcoxon signed-rank)"),
    ("figures", "Figures (MLflow artifact URIs)"),
)


def build_report(client, experiment: str, parent_run: str | None = None,
                 baseline: dict[str, str] | None = None, n_boot: int = 2000) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name (empty tables where no run has the data)."""
    runs = load_runs(client, experiment, parent_run)
    if runs.empty:
        raise SystemExit(f"no finished runs in experiment {experiment!r}"
                         + (f" under parent run {parent_run}" if parent_run else ""))
    by = {p: runs[runs.protocol == p] for p in ("frontalization", "robustness", "verification")}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        return {
            "table1_models": table_models(by["frontalization"]),
            "table2_enhancers": table_enhancers(by["frontalization"]),
            "table3_robustness": table_robustness(by["robustness"]),
            "verification": table_verification(by["verification"], client, t),
            "by_yaw": table_by_pose(by["frontalization"], client, t, "yaw"),
            "by_pitch": table_by_pose(by["frontalization"], client, t, "pitch"),
            "identification": table_identification(by["frontalization"]),
            "paired": paired_comparisons(by["frontalization"], client, t, baseline or DEFAULT_BASELINE, n_boot),
            "figures": figure_links(runs, client),
        }


def write_report(tables: dict[str, pd.DataFrame], out: Path, experiment: str, source: str) -> Path:
    """report.md (every non-empty section) and one CSV per non-empty table."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Report: {experiment}", "", f"Source: `{source}`", ""]
    for name, title in SECTIONS:
        table = tables.get(name, pd.DataFrame())
        if table.empty:
            continue
        table.to_csv(out / f"{name}.csv", index=False)
        lines += [f"## {title}", "", to_markdown(table), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def parse_baseline(text: str) -> dict[str, str]:
    """`model=identity,enhancer=none` -> {"model": "identity", "enhancer": "none"}."""
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in CONFIG_KEYS or not value:
            raise SystemExit(f"--baseline: expected key=value with key in {CONFIG_KEYS}, got {part!r}")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    from frontal_exp.tracking.mlflow_logger import client_for, default_sqlite_uri

    parser = argparse.ArgumentParser(prog="python -m frontal_exp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment (tracking.experiment of the runs)")
    parser.add_argument("--parent-run", default=None, help="only the jobs of this sweep's parent run")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite at <output-root>/mlflow.db")
    parser.add_argument("--output-root", default="outputs", help="output_root of the runs (default: outputs)")
    parser.add_argument("--out", default=None, help="report folder (default: <output-root>/reports/<experiment>)")
    parser.add_argument("--baseline", default="model=identity,enhancer=none",
                        help="baseline of the paired comparisons (the run matching most of key=value,...)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the CIs")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_sqlite_uri(args.output_root)
    client = client_for(uri)
    tables = build_report(client, args.experiment, args.parent_run, parse_baseline(args.baseline), args.bootstrap)
    out = Path(args.out) if args.out else Path(args.output_root) / "reports" / args.experiment
    path = write_report(tables, out, args.experiment, uri + (f" parent run {args.parent_run}" if args.parent_run else ""))
    print(path.read_text())
    print(f"\nreport written to {path.resolve()}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
