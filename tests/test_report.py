"""`python -m frontal_exp.report`: the study's table shapes rebuilt from MLflow runs, paired
comparisons checked against the logged items, and a demo recipe swept end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from frontal_exp.evaluation import evaluate
from frontal_exp.metrics.stats import paired_comparison
from frontal_exp.report import main, to_markdown
from tests.test_end_to_end import run_cli
from tests.test_protocols import shared_cache

REPO = Path(__file__).resolve().parents[1]
FAST = ["eval.bootstrap=100", "eval.grid_samples=2", "device=cpu", "dataset.limit=8", "tracking.experiment=rep"]


@pytest.fixture(scope="module")
def logged_runs(tmp_path_factory) -> tuple[Path, dict[str, object]]:
    """A small "sweep" logged in-process: three frontalization configs (one run twice; the
    by_pose and identification analyses are on by default),
    robustness and verification, all on the demo set."""
    from tests.conftest import compose_config

    root = tmp_path_factory.mktemp("report")
    cache = shared_cache(tmp_path_factory)
    results = {}
    for name, overrides in {
        "base_old": ["model=identity", "enhancer=none"],
        "base": ["model=identity", "enhancer=none"],
        "sharp": ["model=identity", "enhancer=sharp"],
        "mesh3d": ["model=mesh3d", "enhancer=none"],
        "robustness": ["protocol=robustness", "protocol.max_pairs=20"],
        "verification": ["protocol=verification", "protocol.max_pairs=40", "model=mesh3d"],
    }.items():
        results[name] = evaluate(compose_config([*overrides, cache, *FAST], root))
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
    # the configuration run twice counts once (its latest run)
    assert len(t1) == 3
    assert {"Model", "Dataset", "Enhancer", "Mean(Angle-GT)", "Mean(Frontal-GT)", "Net Gain", "N"} <= set(t1.columns)
    mesh = t1[t1.Model == "mesh3d"].iloc[0]
    assert mesh["Net Gain"] == pytest.approx(results["mesh3d"].metrics["net_gain"])
    assert mesh["N"] == results["mesh3d"].metrics["n"]

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
    assert ver.Condition.tolist() == ["original", "frontalized"]
    assert (ver.Pairs == results["verification"].metrics["n_pairs"]).all()
    assert ver.AUC.iloc[0] == pytest.approx(results["verification"].metrics["original.auc"])

    by_yaw = pd.read_csv(out / "by_yaw.csv")
    assert by_yaw.columns[0] == "|yaw| bin" and len(by_yaw.columns) == 1 + 3  # one column per config

    figures = pd.read_csv(out / "figures.csv")
    assert {"triplets", "robustness_hist", "roc", "score_hist", "by_pose", "identification"} <= set(figures.Figure)
    assert figures.URI.str.startswith("file:").all()


def test_paired_comparisons_match_the_items_tables(logged_runs, tmp_path):
    root, results = logged_runs
    out = tmp_path / "report"
    main(["--experiment", "rep", "--output-root", str(root), "--out", str(out), "--bootstrap", "100"])
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired.Baseline) == {"identity+none"} and set(paired.Config) == {"identity+sharp", "mesh3d+none"}
    # recompute mesh3d vs baseline by hand from the in-memory records
    base = {r.item_id: r.frontal_to_gt for r in results["base"].records if r.paired}
    other = {r.item_id: r.frontal_to_gt for r in results["mesh3d"].records if r.paired}
    common = sorted(set(base) & set(other))
    expected = paired_comparison([base[i] for i in common], [other[i] for i in common], n_boot=100)
    row = paired[paired.Config == "mesh3d+none"].iloc[0]
    assert row["N (paired items)"] == expected.n == len(common)
    assert row["Mean diff"] == pytest.approx(expected.mean_diff)
    assert row["Wilcoxon p"] == pytest.approx(expected.wilcoxon_p, nan_ok=True)


def test_markdown_table():
    df = pd.DataFrame({"a": ["x|y", "z"], "b": [0.123456, float("nan")], "c": [1, 2]})
    assert to_markdown(df).splitlines() == ["| a | b | c |", "|---|---|---|", "| x\\|y | 0.1235 | 1 |",
                                            "| z | nan | 2 |"]


def test_demo_recipe_sweep_then_report_cli(tmp_path):
    """The demo recipe as users run it (narrowed to two jobs), then the report command."""
    out_root = tmp_path / "outputs"
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
