"""A quiet command line: third-party chatter off by default, shown with `verbose=true` / `-v`.

Three kinds of chatter reach a default run's terminal:

- Python loggers of libraries (MLflow's "Creating initial MLflow database tables...", alembic):
  `configure` sets them to WARNING.
- native (C++) logs of MediaPipe / TFLite / absl and libpng, written straight to file
  descriptor 2 (`INFO: Created TensorFlow Lite XNNPACK delegate`, `W0000 ... Feedback manager
  requires...`, `libpng warning: iCCP`): `configure` sets the environment variables the
  native loggers read before they load, and `native_stderr_filtered` captures fd 2 around the
  few calls that still print (graph creation, first inference, decoding package PNGs), then
  forwards every captured line that is not known noise, so real errors are never hidden.
- progress bars: `progress_enabled` turns `eval.progress: auto` into "on when stderr is a
  terminal"; `progress_bar` wraps the slow stages (demo build, pose estimation, GT
  embedding, items) accordingly.

The choice travels in the environment ($FRONTAL_EXP_VERBOSE), so worker processes of a
sweep inherit it; library use without `configure` is quiet too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from frontal_exp.errors import ConfigError

VERBOSE_ENV = "FRONTAL_EXP_VERBOSE"
#: `eval.progress` of the run, for the stages that are not handed the config
PROGRESS_ENV = "FRONTAL_EXP_PROGRESS"

#: Python loggers of libraries whose INFO lines are chatter in a default run
CHATTY_LOGGERS = ("mlflow", "alembic", "urllib3", "matplotlib", "PIL", "numba", "httpx", "git")

#: read by the native loggers when they load: glog/absl (MediaPipe) and TensorFlow (TFLite)
NATIVE_LOG_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_LOGGING_LEVEL": "WARNING"}

#: lines of native chatter dropped from captured stderr; anything else is forwarded
NOISE_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"^INFO: Created TensorFlow Lite XNNPACK delegate",
        r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        # absl/glog INFO lines, and the WARNING lines MediaPipe prints for every FaceMesh graph
        r"^I\d{4} [\d:.]+ +\d+ \S+\] ",
        r"^W\d{4} [\d:.]+ +\d+ (inference_feedback_manager|landmark_projection_calculator"
        r"|gl_context|face_landmarker_graph)\.cc:\d+\] ",
        r"^libpng warning: iCCP: ",
    )
)


def is_verbose() -> bool:
    """True when third-party chatter should be shown (`verbose=true`, `report -v`)."""
    return os.environ.get(VERBOSE_ENV, "0").lower() in ("1", "true", "yes", "on")


def configure(verbose: bool = False, progress: bool | str = "auto") -> None:
    """Quiet (default) or show third-party logs for this process and the processes it starts;
    `progress` (eval.progress) is where `progress_bar` looks.

    Call it before MediaPipe or MLflow are first imported for the environment variables to
    take effect; the Python logger levels apply whenever it is called."""
    progress_enabled(progress)  # a bad value fails here, with the message saying what to use
    os.environ[PROGRESS_ENV] = str(progress).lower()
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:  # the libraries' own levels (MLflow logs INFO), also after a quiet call
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO if name == "mlflow" else logging.NOTSET)
        return
    for key, value in NATIVE_LOG_ENV.items():
        os.environ.setdefault(key, value)  # a value the user set wins
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class QuietCallback(Callback):
    """Hydra callback (conf/config.yaml, listed first): applies `verbose` and `eval.progress`
    before the other callbacks run, e.g. the sweep callback creating MLflow's database."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        configure_from(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        configure_from(config)


def configure_from(cfg: DictConfig) -> None:
    """`configure` with the run's `verbose` and `eval.progress`."""
    configure(verbose=bool(cfg.get("verbose", False)), progress=OmegaConf.select(cfg, "eval.progress", default="auto"))


def is_noise(line: str) -> bool:
    return any(p.search(line) for p in NOISE_PATTERNS)


def forward_unless_noise(text: str, stream=None) -> None:
    """Write the lines of `text` that are not known noise to `stream` (sys.stderr)."""
    kept = [line for line in text.splitlines(keepends=True) if line.strip() and not is_noise(line)]
    if kept:
        stream = stream or sys.stderr
        stream.write("".join(kept) if kept[-1].endswith("\n") else "".join(kept) + "\n")
        stream.flush()


_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_capture = None


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Capture file descriptor 2 (native and Python writes) while the block runs, then forward
    what is not known noise. Nested and concurrent uses share one capture: fd 2 is process-wide.
    A no-op when verbose, or when fd 2 cannot be duplicated."""
    global _depth
    if is_verbose():
        yield
        return
    with _lock:
        entered = _depth > 0 or _start_capture()
        if entered:
            _depth += 1
    try:
        yield
    finally:
        if entered:
            _release()


def _start_capture() -> bool:
    """Point fd 2 at a temporary file (lock held); False when fd 2 cannot be captured."""
    global _saved_fd, _capture
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False
    capture = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _release)
    os.dup2(capture.fileno(), 2)
    _saved_fd, _capture = saved, capture
    return True


def _release() -> None:
    global _depth, _saved_fd, _capture
    with _lock:
        _depth -= 1
        if _depth:
            return
        with suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        _capture.seek(0)
        text = _capture.read().decode("utf-8", errors="replace")
        _capture.close()
        _saved_fd, _capture = None, None
    forward_unless_noise(text)


_ON = ("true", "on", "yes", "1")
_OFF = ("false", "off", "no", "0")


def progress_enabled(setting: bool | str | None) -> bool:
    """`eval.progress`: true/false, or auto (default) = on when stderr is a terminal."""
    if isinstance(setting, bool):
        return setting
    value = "auto" if setting is None else str(setting).strip().lower()
    if value == "auto":
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"eval.progress={setting!r}: use auto (bars when stderr is a terminal), true or false")


def progress_bar(iterable: Iterable, desc: str, *, total: int | None = None, unit: str = "it",
                 enabled: bool | str | None = None) -> Iterable:
    """`iterable` with a tqdm bar on stderr when progress is on: `enabled`, else the run's
    `eval.progress` (see `configure`), else auto (when stderr is a terminal)."""
    if not progress_enabled(os.environ.get(PROGRESS_ENV, "auto") if enabled is None else enabled):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)
