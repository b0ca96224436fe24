"""`python -m frontal_exp.report --experiment NAME`: the paper's tables, rebuilt from MLflow.

Reads the finished runs of an experiment (or of one sweep: `--parent-run`) and writes Markdown
and CSV tables in the study's shapes: models x datasets, enhancers x embedder pairs, embedder
robustness, verification, Net Gain by pose, identification, paired comparisons with a
baseline, and links to every logged figure.

A row is a configuration: runs are told apart by their config hash (tag
`frontal_exp.config_hash`, see `frontal_exp.tracking.config_id`; runs logged before it existed:
by their settings from the params). A configuration run several times shows its latest run and
the report counts the older ones it hid. Settings that differ between runs with the same
protocol, dataset, model, enhancer and embedder become extra columns (e.g. `model.strength`).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from frontal_exp.errors import ArtifactError
from frontal_exp.metrics.pose_bins import COLUMNS as POSE_COLUMNS
from frontal_exp.metrics.pose_bins import break_even
from frontal_exp.metrics.stats import paired_comparison
from frontal_exp.tracking.config_id import CONFIG_HASH_TAG, legacy_config_id, settings_of_params

log = logging.getLogger(__name__)

CONFIG_KEYS = ("protocol", "dataset", "model", "enhancer", "embedder")
#: the baseline of paired comparisons: the run matching all of these
DEFAULT_BASELINE = {"model": "identity", "enhancer": "none"}
#: the column telling apart configurations whose differing settings do not show in the params
CONFIG_COLUMN = "config"


# -- reading runs ----------------------------------------------------------------------
def load_runs(client, experiment: str, parent_run: str | None = None) -> pd.DataFrame:
    """Every finished job run, newest first: run_id, start time, config keys, `config_id`,
    `settings` (dict of the settings from the params) and metrics (m.<name>).

    A run logged without a config hash gets the hash of the hashed runs with the same settings
    in its params (when they all have one hash), else an id made from those settings."""
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
        params = r.data.params
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "start_time": r.info.start_time,
               "artifact_uri": r.info.artifact_uri, "config_id": r.data.tags.get(CONFIG_HASH_TAG),
               "params_id": legacy_config_id(params), "settings": settings_of_params(params)}
        row.update({k: params.get(f"run.{k}", "") for k in CONFIG_KEYS})
        row.update({f"m.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        hashed = df[df.config_id.notna()].groupby("params_id")["config_id"].unique()
        same = {pid: ids[0] for pid, ids in hashed.items() if len(ids) == 1}
        df["config_id"] = [cid if isinstance(cid, str) else same.get(pid, pid)
                           for cid, pid in zip(df.config_id, df.params_id, strict=True)]
    return df


def latest_per_configuration(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The latest run of each configuration (sorted by the config keys), and how many older
    runs of the same configurations were left out."""
    if runs.empty:
        return runs, 0
    latest = runs.sort_values("start_time", ascending=False, kind="stable").drop_duplicates("config_id")
    return latest.sort_values(list(CONFIG_KEYS), kind="stable").reset_index(drop=True), len(runs) - len(latest)


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """The settings that tell apart runs with the same config keys (protocol, dataset, model,
    enhancer, embedder), sorted; plus CONFIG_COLUMN when some runs differ only in their
    config hash (e.g. a run logged before config hashes and one after)."""
    if runs.empty:
        return []
    keys: set[str] = set()
    for _, group in runs.groupby(list(CONFIG_KEYS), sort=False):
        settings = list(group["settings"])
        for key in set().union(*settings):
            if len({s.get(key, "") for s in settings}) > 1:
                keys.add(key)
    out = sorted(keys)
    shown = runs[list(CONFIG_KEYS)].assign(**{k: [setting(r, k) for _, r in runs.iterrows()] for k in out})
    if shown.duplicated().any():
        out.append(CONFIG_COLUMN)
    return out


def setting(row: pd.Series, key: str) -> str:
    """A run's value of a setting column ("" where the run has no such setting)."""
    return str(row["config_id"]) if key == CONFIG_COLUMN else row["settings"].get(key, "")


def settings_of(row: pd.Series, keys: Sequence[str]) -> dict[str, str]:
    return {k: setting(row, k) for k in keys}


def download_table(client, run_id: str, name: str, dst: Path) -> pd.DataFrame | None:
    """A table a run logged as tables/<name>.json (MLflow's split format); None when the run
    has no such table (older runs, other protocols). Any other failure (the artifact store
    or server unreachable, a file that cannot be read) raises ArtifactError."""
    artifact = f"tables/{name}.json"
    try:
        if artifact not in {f.path for f in client.list_artifacts(run_id, "tables")}:
            return None
        path = client.download_artifacts(run_id, artifact, str(dst))
        data = json.loads(Path(path).read_text())
    except Exception as exc:  # noqa: BLE001 - MLflow, I/O and JSON errors alike: say which run and file
        raise ArtifactError(f"cannot read {artifact} of run {run_id}: {type(exc).__name__}: {exc}. Check that "
                            "the tracking server / artifact store is reachable and re-run the report") from exc
    return pd.DataFrame(data["data"], columns=data["columns"])


class Tables:
    """The runs' tables (see `download_table`), each downloaded once: the tables, the figures
    and the paired comparisons of one report read the same files."""

    def __init__(self, client, dst: Path) -> None:
        self.client, self.dst = client, Path(dst)
        self._got: dict[tuple[str, str], pd.DataFrame | None] = {}

    def get(self, run_id: str, name: str) -> pd.DataFrame | None:
        if (run_id, name) not in self._got:
            self._got[run_id, name] = download_table(self.client, run_id, name, self.dst)
        return self._got[run_id, name]


def _tables(client, tmp: Path, tables: Tables | None) -> Tables:
    return tables if tables is not None else Tables(client, tmp)


def m(row: pd.Series, key: str) -> float:
    value = row.get(f"m.{key}", float("nan"))
    return float(value) if value is not None else float("nan")


def label(row: pd.Series, extra: Sequence[str] = ()) -> str:
    """model+enhancer | embedder | dataset, then the run's values of the given setting columns."""
    parts = [f"{row['model']}+{row['enhancer']}", row["embedder"], row["dataset"],
             *(f"{k}={v}" for k, v in settings_of(row, extra).items() if v != "")]
    return " | ".join(parts)


# -- the tables ------------------------------------------------------------------------
def table_models(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: Model x Dataset: Mean(Angle-GT), Mean(Frontal-GT), Net Gain (95% CI), N."""
    if runs.empty:
        return pd.DataFrame()
    keys = ["model", "dataset", *[k for k in ("enhancer", "embedder") if runs[k].nunique() > 1]]
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        rows.append({**{k.capitalize(): r[k] for k in keys}, **settings_of(r, extra),
                     "Mean(Angle-GT)": m(r, "angle_to_gt"), "Mean(Frontal-GT)": m(r, "frontal_to_gt"),
                     "Net Gain": m(r, "net_gain"),
                     "95% CI": f"[{m(r, 'net_gain_ci_low'):+.4f}, {m(r, 'net_gain_ci_high'):+.4f}]",
                     "Win rate": m(r, "win_rate"), "N": _int(m(r, "n")),
                     "Not paired": _int(m(r, "not_paired"))})
    return pd.DataFrame(rows)


def table_enhancers(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2: enhancers (rows) x embedder pairs (columns); each cell Mean(Frontal-GT),
    Net Gain, N and the frontal faces not detected (ND). Differing embedder settings name the
    column (`name (key=value)`), the other differing settings are row columns."""
    if runs.empty:
        return pd.DataFrame()
    extra = setting_columns(runs)
    by_embedder = [k for k in extra if k.startswith("embedder.")]
    rows_by = [k for k in ("dataset", "model") if runs[k].nunique() > 1] + ["enhancer"]
    row_settings = [k for k in extra if k not in by_embedder]
    cells: dict[tuple, dict[str, str]] = {}
    columns: list[str] = []
    for _, r in runs.iterrows():
        key = (*(r[k] for k in rows_by), *settings_of(r, row_settings).values())
        column = label_embedder(r, by_embedder)
        if column not in columns:
            columns.append(column)
        cells.setdefault(key, {})[column] = (
            f"{m(r, 'frontal_to_gt'):.4f} ({m(r, 'net_gain'):+.4f}) N={_int(m(r, 'n'))} "
            f"ND={_int(m(r, 'no_face_frontal'))}")
    names = [k.capitalize() for k in rows_by] + row_settings
    out = [{**dict(zip(names, key, strict=True)), **{c: cell.get(c, "") for c in sorted(columns)}}
           for key, cell in cells.items()]
    return pd.DataFrame(out)


def label_embedder(row: pd.Series, extra: Sequence[str]) -> str:
    return _named(row["embedder"], settings_of(row, extra))


def _named(name: str, values: dict[str, str]) -> str:
    """`name (key=value, ...)` for the non-empty values, or the bare name."""
    text = ", ".join(f"{k}={v}" for k, v in values.items() if v != "")
    return f"{name} ({text})" if text else name


def table_robustness(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per embedder pair, mean similarity (N) of Angled vs GT, Angled vs Angled,
    GT vs GT and impostor pairs, and the images with no face found."""
    from frontal_exp.protocols.robustness import KINDS, LABELS

    if runs.empty:
        return pd.DataFrame()
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        row = {"Embedder": r["embedder"], "Dataset": r["dataset"], **settings_of(r, extra)}
        for kind in KINDS:
            n = _int(m(r, f"{kind}_n"))
            row[LABELS[kind].split(" (")[0]] = f"{m(r, kind):.4f} (N={n})" if n else "n/a (N=0)"
        row["No face (images)"] = _int(m(r, "no_face_images"))
        row["Images"] = _int(m(r, "n_images"))
        rows.append(row)
    return pd.DataFrame(rows)


def table_verification(runs: pd.DataFrame, client, tmp: Path, tables: Tables | None = None) -> pd.DataFrame:
    """Verification: one row per run and condition (original / frontalized)."""
    tables = _tables(client, tmp, tables)
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        table = tables.get(r["run_id"], "verification")
        if table is None:
            continue
        for _, t in table.iterrows():
            rows.append({"Dataset": r["dataset"], "Embedder": r["embedder"], "Model": r["model"],
                         "Enhancer": r["enhancer"], **settings_of(r, extra), "Condition": t["condition"],
                         "Accuracy": f"{t['acc_mean']:.4f} ± {t['acc_std']:.4f}", "AUC": t["auc"],
                         "TAR@FAR=1e-3": t.get("tar_far_0.001", float("nan")),
                         "TAR@FAR=1e-2": t.get("tar_far_0.01", float("nan")),
                         "Pairs": _int(t["n_pairs"]), "No-face pairs": _int(t["n_no_face"]),
                         "Excluded": _int(t.get("n_excluded", float("nan"))), "Scored": _int(t["n_scored"]),
                         "Folds": _int(t.get("n_folds", float("nan")))})
    return pd.DataFrame(rows)


def table_by_pose(runs: pd.DataFrame, client, tmp: Path, axis: str = "yaw",
                  tables: Tables | None = None) -> pd.DataFrame:
    """Net Gain (N) per |yaw| bin (rows) for each configuration (columns)."""
    tables = _tables(client, tmp, tables)
    extra = setting_columns(runs)
    columns: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for _, r in runs.iterrows():
        table = tables.get(r["run_id"], f"by_{axis}")
        if table is None:
            continue
        col = columns.setdefault(label(r, extra), {})
        for _, t in table.iterrows():
            if t["bin"] not in order:
                order.append(t["bin"])
            n = _int(t["n"])
            col[t["bin"]] = f"{t['net_gain']:+.4f} (N={n})" if n else "-"
    if not columns:
        return pd.DataFrame()
    return pd.DataFrame([{f"|{axis}| bin": b, **{c: v.get(b, "-") for c, v in columns.items()}} for b in order])


def table_gains_by_pose(runs: pd.DataFrame, tables: Tables, axis: str = "yaw") -> pd.DataFrame:
    """One row per configuration and |yaw| bin: N, Mean(Angle-GT), Net Gain and Fusion Gain
    with their 95% paired-bootstrap CIs (the by-pose tables' own numbers)."""
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        table = tables.get(r["run_id"], f"by_{axis}")
        if table is None:
            continue
        for _, t in table[table["n"].fillna(0) > 0].iterrows():
            row = {"Config": label(r, extra), f"|{axis}| bin": t["bin"], "N": _int(t["n"]),
                   "Mean(Angle-GT)": t.get("angle_to_gt", np.nan)}
            for gain, name in (("net_gain", "Net Gain"), ("fusion_gain", "Fusion Gain")):
                row[name] = t.get(gain, np.nan)
                low, high = t.get(f"{gain}_ci_low", np.nan), t.get(f"{gain}_ci_high", np.nan)
                row[f"{name} 95% CI"] = "-" if pd.isna(low) else f"[{low:+.4f}, {high:+.4f}]"
            rows.append(row)
    return pd.DataFrame(rows)


def table_identification(runs: pd.DataFrame) -> pd.DataFrame:
    """Rank-1 / rank-5 of angled inputs (the baseline) and frontalized faces, per run."""
    if "m.rank1_frontal" not in runs:
        return pd.DataFrame()
    extra = setting_columns(runs)
    rows = []
    for _, r in runs[runs["m.rank1_frontal"].notna()].iterrows():
        rows.append({"Config": label(r, extra), "Gallery": _int(m(r, "gallery_size")), "N": _int(m(r, "n_identify")),
                     "Rank-1 angled": m(r, "rank1_angle"), "Rank-1 frontal": m(r, "rank1_frontal"),
                     "Rank-5 angled": m(r, "rank5_angle"), "Rank-5 frontal": m(r, "rank5_frontal")})
    return pd.DataFrame(rows)


def pose_numbers(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """A downloaded by-pose table with numeric columns (JSON nulls, e.g. the fusion columns of
    a run without fusion, come back as None), and every column of today's tables (nan where an
    older run did not log it, e.g. the CIs)."""
    if table is None:
        return None
    table = table.assign(**{c: float("nan") for c in POSE_COLUMNS if c not in table})
    return table.assign(**{c: pd.to_numeric(table[c], errors="coerce") for c in table.columns if c != "bin"})


def _edge(table: pd.DataFrame | None, gain: str) -> str:
    if table is None or gain not in table or table[gain].isna().all():
        return "n/a"
    edge = break_even(table, gain)
    return "none" if edge is None else f"{edge:g}"


def table_break_even(runs: pd.DataFrame, tables: Tables) -> pd.DataFrame:
    """Per configuration: the break-even |yaw| and |pitch| of Net Gain and Fusion Gain, the
    lowest bin edge from which the gain's 95% CI lower bound stays >= 0 in every bin above it
    (`none`: no such edge; `n/a`: the run has no such gain)."""
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        by = {axis: pose_numbers(tables.get(r["run_id"], f"by_{axis}")) for axis in ("yaw", "pitch")}
        if all(t is None for t in by.values()):
            continue
        row = {"Config": label(r, extra)}
        for gain, name in (("net_gain", "Net Gain"), ("fusion_gain", "Fusion Gain")):
            for axis, t in by.items():
                row[f"{name} break-even |{axis}| (deg)"] = _edge(t, gain)
        rows.append(row)
    return pd.DataFrame(rows)


#: the setting compared by the flip view
FLIP = "embedder.flip"


def flip_pairs(runs: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """(name, run with flip false, run with flip true) for each pair of runs that differ only
    in `embedder.flip`; the name is the configuration's label without the flip setting."""
    known = runs[[str(s.get(FLIP, "")).lower() in ("true", "false") for s in runs["settings"]]]
    extra = [k for k in setting_columns(runs) if k != FLIP]
    groups: dict[tuple, dict[str, pd.Series]] = {}
    for _, r in known.iterrows():
        rest = tuple(sorted((k, v) for k, v in r["settings"].items() if k != FLIP))
        key = (*(r[k] for k in CONFIG_KEYS), rest)
        groups.setdefault(key, {})[str(r["settings"][FLIP]).lower()] = r
    return [(label(g["false"], extra), g["false"], g["true"]) for g in groups.values() if len(g) == 2]


def table_flip(pairs: list[tuple[str, pd.Series, pd.Series]], tables: Tables, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Runs that differ only in embedder.flip, side by side: each run's means and Net Gain,
    then the paired effect of flip (true - false) on the items scored in both runs (status ok
    in both), with its bootstrap 95% CI, on Angle-GT, Frontal-GT and the per-item Net Gain."""
    rows = []
    for name, off, on in pairs:
        row = {"Config": name}
        for key, title in (("angle_to_gt", "Mean(Angle-GT)"), ("frontal_to_gt", "Mean(Frontal-GT)"),
                           ("net_gain", "Net Gain"), ("n", "N")):
            for flip, r in (("false", off), ("true", on)):
                row[f"{title} flip={flip}"] = _int(m(r, key)) if key == "n" else m(r, key)
        a, b = tables.get(off["run_id"], "items"), tables.get(on["run_id"], "items")
        cols = ["item_id", "angle_to_gt", "frontal_to_gt", "status"]
        if a is not None and b is not None and set(cols) <= {*a.columns} & {*b.columns}:
            j = a[cols].merge(b[cols], on="item_id", suffixes=("_off", "_on"))
            j = j[(j.status_off == "ok") & (j.status_on == "ok")].dropna().sort_values("item_id")
            row["Paired items"] = len(j)
            for what, x, y in (
                ("Angle-GT", j.angle_to_gt_off, j.angle_to_gt_on),
                ("Frontal-GT", j.frontal_to_gt_off, j.frontal_to_gt_on),
                ("Net Gain", j.frontal_to_gt_off - j.angle_to_gt_off, j.frontal_to_gt_on - j.angle_to_gt_on),
            ):
                c = paired_comparison(x.to_numpy(float), y.to_numpy(float), n_boot=n_boot, seed=seed)
                row[f"Flip effect on {what}"] = c.mean_diff
                row[f"Flip effect on {what} 95% CI"] = f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_runs(group: pd.DataFrame, wanted: dict[str, str]) -> pd.DataFrame:
    """The runs matching every key=value of `wanted`, in config order."""
    match = pd.Series(True, index=group.index)
    for key, value in wanted.items():
        match &= group[key] == value
    return group[match]


def find_baseline(group: pd.DataFrame, wanted: dict[str, str]) -> pd.Series | None:
    """The run matching every key=value of `wanted` (the first in config order), or None."""
    found = baseline_runs(group, wanted)
    return found.iloc[0] if len(found) else None


def paired_comparisons(runs: pd.DataFrame, client, tmp: Path, baseline: dict[str, str],
                       n_boot: int = 2000, seed: int = 0,
                       tables: Tables | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Each configuration vs the baseline of its (dataset, embedder, other differing settings,
    e.g. dataset.limit): Mean(Frontal-GT) on the SAME items (joined by item_id, both paired),
    mean difference, bootstrap 95% CI, Wilcoxon p. Also one note per group left out because
    no run matches the whole baseline (never compared against some other run instead)."""
    if runs.empty:
        return pd.DataFrame(), []
    tables = _tables(client, tmp, tables)
    extra = setting_columns(runs)
    compared = [k for k in extra if k.startswith(("model.", "enhancer."))]
    context = [k for k in extra if k not in compared and k != CONFIG_COLUMN]
    wanted = ", ".join(f"{k}={v}" for k, v in baseline.items())
    runs = runs.assign(_context=[tuple(settings_of(r, context).values()) for _, r in runs.iterrows()])
    rows, notes = [], []
    for (dataset, embedder, values), group in runs.groupby(["dataset", "embedder", "_context"], sort=True):
        where = {"dataset": dataset, "embedder": embedder, **dict(zip(context, values, strict=True))}
        base = find_baseline(group, baseline)
        if base is None:
            notes.append(f"No baseline run ({wanted}) for {', '.join(f'{k}={v}' for k, v in where.items())}: "
                         f"its {len(group)} configuration(s) are not compared (see --baseline).")
            continue
        if len(group) < 2:
            continue
        matches = len(baseline_runs(group, baseline))
        if matches > 1:
            notes.append(f"{matches} runs match the baseline ({wanted}) for "
                         f"{', '.join(f'{k}={v}' for k, v in where.items())}: the first in config order, "
                         f"{_named(base['model'] + '+' + base['enhancer'], settings_of(base, compared))}, is used.")
        base_items = tables.get(base["run_id"], "items")
        if base_items is None:
            continue
        for _, r in group.iterrows():
            if r["run_id"] == base["run_id"]:
                continue
            items = tables.get(r["run_id"], "items")
            if items is None:
                continue
            joined = _paired_items(base_items, items)
            c = paired_comparison(joined["frontal_to_gt_a"], joined["frontal_to_gt_b"], n_boot=n_boot, seed=seed)
            rows.append({"Dataset": dataset, "Embedder": embedder, **settings_of(r, context),
                         "Baseline": _named(f"{base['model']}+{base['enhancer']}", settings_of(base, compared)),
                         "Config": _named(f"{r['model']}+{r['enhancer']}", settings_of(r, compared)),
                         "N (paired items)": c.n, "Baseline Mean(Frontal-GT)": c.mean_a,
                         "Config Mean(Frontal-GT)": c.mean_b, "Mean diff": c.mean_diff,
                         "95% CI": f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", "Win rate": c.win_rate,
                         "Wilcoxon p": c.wilcoxon_p})
    return pd.DataFrame(rows), notes


def _paired_items(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Items measured in both runs with a score in both (status ok in both)."""
    cols = ["item_id", "frontal_to_gt", "status"]
    j = a[cols].merge(b[cols], on="item_id", suffixes=("_a", "_b"))
    j = j[(j.status_a == "ok") & (j.status_b == "ok")]
    return j.dropna(subset=["frontal_to_gt_a", "frontal_to_gt_b"])


def figure_links(runs: pd.DataFrame, client) -> pd.DataFrame:
    extra = setting_columns(runs)
    rows = []
    for _, r in runs.iterrows():
        for f in client.list_artifacts(r["run_id"], "figures"):
            rows.append({"Run": r["run_name"], "Protocol": r["protocol"], **settings_of(r, extra),
                         "Figure": Path(f.path).stem,
                         "URI": f"{r['artifact_uri']}/{f.path}"})
    return pd.DataFrame(rows)


# -- Markdown --------------------------------------------------------------------------
def _int(x: float) -> int | str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def cell_text(x) -> str:
    """A table value as the report shows it (floats to 4 decimals)."""
    if isinstance(x, float | np.floating):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def _cell(x) -> str:
    return cell_text(x).replace("|", "\\|")


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
    ("verification", "Verification (k-fold accuracy mean ± std, threshold picked on the other folds; "
                     "no-face pairs scored low or excluded in every condition alike)"),
    ("by_yaw", "Net Gain by |yaw| (N)"),
    ("by_pitch", "Net Gain by |pitch| (N)"),
    ("gains_by_yaw", "Net Gain and Fusion Gain by |yaw| with 95% CIs"),
    ("break_even", "Break-even pose (lowest bin edge from which the gain is positive with a 95% CI lower bound "
                   ">= 0)"),
    ("flip", "Flip test-time augmentation: runs that differ only in embedder.flip"),
    ("identification", "Identification (rank-k in a gallery of every identity's GT)"),
    ("paired", "Paired comparisons with the baseline (same items; bootstrap 95% CI, Wilcoxon signed-rank)"),
    ("figures", "Figures (MLflow artifact URIs)"),
)

#: how to read each section, one line (report.md and report.html)
EXPLAIN = {
    "table1_models": "Cosine similarity to the GT face of the angled input and of the frontalized face, over the "
                     "items where all three faces were found; Net Gain > 0: frontalization brought the face "
                     "closer to its GT (CI: paired bootstrap over items).",
    "table2_enhancers": "Each cell: Mean(Frontal-GT) (Net Gain) over N paired items, and ND frontal faces the "
                        "embedder's detector did not find; compare rows for the enhancer, columns for the embedder.",
    "table3_robustness": "No frontalization: how close each kind of pair is for an embedder (higher Angled vs GT "
                         "with a low Impostor score = more pose-robust).",
    "verification": "The same same-person / different-person pairs scored in each condition (original images, "
                    "frontalized, ...): accuracy, ROC AUC and TAR at a fixed FAR per condition.",
    "by_yaw": "Net Gain of each configuration (columns) per |yaw| bin (rows), N items per bin; the figure "
              "shows the same numbers with their 95% CI.",
    "by_pitch": "As by |yaw|, binned by |pitch|.",
    "gains_by_yaw": "Per configuration and |yaw| bin: Mean(Angle-GT), Net Gain (frontal vs angle) and Fusion "
                    "Gain (fused probe vs angle) on the same items, each with its paired-bootstrap 95% CI.",
    "break_even": "From which |yaw| (|pitch|) on frontalization (fusion) helps, by its CI: every bin from there "
                  "up has a positive mean gain and a CI lower bound >= 0; none: no such bin edge; n/a: the run "
                  "logged no such gain. A gain of exactly 0 (identity, CI [0, 0]) is no gain, so none.",
    "flip": "Each run's means with flip false and true, then the effect of flip (true - false) on the items "
            "scored in both runs, with its bootstrap 95% CI.",
    "identification": "Rank-1 / rank-5 of the angled inputs (the baseline) and of the frontalized faces, on the "
                      "same items, against a gallery of every identity's GT.",
    "paired": "Each configuration against the baseline on the items both scored: Mean diff > 0 with a CI above "
              "0 means it beats the baseline.",
    "figures": "Every figure the runs logged, where MLflow stores it.",
}

#: at most this many configurations show their sample triplets in report.html
MAX_TRIPLETS = 4
#: triplet images are downscaled to at most this width (pixels) in report.html
TRIPLET_WIDTH = 480
#: ... and show their first rows (items) only
TRIPLET_ROWS = 4


@dataclass
class ReportData:
    """The numbers the report's figures are drawn from, per configuration label (as in the
    by-pose tables): by-pose tables (numeric), items tables, sample triplets (PNG bytes,
    JPEG, downscaled) and the flip pairs (name, label with flip false, label with flip true)."""

    configurations: list[str] = field(default_factory=list)
    pose: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    items: dict[str, pd.DataFrame] = field(default_factory=dict)
    triplets: dict[str, bytes] = field(default_factory=dict)
    flip: list[tuple[str, str, str]] = field(default_factory=list)
    #: configurations with triplets that report.html does not show (over MAX_TRIPLETS)
    triplets_left_out: int = 0


@dataclass
class Report:
    """Every table of the report by name (empty where no run has the data), and notes: lines
    printed under a section's title (key: the section's name) or, key "", under the title;
    `data`: what the figures of report.html are drawn from."""

    tables: dict[str, pd.DataFrame]
    notes: dict[str, list[str]] = field(default_factory=dict)
    data: ReportData = field(default_factory=ReportData)


#: the tables each protocol's runs are read for
NEEDED = {"frontalization": ("items", "by_yaw", "by_pitch"), "verification": ("verification",)}


def build_report(client, experiment: str, parent_run: str | None = None,
                 baseline: dict[str, str] | None = None, n_boot: int = 2000) -> Report:
    """The report of the latest run of each configuration."""
    from frontal_exp.quiet import progress_bar

    runs, hidden = latest_per_configuration(load_runs(client, experiment, parent_run))
    if runs.empty:
        raise SystemExit(f"no finished runs in experiment {experiment!r}"
                         + (f" under parent run {parent_run}" if parent_run else ""))
    by = {p: runs[runs.protocol == p] for p in ("frontalization", "robustness", "verification")}
    front = by["frontalization"]
    extra = setting_columns(front)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        got = Tables(client, t)
        data = ReportData(configurations=[label(r, setting_columns(runs)) for _, r in runs.iterrows()])
        # every download up front, behind one progress bar (shown on a terminal only)
        for _, r in progress_bar(list(runs.iterrows()), "report: reading runs", unit="run"):
            for name in NEEDED.get(r["protocol"], ()):
                got.get(r["run_id"], name)
            if r["protocol"] == "frontalization":
                if len(data.triplets) < MAX_TRIPLETS:
                    image = download_triplets(client, r["run_id"], t)
                    if image is not None:
                        data.triplets[label(r, extra)] = image
                elif has_artifact(client, r["run_id"], TRIPLETS):
                    data.triplets_left_out += 1
        for _, r in front.iterrows():
            name = label(r, extra)
            for axis in ("yaw", "pitch"):
                table = pose_numbers(got.get(r["run_id"], f"by_{axis}"))
                if table is not None:
                    data.pose.setdefault(axis, {})[name] = table
            items = got.get(r["run_id"], "items")
            if items is not None:
                data.items[name] = items
        pairs = flip_pairs(front)
        data.flip = [(name, label(off, extra), label(on, extra)) for name, off, on in pairs]
        paired, paired_notes = paired_comparisons(front, client, t, baseline or DEFAULT_BASELINE, n_boot,
                                                  tables=got)
        tables = {
            "table1_models": table_models(front),
            "table2_enhancers": table_enhancers(front),
            "table3_robustness": table_robustness(by["robustness"]),
            "verification": table_verification(by["verification"], client, t, tables=got),
            "by_yaw": table_by_pose(front, client, t, "yaw", tables=got),
            "by_pitch": table_by_pose(front, client, t, "pitch", tables=got),
            "gains_by_yaw": table_gains_by_pose(front, got),
            "break_even": table_break_even(front, got),
            "flip": table_flip(pairs, got, n_boot),
            "identification": table_identification(front),
            "paired": paired,
            "figures": figure_links(runs, client),
        }
    head = [f"{len(runs)} configuration{'s' * (len(runs) != 1)}, one row each (its latest run)."]
    if hidden:
        head.append(f"{hidden} older run{'s' * (hidden != 1)} of the same configurations hidden (latest kept).")
    return Report(tables, {"": head, "paired": paired_notes}, data)


#: a frontalization run's sample triplets (Angled | Frontal | GT), shown in report.html
TRIPLETS = "figures/triplets.png"


def has_artifact(client, run_id: str, path: str) -> bool:
    folder = str(Path(path).parent)
    return path in {f.path for f in client.list_artifacts(run_id, folder)}


def download_triplets(client, run_id: str, dst: Path) -> bytes | None:
    """The first TRIPLET_ROWS rows of the run's triplets figure as JPEG bytes, downscaled to
    TRIPLET_WIDTH; None when the run has none (`tracking.log_images=false`). A download that
    fails raises ArtifactError."""
    from frontal_exp.figures import encode_image, grid_rows
    from frontal_exp.images import read_image

    try:
        if not has_artifact(client, run_id, TRIPLETS):
            return None
        path = client.download_artifacts(run_id, TRIPLETS, str(dst))
        return encode_image(grid_rows(read_image(path), TRIPLET_ROWS), ".jpg", max_width=TRIPLET_WIDTH)
    except Exception as exc:  # noqa: BLE001 - MLflow, I/O and decoding errors alike: say which run and file
        raise ArtifactError(f"cannot read {TRIPLETS} of run {run_id}: {type(exc).__name__}: {exc}. Check that "
                            "the tracking server / artifact store is reachable and re-run the report") from exc


def write_report(report: Report, out: Path, experiment: str, source: str) -> Path:
    """report.md (every section with a table or a note), one CSV per non-empty table, the
    report's figures as PNGs in figures/, and report.html (the same tables and the figures
    embedded, one self-contained page). Returns report.md's path."""
    from frontal_exp.report_html import report_figures, write_html

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Report: {experiment}", "", f"Source: `{source}`", "", *_note_lines(report.notes.get(""))]
    for name, title in SECTIONS:
        table = report.tables.get(name, pd.DataFrame())
        notes = report.notes.get(name)
        if table.empty and not notes:
            continue
        lines += [f"## {title}", "", EXPLAIN[name], "", *_note_lines(notes)]
        if not table.empty:
            table.to_csv(out / f"{name}.csv", index=False)
            lines += [to_markdown(table), ""]
    figures = report_figures(report.data)
    if figures:
        (out / "figures").mkdir(exist_ok=True)
        lines += ["## Figures of this report", "", "Embedded in report.html; also here as PNGs:", ""]
        for fig in figures:
            (out / "figures" / f"{fig.name}.png").write_bytes(fig.png)
            lines.append(f"- [{fig.title}](figures/{fig.name}.png)")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    write_html(report, out / "report.html", experiment, source, figures)
    return path


def _note_lines(notes: list[str] | None) -> list[str]:
    return [*(f"- {n}" for n in notes), ""] if notes else []


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
    from frontal_exp.quiet import configure
    from frontal_exp.tracking.mlflow_logger import client_for, default_sqlite_uri

    parser = argparse.ArgumentParser(prog="python -m frontal_exp.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment (tracking.experiment of the runs)")
    parser.add_argument("--parent-run", default=None, help="only the jobs of this sweep's parent run")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite at <output-root>/mlflow.db")
    parser.add_argument("--output-root", default="outputs", help="output_root of the runs (default: outputs)")
    parser.add_argument("--out", default=None, help="report folder (default: <output-root>/reports/<experiment>)")
    parser.add_argument("--baseline", default="model=identity,enhancer=none",
                        help="baseline of the paired comparisons: the run matching every key=value (default: %(default)s); "
                             "groups without one are left out, with a note in the report")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the CIs")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party logs and progress bars (MLflow); default: quiet")
    args = parser.parse_args(argv)
    configure(verbose=args.verbose)
    # one progress bar per downloaded table is noise; -v (or the variable set to true) shows them
    if not args.verbose:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_sqlite_uri(args.output_root)
    client = client_for(uri)
    report = build_report(client, args.experiment, args.parent_run, parse_baseline(args.baseline), args.bootstrap)
    out = Path(args.out) if args.out else Path(args.output_root) / "reports" / args.experiment
    path = write_report(report, out, args.experiment, uri + (f" parent run {args.parent_run}" if args.parent_run else ""))
    print(path.read_text())
    print(f"\nreport written to {path.resolve()} and {(out / 'report.html').resolve()}", file=sys.stderr)
    return path


def sweep_report(client, experiment: str, parent_run: str, out: Path, source: str, n_boot: int = 2000) -> Path:
    """The report of one sweep (the finished jobs under its parent run) written to `out`, and
    its report.html and report.md logged as artifacts of the parent run, so the MLflow UI
    shows the page. Returns report.html's path."""
    from frontal_exp.quiet import is_verbose

    if not is_verbose():
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    report = build_report(client, experiment, parent_run, n_boot=n_boot)
    md = write_report(report, Path(out), experiment, f"{source} parent run {parent_run}")
    html = md.with_name("report.html")
    client.log_artifact(parent_run, str(html))
    client.log_artifact(parent_run, str(md))
    return html


def log_sweep_report(client, experiment: str, parent_run: str, out: Path, source: str,
                     n_boot: int = 2000) -> Path | None:
    """`sweep_report` for the sweep callback: prints where the report went, and never fails
    the sweep: any error (SystemExit included) is printed as one warning line, None returned."""
    try:
        html = sweep_report(client, experiment, parent_run, out, source, n_boot)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the sweep's results stand without a report
        reason = " ".join(str(exc).split())[:300]
        print(f"warning: no sweep report: {type(exc).__name__}: {reason}", file=sys.stderr, flush=True)
        return None
    print(f"Sweep report: {html} (also the artifact report.html of parent run {parent_run})", flush=True)
    return html


if __name__ == "__main__":
    main()
