"""A quiet command line (issue 9): no third-party chatter by default, shown with verbose=true;
progress bars only when stderr is a terminal (eval.progress: auto)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from frontal_exp.errors import ConfigError
from frontal_exp.quiet import (
    NATIVE_LOG_ENV,
    PROGRESS_ENV,
    VERBOSE_ENV,
    configure,
    is_noise,
    progress_bar,
    progress_enabled,
)

#: what a default run printed before (MediaPipe/TFLite/absl on fd 2, libpng, MLflow's logger)
NOISE = (
    "Created TensorFlow Lite XNNPACK delegate",
    "Feedback manager requires",
    "Using NORM_RECT without IMAGE_DIMENSIONS",
    "absl::InitializeLog",
    "libpng warning",
    "Creating initial MLflow database tables",
    "Updating database tables",
)


def clean_env() -> dict[str, str]:
    """The user's environment without the switches that would change what is printed."""
    drop = {VERBOSE_ENV, PROGRESS_ENV, "GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL",
            "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def keep_env(monkeypatch) -> None:
    """Restore after the test the variables `configure` writes."""
    for key in (VERBOSE_ENV, PROGRESS_ENV, *NATIVE_LOG_ENV):
        monkeypatch.delenv(key, raising=False)


def test_default_run_prints_results_without_third_party_noise(tmp_path, tmp_path_factory):
    """Fresh output_root (the session's demo set linked in; building it decodes package photos,
    which the script below does): FaceMesh graphs are created, MLflow creates its database; none
    of their chatter reaches the terminal."""
    from tests.conftest import prepare_output_root

    prepare_output_root(tmp_path, tmp_path_factory, with_db=False)
    proc = subprocess.run(
        [sys.executable, "-m", "frontal_exp", "dataset.limit=4", f"output_root={tmp_path}"],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert [n for n in NOISE if n in out] == [], out
    # frontal_exp's own lines and the results stay
    assert "dataset demo: 4 items" in out
    assert "Net Gain" in proc.stdout and "MLflow run" in proc.stdout
    # stderr is a pipe here: eval.progress=auto draws no bars
    assert "it/s" not in proc.stderr and "batch/s" not in proc.stderr and "%|" not in proc.stderr, proc.stderr


FACEMESH_SCRIPT = """
import os, sys
from frontal_exp.quiet import configure, native_stderr_filtered
configure(verbose=sys.argv[1] == "verbose")
from frontal_exp.data.demo import package_photos
from frontal_exp.face3d.facemesh import FaceMeshDetector
from frontal_exp.images import read_image
lm = FaceMeshDetector().detect(read_image(package_photos()["tom_hanks"]))
read_image(package_photos()["astronaut"])  # a PNG whose colour profile libpng warns about
print("landmarks", None if lm is None else lm.shape, flush=True)
with native_stderr_filtered():  # a native error in a quiet region is forwarded, never hidden
    os.write(2, b"E0000 00:00:1.0 1 real_failure.cc:1] the graph could not start\\n")
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_mediapipe_chatter_hidden_unless_verbose_and_real_errors_forwarded(mode):
    proc = subprocess.run([sys.executable, "-c", FACEMESH_SCRIPT, mode], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "landmarks (478, 3)" in proc.stdout
    assert "the graph could not start" in proc.stderr
    if mode == "verbose":  # MediaPipe's TFLite line is printed on this machine without the filter
        assert "Created TensorFlow Lite XNNPACK delegate" in proc.stderr
        assert "libpng warning: iCCP" in proc.stderr
    else:
        assert [n for n in NOISE if n in proc.stderr] == [], proc.stderr


def test_noise_patterns_are_specific():
    assert is_noise("W0000 00:00:1796216449.437315   17164 inference_feedback_manager.cc:114] Feedback manager")
    assert is_noise("libpng warning: iCCP: known incorrect sRGB profile")
    assert not is_noise("E0000 00:00:1.0 1 calculator_graph.cc:887] INVALID_ARGUMENT: bad input")
    assert not is_noise("W0000 00:00:1.0 1 some_other_file.cc:10] a warning nobody has reviewed")
    assert not is_noise("Traceback (most recent call last):")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_auto_follows_whether_stderr_is_a_terminal(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_enabled("auto") is False
    assert list(progress_bar(range(3), "items")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress_enabled("auto") is True
    assert list(progress_bar(range(3), "items")) == [0, 1, 2]
    assert "items: 100%" in terminal.getvalue()


def test_progress_setting_forces_and_validates(monkeypatch):
    keep_env(monkeypatch)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    configure(verbose=False, progress="false")  # what `eval.progress=false` does for every stage
    assert list(progress_bar(range(2), "pose estimation")) == [0, 1]
    assert sys.stderr.getvalue() == ""
    assert progress_enabled(True) and progress_enabled("true") and not progress_enabled("off")
    with pytest.raises(ConfigError, match="eval.progress"):
        progress_enabled("sometimes")


def test_quiet_callback_runs_before_the_sweep_callback(make_cfg, monkeypatch):
    """A sweep's parent run (which creates MLflow's database) starts in a Hydra callback before
    any job: the quiet callback is listed first and sets the library loggers' levels."""
    keep_env(monkeypatch)
    cfg = make_cfg(hydra_config=True)
    callbacks = HydraConfig.get().callbacks
    assert list(callbacks).index("quiet") < list(callbacks).index("mlflow_sweep")
    mlflow_log = logging.getLogger("mlflow")
    before = mlflow_log.level
    try:
        mlflow_log.setLevel(logging.INFO)
        instantiate(callbacks["quiet"]).on_multirun_start(cfg)
        assert mlflow_log.getEffectiveLevel() == logging.WARNING
        instantiate(callbacks["quiet"]).on_multirun_start(OmegaConf.merge(cfg, {"verbose": True}))
        assert mlflow_log.getEffectiveLevel() == logging.INFO
    finally:
        mlflow_log.setLevel(before)


# -- protocol summaries on the terminal ----------------------------------------------------
@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> str:
    """The session's demo-set cache (see test_protocols.shared_cache): built once."""
    return f"cache_dir={tmp_path_factory.getbasetemp() / 'shared_cache'}"


def summary_rows(text: str, first: str) -> dict[str, dict[str, str]]:
    """The summary table of `format_summary` by its first column (header line starts with `first`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    header = lines[start].split()
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) < len(header):
            break
        # a label may hold spaces ("Angled vs GT"): the last len(header) - 1 cells are the values
        label = " ".join(cells[: len(cells) - len(header) + 1])
        rows[label] = dict(zip(header[1:], cells[len(cells) - len(header) + 1:], strict=True))
    return rows


def test_robustness_prints_a_compact_table_with_integer_counts(make_cfg, demo_cache):
    from frontal_exp.app import format_summary, format_value
    from frontal_exp.evaluation import evaluate

    result = evaluate(make_cfg("protocol=robustness", "protocol.max_pairs=8", "dataset.limit=4", demo_cache,
                               "eval.bootstrap=50", "tracking.enabled=false", "device=cpu"))
    text = format_summary(result)
    lines = text.splitlines()
    assert len(lines) <= 10, text  # not one line per metric (30 of them)
    assert "n_images=" in text and "n_images=4.0" not in text  # counts are integers (see the rows too)
    m = result.metrics
    assert f"n_images={int(m['n_images'])}  n_identities={int(m['n_identities'])}" in lines[1]
    rows = summary_rows(text, "label")
    assert list(rows) == ["Angled vs GT", "Angled vs Angled", "GT vs GT", "Impostor (Angled vs other's GT)"]
    table = result.tables["robustness"].set_index("label")
    for label, row in rows.items():
        assert row["n"] == str(int(table.loc[label, "n"]))
        assert row["mean"] == format_value("mean", table.loc[label, "mean"])  # n/a: no GT vs GT pair in demo
        assert row["mean"] == "n/a" or row["mean"] == f"{table.loc[label, 'mean']:.4f}"
        assert row["pairs_no_face"] == str(int(table.loc[label, "pairs_no_face"]))
    assert f"margin_angle_vs_gt: {m['margin_angle_vs_gt']:.4f}" in lines


def test_verification_prints_one_row_per_condition(make_cfg, demo_cache):
    from frontal_exp.app import format_summary
    from frontal_exp.evaluation import evaluate

    result = evaluate(make_cfg("protocol=verification", "protocol.max_pairs=12", "protocol.conditions=[original]",
                               demo_cache, "eval.bootstrap=50", "tracking.enabled=false", "device=cpu"))
    text = format_summary(result)
    m = result.metrics
    assert "n_pairs=12  n_same=6  n_different=6" in text
    row = summary_rows(text, "condition")["original"]
    assert row["acc_mean"] == f"{m['original.acc_mean']:.4f}" and row["auc"] == f"{m['original.auc']:.4f}"
    assert row["n_scored"] == "12" and row["n_no_face"] == str(int(m["original.n_no_face"]))
    assert "tar_far_0.001" in row and "n_folds" not in text


def test_format_value_counts_are_integers_rates_keep_decimals():
    from frontal_exp.app import format_value

    assert format_value("n_folds", 10.0) == "10" and format_value("original.n_scored", 40.0) == "40"
    assert format_value("acc_mean", 1.0) == "1.0000" and format_value("auc", 0.98765) == "0.9877"
    assert format_value("no_face_images", 3) == "3" and format_value("impostor", float("nan")) == "n/a"


def test_infer_shows_a_progress_bar_when_asked(identity_tree, tmp_path, monkeypatch, capsys):
    """`infer` over a folder is a long stage too: a bar per image (eval.progress=true forces it
    here, stderr being captured), none by default when stderr is not a terminal."""
    import shutil

    from frontal_exp.infer import main

    keep_env(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(identity_tree / "astronaut" / "frontal.png", src / name)
    assert main(["--source_dir", str(src), "-o", str(tmp_path / "out"), "enhancer=sharp", "eval.progress=true"]) == 0
    err = capsys.readouterr().err
    assert "infer: 100%" in err and "2/2" in err
    assert main(["--source_dir", str(src), "-o", str(tmp_path / "out2"), "enhancer=sharp"]) == 0
    assert "infer:" not in capsys.readouterr().err
