"""`python -m frontal_exp.report`: the study's table shapes rebuilt from MLflow runs, paired
comparisons checked against the logged items, one row per configuration (config hash), and a
demo recipe swept end to end."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from frontal_exp.errors import ArtifactError
from frontal_exp.evaluation import evaluate
from frontal_exp.metrics.stats import paired_comparison
from frontal_exp.protocols.base import RunResult
from frontal_exp.report import (
    EXPLAIN,
    SECTIONS,
    build_report,
    download_table,
    log_sweep_report,
    main,
    to_markdown,
    write_report,
)
from frontal_exp.report_html import item_differences
from frontal_exp.tracking.config_id import (
    CANONICAL_ARTIFACT,
    CONFIG_HASH_TAG,
    canonical_config,
    config_hash,
)
from frontal_exp.tracking.mlflow_logger import client_for, default_sqlite_uri, log_result
from tests.conftest import compose_config, prepare_output_root
from tests.test_end_to_end import run_cli
from tests.test_protocols import shared_cache

REPO = Path(__file__).resolve().parents[1]
FAST = ["eval.bootstrap=100", "eval.grid_samples=2", "device=cpu", "dataset.limit=8", "tracking.experiment=rep"]


@pytest.fixture(scope="module")
def logged_runs(tmp_path_factory) -> tuple[Path, dict[str, object]]:
    """A small "sweep" logged in-process: four frontalization configs (one run twice, two
    differing only in model.strength; the by_pose and identification analyses are on by
    default), robustness and verification, all on the demo set; and in experiment `flip`, two
    mesh3d runs that differ only in embedder.flip."""
    root = tmp_path_factory.mktemp("report")
    cache = shared_cache(tmp_path_factory)
    results = {}
    for name, overrides in {
        "base_old": ["model=identity", "enhancer=none"],
        "base": ["model=identity", "enhancer=none"],
        "sharp": ["model=identity", "enhancer=sharp"],
        "mesh3d": ["model=mesh3d", "enhancer=none"],
        "mesh3d_half": ["model=mesh3d", "enhancer=none", "model.strength=0.5"],
        "robustness": ["protocol=robustness", "protocol.max_pairs=20"],
        "verification": ["protocol=verification", "protocol.max_pairs=40", "model=mesh3d"],
    }.items():
        results[name] = evaluate(compose_config([*overrides, cache, *FAST], root))
    # two runs that differ only in embedder.flip, in their own experiment (the flip view)
    flip = [o for o in FAST if not o.startswith("tracking.experiment=")] + ["tracking.experiment=flip"]
    for name, overrides in {"flip_off": ["model=mesh3d", "enhancer=none"],
                            "flip_on": ["model=mesh3d", "enhancer=none", "embedder.flip=true"]}.items():
        results[name] = evaluate(compose_config([*overrides, cache, *flip], root))
    return root, results


def test_report_reproduces_the_table_shapes(logged_runs, tmp_path):
    root, results = logged_runs
    out = tmp_path / "report"
    path = main(["--experiment", "rep", "--output-root", str(root), "--out", str(out), "--bootstrap", "100"])
    text = path.read_text()
    for title in ("Table 1: Model x Dataset", "Table 2: Enhancement x embedder pair", "Table 3: Embedder pair",
                  "Verification", "Net Gain by |yaw|", "Identification", "Paired comparisons", "Figures"):
        assert title in text, title

    t1 = pd.read_csv(out / "table1_models.csv")
    # the configuration run twice counts once (its latest run), and the report says so;
    # the two strengths of mesh3d are two rows, told apart by a model.strength column
    assert len(t1) == 4
    assert "- 1 older run of the same configurations hidden (latest kept)." in text
    assert {"Model", "Dataset", "Enhancer", "model.strength", "Mean(Angle-GT)", "Mean(Frontal-GT)", "Net Gain",
            "N"} <= set(t1.columns)
    for name, strength in (("mesh3d", 1.0), ("mesh3d_half", 0.5)):
        mesh = t1[(t1.Model == "mesh3d") & (t1["model.strength"] == strength)].iloc[0]
        assert mesh["Net Gain"] == pytest.approx(results[name].metrics["net_gain"])
        assert mesh["N"] == results[name].metrics["n"]
    assert results["mesh3d"].metrics["net_gain"] != pytest.approx(results["mesh3d_half"].metrics["net_gain"])

    t2 = pd.read_csv(out / "table2_enhancers.csv")
    assert "scrfd500m_mbf" in t2.columns and set(t2.Enhancer) == {"none", "sharp"}
    assert t2.scrfd500m_mbf.str.contains("N=").all() and t2.scrfd500m_mbf.str.contains("ND=").all()

    t3 = pd.read_csv(out / "table3_robustness.csv")
    assert t3.columns.tolist()[:6] == ["Embedder", "Dataset", "Angled vs GT", "Angled vs Angled", "GT vs GT",
                                       "Impostor"]
    rob = results["robustness"].metrics
    assert t3.loc[0, "Angled vs GT"] == f"{rob['angle_vs_gt']:.4f} (N={int(rob['angle_vs_gt_n'])})"
    assert t3.loc[0, "GT vs GT"] == "n/a (N=0)" and t3.loc[0, "Impostor"].endswith("(N=20)")

    ver = pd.read_csv(out / "verification.csv")
    assert ver.Condition.tolist() == ["original", "frontalized", "fused"]
    assert (ver.Pairs == results["verification"].metrics["n_pairs"]).all()
    assert ver.AUC.iloc[0] == pytest.approx(results["verification"].metrics["original.auc"])

    by_yaw = pd.read_csv(out / "by_yaw.csv")
    assert by_yaw.columns[0] == "|yaw| bin" and len(by_yaw.columns) == 1 + 4  # one column per config
    assert {c for c in by_yaw.columns if c.startswith("mesh3d")} == {
        "mesh3d+none | scrfd500m_mbf | demo | model.strength=0.5",
        "mesh3d+none | scrfd500m_mbf | demo | model.strength=1.0"}

    figures = pd.read_csv(out / "figures.csv")
    assert {"triplets", "robustness_hist", "roc", "score_hist", "by_pose", "identification"} <= set(figures.Figure)
    assert figures.URI.str.startswith("file:").all()


def test_paired_comparisons_match_the_items_tables(logged_runs, tmp_path):
    root, results = logged_runs
    out = tmp_path / "report"
    main(["--experiment", "rep", "--output-root", str(root), "--out", str(out), "--bootstrap", "100"])
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired.Baseline) == {"identity+none"}
    assert set(paired.Config) == {"identity+sharp", "mesh3d+none (model.strength=1.0)",
                                  "mesh3d+none (model.strength=0.5)"}
    # recompute mesh3d vs baseline by hand from the in-memory records
    base = {r.item_id: r.frontal_to_gt for r in results["base"].records if r.paired}
    other = {r.item_id: r.frontal_to_gt for r in results["mesh3d"].records if r.paired}
    common = sorted(set(base) & set(other))
    expected = paired_comparison([base[i] for i in common], [other[i] for i in common], n_boot=100)
    row = paired[paired.Config == "mesh3d+none (model.strength=1.0)"].iloc[0]
    assert row["N (paired items)"] == expected.n == len(common)
    assert row["Mean diff"] == pytest.approx(expected.mean_diff)
    assert row["Wilcoxon p"] == pytest.approx(expected.wilcoxon_p, nan_ok=True)


# -- report.html ------------------------------------------------------------------------
class _Tables(HTMLParser):
    """The tables of an HTML page, by the id of the <h2> before each: rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._section = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._section = dict(attrs).get("id")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def markdown_section(text: str, title: str) -> list[list[str]]:
    """The rows (header first, no separator) of the Markdown table under `## title`."""
    block = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def embedded_images(page: str) -> dict[str, list[bytes]]:
    """Every <img>'s data by MIME type; fails on an image that is not a data URI."""
    out: dict[str, list[bytes]] = {}
    for src in re.findall(r'<img [^>]*src="([^"]*)"', page):
        mime, _, data = src.removeprefix("data:").partition(";base64,")
        assert src.startswith("data:image/") and data, f"not an embedded image: {src[:80]}"
        out.setdefault(mime, []).append(base64.b64decode(data, validate=True))
    return out


def test_report_html_is_one_self_contained_page_matching_the_markdown(logged_runs, tmp_path):
    root, results = logged_runs
    out = tmp_path / "report"
    md = main(["--experiment", "rep", "--output-root", str(root), "--out", str(out), "--bootstrap", "100"]).read_text()
    page = (out / "report.html").read_text()
    # nothing to fetch: no remote (or any) src/href, script or stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "<script" not in page and "<link" not in page
    # the figures, each embedded as a PNG (also saved next to report.md), then one triplet per configuration
    images = embedded_images(page)
    for name in ("net_gain_by_yaw", "fusion_gain_by_yaw", "paired_differences"):
        figure = re.search(rf'<figure id="fig-{name}"><img [^>]*src="data:image/png;base64,([^"]+)"', page)
        assert figure, name
        png = base64.b64decode(figure.group(1))
        assert png == (out / "figures" / f"{name}.png").read_bytes()
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] > 400 and image.std() > 10
    assert len(images["image/png"]) == 3
    assert len(images["image/jpeg"]) == 4  # base, sharp, mesh3d, mesh3d_half: one configuration each
    for jpeg in images["image/jpeg"]:
        triplets = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert triplets.shape[1] <= 480 and triplets.std() > 10
    # the header: experiment, date, source, configurations, how rows are de-duplicated
    assert "<h1>Report: rep</h1>" in page and "Generated 20" in page and html.escape(default_sqlite_uri(root)) in page
    assert "6 configurations</p>" in page and "<li>1 older run of the same configurations hidden (latest kept).</li>" in page
    assert "config hash" in page
    # every table as in report.md, cell for cell, each with its one-line explanation
    parsed = _Tables()
    parsed.feed(page)
    for name, title in SECTIONS:
        if name in ("figures",) or f"## {title}" not in md:
            continue
        assert parsed.tables[name] == markdown_section(md, title), name
        assert f'<p class="explain">{html.escape(EXPLAIN[name])}</p>' in page
    table1 = parsed.tables["table1_models"]
    gain = table1[0].index("Net Gain")
    for name, strength in (("mesh3d", "1.0"), ("mesh3d_half", "0.5")):
        row = next(r for r in table1[1:] if r[0] == "mesh3d" and strength in r)
        assert row[gain] == f"{results[name].metrics['net_gain']:.4f}"
    assert {r[0] for r in table1[1:]} == {"identity", "mesh3d"} and len(table1) == 1 + 4


def test_report_figures_are_drawn_from_the_runs_tables(logged_runs):
    """The by-pose tables and items behind the figures are the runs' own, read back from
    MLflow; the break-even of each configuration is the one its run logged."""
    root, results = logged_runs
    report = build_report(client_for(default_sqlite_uri(root)), "rep", n_boot=100)
    yaw, items = report.data.pose["yaw"], report.data.items
    assert sorted(yaw) == sorted(items) == [
        "identity+none | scrfd500m_mbf | demo", "identity+sharp | scrfd500m_mbf | demo",
        "mesh3d+none | scrfd500m_mbf | demo | model.strength=0.5", "mesh3d+none | scrfd500m_mbf | demo | model.strength=1.0"]
    name = "mesh3d+none | scrfd500m_mbf | demo | model.strength=0.5"
    logged = results["mesh3d_half"].tables["by_yaw"]
    for column in ("n", "net_gain", "net_gain_ci_low", "net_gain_ci_high", "fusion_gain_ci_low"):
        assert yaw[name][column].to_numpy(float) == pytest.approx(logged[column].to_numpy(float), nan_ok=True)
    expected = sorted(r.frontal_to_gt - r.angle_to_gt for r in results["mesh3d_half"].records if r.paired)
    assert sorted(item_differences(items[name])) == pytest.approx(expected)
    breaks = report.tables["break_even"].set_index("Config")
    for run, label in (("mesh3d_half", name), ("base", "identity+none | scrfd500m_mbf | demo")):
        for gain in ("net_gain", "fusion_gain"):
            shown = breaks.loc[label, f"{'Net' if gain == 'net_gain' else 'Fusion'} Gain break-even |yaw| (deg)"]
            assert shown == results[run].params[f"{gain}_break_even_yaw"]
    # the long table: each bin's gains and CIs, as the run logged them
    gains = report.tables["gains_by_yaw"]
    mine = gains[gains.Config == name].reset_index(drop=True)
    shown_bins = logged[logged["n"].fillna(0) > 0].reset_index(drop=True)
    assert mine["|yaw| bin"].tolist() == shown_bins["bin"].tolist()
    assert mine["Net Gain"].to_numpy(float) == pytest.approx(shown_bins["net_gain"].to_numpy(float))
    assert mine["Fusion Gain"].to_numpy(float) == pytest.approx(shown_bins["fusion_gain"].to_numpy(float))
    assert mine["Net Gain 95% CI"].tolist() == [
        f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(shown_bins.net_gain_ci_low, shown_bins.net_gain_ci_high, strict=True)]


def test_flip_false_and_true_side_by_side_paired_on_the_same_items(logged_runs, tmp_path):
    root, results = logged_runs
    report = build_report(client_for(default_sqlite_uri(root)), "flip", n_boot=100)
    flip = report.tables["flip"]
    assert flip.Config.tolist() == ["mesh3d+none | scrfd500m_mbf | demo"] and len(report.data.flip) == 1
    row = flip.iloc[0]
    off, on = results["flip_off"], results["flip_on"]
    assert row["Net Gain flip=false"] == pytest.approx(off.metrics["net_gain"])
    assert row["Net Gain flip=true"] == pytest.approx(on.metrics["net_gain"])
    assert off.metrics["angle_to_gt"] != pytest.approx(on.metrics["angle_to_gt"])  # flip changed the embeddings
    a = {r.item_id: r for r in off.records if r.paired}
    b = {r.item_id: r for r in on.records if r.paired}
    common = sorted(set(a) & set(b))
    assert row["Paired items"] == len(common) > 0
    effect = paired_comparison([a[i].angle_to_gt for i in common], [b[i].angle_to_gt for i in common], n_boot=100)
    assert row["Flip effect on Angle-GT"] == pytest.approx(effect.mean_diff)
    assert row["Flip effect on Angle-GT 95% CI"] == f"[{effect.ci_low:+.4f}, {effect.ci_high:+.4f}]"
    gains = [[r.frontal_to_gt - r.angle_to_gt for r in (x[i] for i in common)] for x in (a, b)]
    assert row["Flip effect on Net Gain"] == pytest.approx(np.mean(gains[1]) - np.mean(gains[0]))
    write_report(report, tmp_path, "flip", "test")
    page = (tmp_path / "report.html").read_text()
    assert 'id="fig-flip_net_gain_by_yaw"' in page and (tmp_path / "figures" / "flip_net_gain_by_yaw.png").is_file()
    assert "Flip effect on Net Gain" in page


# -- one row per configuration ----------------------------------------------------------
NAMES = {"protocol": "frontalization", "dataset": "demo", "enhancer": "none", "embedder": "scrfd500m_mbf"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One output root (one MLflow database) for the tests below; each uses its own experiment."""
    return tmp_path_factory.mktemp("configs")


def log_run(root: Path, experiment: str, overrides: list[str], metrics: dict[str, float], model: str = "mesh3d",
            enhancer: str = "none", items: pd.DataFrame | None = None, parent: str | None = None) -> str:
    """Log a run of a composed config through the real logger (metrics given, no pipeline run)."""
    cfg = compose_config([f"model={model}", f"enhancer={enhancer}", f"tracking.experiment={experiment}",
                          "tracking.log_images=false", *overrides], root)
    tables = {"items": items} if items is not None else {}
    result = RunResult(metrics=dict(metrics), params={**NAMES, "model": model, "enhancer": enhancer}, tables=tables)
    return log_result(cfg, result, parent_run_id=parent)


def report(root: Path, experiment: str, out: Path, *args: str) -> tuple[str, pd.DataFrame]:
    text = main(["--experiment", experiment, "--output-root", str(root), "--out", str(out), "--bootstrap", "50",
                 *args]).read_text()
    return text, pd.read_csv(out / "table1_models.csv")


def test_a_sweep_gives_one_row_per_configuration(store, tmp_path):
    """The four jobs of `-m model.strength=0.5,1.0 model.min_angle=6,15`, logged under one
    parent run (and a run outside it): `--parent-run` gives four rows, one per job."""
    client = client_for(default_sqlite_uri(store))
    exp = client.create_experiment("sweep", artifact_location=(store / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"frontal_exp.kind": "sweep"}).info.run_id
    gains = {(s, a): s * a / 100 for s in (0.5, 1.0) for a in (6.0, 15.0)}
    for (strength, angle), gain in gains.items():
        log_run(store, "sweep", [f"model.strength={strength}", f"model.min_angle={angle}"], {"net_gain": gain, "n": 40},
                parent=parent)
    log_run(store, "sweep", ["model.strength=0.25"], {"net_gain": 9.0, "n": 40})  # not in the sweep
    _, t1 = report(store, "sweep", tmp_path / "r", "--parent-run", parent)
    assert len(t1) == 4 and {"model.strength", "model.min_angle"} <= set(t1.columns)
    shown = {(r["model.strength"], r["model.min_angle"]): r["Net Gain"] for _, r in t1.iterrows()}
    assert shown == pytest.approx(gains)


def test_a_limited_run_does_not_replace_the_full_one(store, tmp_path):
    log_run(store, "limit", [], {"net_gain": 0.05, "n": 40})
    log_run(store, "limit", ["dataset.limit=8"], {"net_gain": 0.01, "n": 8})
    text, t1 = report(store, "limit", tmp_path / "r")
    assert sorted(t1.N) == [8, 40] and "dataset.limit" in t1.columns
    t1 = pd.read_csv(tmp_path / "r" / "table1_models.csv", dtype=str, keep_default_na=False)
    assert t1.set_index("N")["dataset.limit"].to_dict() == {"40": "None", "8": "8"}
    assert "hidden" not in text


def test_a_rerun_replaces_and_the_report_counts_the_hidden_runs(store, tmp_path):
    """Settings that cannot change results (progress, batch size, tracking, paths of outputs)
    do not make a new configuration: the latest run wins, the older ones are counted."""
    log_run(store, "rerun", [], {"net_gain": 0.1, "n": 40})
    log_run(store, "rerun", ["eval.progress=true", "eval.batch_size=8", "eval.io_workers=1", "eval.use_cache=false",
                       "tracking.run_name=again", f"cache_dir={tmp_path / 'other_cache'}"], {"net_gain": 0.2, "n": 40})
    log_run(store, "rerun", [], {"net_gain": 0.3, "n": 40})
    log_run(store, "rerun", ["eval.bootstrap=100"], {"net_gain": 0.4, "n": 40})  # changes the CIs: its own row
    text, t1 = report(store, "rerun", tmp_path / "r")
    assert t1.set_index("eval.bootstrap")["Net Gain"].to_dict() == pytest.approx({2000: 0.3, 100: 0.4})
    assert "- 2 older runs of the same configurations hidden (latest kept)." in text


def test_runs_logged_without_a_config_hash_are_told_apart_by_their_params(store, tmp_path):
    """Runs from before config hashes: identified by the settings in their params (batch sizes
    ignored, copies included), and replaced by a later hashed run of the same configuration."""
    client = client_for(default_sqlite_uri(store))
    for strength, gain in ((0.5, 0.1), (1.0, 0.2), (1.0, 0.3), (0.25, 0.4)):
        run_id = log_run(store, "legacy", [f"model.strength={strength}", f"eval.batch_size={int(gain * 100)}"],
                         {"net_gain": gain, "n": 40})
        client.delete_tag(run_id, CONFIG_HASH_TAG)
    log_run(store, "legacy", ["model.strength=0.25"], {"net_gain": 0.5, "n": 40})
    text, t1 = report(store, "legacy", tmp_path / "r")
    assert t1.set_index("model.strength")["Net Gain"].to_dict() == pytest.approx({0.25: 0.5, 0.5: 0.1, 1.0: 0.3})
    assert list(t1.columns[:3]) == ["Model", "Dataset", "model.strength"]  # no config-id column needed
    assert "- 2 older runs of the same configurations hidden (latest kept)." in text


def test_config_hash_ignores_only_settings_that_cannot_change_results(tmp_path):
    def hash_of(*overrides: str, root: Path = tmp_path) -> str:
        return config_hash(canonical_config(compose_config(list(overrides), root)))

    base = hash_of()
    assert hash_of("eval.batch_size=7", "eval.progress=true", "eval.io_workers=5", "eval.use_cache=false",
                   "tracking.experiment=x", root=tmp_path / "elsewhere") == base
    canonical = canonical_config(compose_config([], tmp_path))
    assert "batch_size" not in canonical["embedder"]["recognizer"]  # ${eval.batch_size}
    assert "cache_dir" not in canonical["dataset"]  # ${cache_dir}
    for changed in ("model.strength=0.5", "dataset.limit=8", "seed=1", "eval.bootstrap=10",
                    "models_dir=/elsewhere", "embedder.detector.det_thresh=0.6"):
        assert hash_of(changed) != base, changed


def test_every_run_logs_its_config_hash_and_what_it_hashed(store, tmp_path):
    run_id = log_run(store, "logged", ["model.strength=0.5"], {"net_gain": 0.1})
    run = client_for(default_sqlite_uri(store)).get_run(run_id)
    expected = canonical_config(compose_config(["model=mesh3d", "enhancer=none", "model.strength=0.5"], tmp_path))
    assert run.data.tags[CONFIG_HASH_TAG] == config_hash(expected)
    logged = json.loads((Path(run.info.artifact_uri.removeprefix("file://")) / CANONICAL_ARTIFACT).read_text())
    assert logged == expected and logged["model"]["strength"] == 0.5


def items_table(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(len(values))], "frontal_to_gt": values,
                         "status": "ok"})


def test_paired_comparisons_without_a_baseline_run_say_so(store, tmp_path):
    log_run(store, "baseline", [], {"net_gain": 0.1, "n": 4}, items=items_table([0.5, 0.6, 0.7, 0.8]))
    log_run(store, "baseline", [], {"net_gain": 0.2, "n": 4}, enhancer="sharp", items=items_table([0.6, 0.6, 0.8, 0.9]))
    text, _ = report(store, "baseline", tmp_path / "r")
    assert ("- No baseline run (model=identity, enhancer=none) for dataset=demo, embedder=scrfd500m_mbf: "
            "its 2 configuration(s) are not compared (see --baseline).") in text
    assert not (tmp_path / "r" / "paired.csv").exists()
    # with a baseline that exists, the same runs are compared
    report(store, "baseline", tmp_path / "r2", "--baseline", "model=mesh3d,enhancer=none")
    paired = pd.read_csv(tmp_path / "r2" / "paired.csv")
    assert paired.Config.tolist() == ["mesh3d+sharp"] and paired["Mean diff"].iloc[0] == pytest.approx(0.075)


def test_a_baseline_that_matches_several_runs_is_named(store, tmp_path):
    """`--baseline model=mesh3d` over a strength sweep matches two runs: the report says
    which one it compared against instead of picking one silently."""
    for strength, values in ((0.5, [0.5, 0.6, 0.7]), (1.0, [0.4, 0.6, 0.6])):
        log_run(store, "several", [f"model.strength={strength}"], {"net_gain": 0.0, "n": 3},
                items=items_table(values))
    log_run(store, "several", [], {"net_gain": 0.0, "n": 3}, enhancer="sharp", items=items_table([0.6, 0.7, 0.8]))
    text, _ = report(store, "several", tmp_path / "r", "--baseline", "model=mesh3d,enhancer=none")
    assert "- 2 runs match the baseline (model=mesh3d, enhancer=none) for dataset=demo" in text
    assert "is used." in text


class FailingDownloads:
    """A real MLflow client whose artifact downloads fail as an unreachable store would."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def download_artifacts(self, run_id, path, dst=None):
        raise OSError(f"connection reset while reading {path}")


def test_a_missing_table_is_none_but_a_download_error_surfaces(store, tmp_path):
    run_id = log_run(store, "download", [], {"net_gain": 0.1, "n": 4}, items=items_table([0.5, 0.6]))
    client = client_for(default_sqlite_uri(store))
    assert download_table(client, run_id, "verification", tmp_path) is None
    assert download_table(client, run_id, "items", tmp_path).frontal_to_gt.tolist() == [0.5, 0.6]
    with pytest.raises(ArtifactError, match=f"tables/items.json of run {run_id}: OSError: connection reset"):
        download_table(FailingDownloads(client), run_id, "items", tmp_path)


def test_markdown_table():
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [0.123456, float("nan")], "c": [1, 2]})
    assert to_markdown(df).splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | 0.1235 | 1 |",
                                            "| z | nan | 2 |"]


def test_demo_recipe_sweep_then_report_cli(tmp_path, tmp_path_factory):
    """The demo recipe as users run it (narrowed to two jobs), then the report command."""
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = run_cli(["-m", "experiment=demo", "model=identity", "enhancer=none,sharp", "dataset.limit=4",
                    "eval.bootstrap=100", "eval.grid_samples=2", f"output_root={out_root}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "frontal_exp.report", "--experiment", "demo",
                             "--output-root", str(out_root), "--bootstrap", "100"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "Table 1: Model x Dataset" in report.stdout and "Paired comparisons" in report.stdout
    assert (out_root / "reports" / "demo" / "report.md").is_file()
    assert (out_root / "reports" / "demo" / "by_yaw.csv").is_file()
    assert (out_root / "reports" / "demo" / "report.html").is_file()
    assert "reading runs" not in report.stderr  # no progress bar when stderr is not a terminal
    # the sweep logged its own report on its parent run, and said where
    client = client_for(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("demo").experiment_id
    (parent,) = client.search_runs([exp], "tags.`frontal_exp.kind` = 'sweep'")
    assert {"report.html", "report.md"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert f"(also the artifact report.html of parent run {parent.info.run_id})" in proc.stdout
    page = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path))).read_text()
    for enhancer in ("none", "sharp"):
        assert f"<td>identity+{enhancer} | scrfd500m_mbf | demo</td>" in page
    assert 'id="fig-net_gain_by_yaw"' in page


def test_a_sweep_report_that_fails_is_one_warning_line(store, tmp_path, capsys):
    client = client_for(default_sqlite_uri(store))
    assert log_sweep_report(client, "no_such_experiment", "0" * 32, tmp_path / "r", "test") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: no sweep report: SystemExit: no MLflow experiment")
    exp = client.create_experiment("empty_sweep", artifact_location=(store / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"frontal_exp.kind": "sweep"}).info.run_id
    assert log_sweep_report(client, "empty_sweep", parent, tmp_path / "r", "test") is None
    assert capsys.readouterr().err.startswith("warning: no sweep report: SystemExit: no finished runs")


def test_report_on_a_missing_experiment_says_which_exist(tmp_path):
    with pytest.raises(SystemExit, match="no MLflow experiment 'nope'"):
        main(["--experiment", "nope", "--output-root", str(tmp_path)])


def test_every_recipe_names_its_experiment():
    from omegaconf import OmegaConf

    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        assert path.read_text().startswith("# @package _global_"), path
        assert cfg.tracking.experiment, path
        assert (REPO / "experiments" / f"{path.stem}.sh").is_file() or path.stem.startswith("demo_"), path
