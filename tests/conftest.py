"""Shared fixtures: composed configs, real photos (packaged and ../shared), small trees; and
how the suite runs in parallel (pytest-xdist, see `pytest_collection_modifyitems`).

Expensive session fixtures (random-init model files, the demo set, an MLflow database schema)
are made once per test run, not once per xdist worker: `build_once` makes them in a folder all
workers of the run share, under a file lock. They are content-keyed or read-only, so sharing
them changes no result."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from frontal_exp.app import CONFIG_DIR
from frontal_exp.config import register_configs

REPO = Path(__file__).resolve().parents[1]

# -- running in parallel (pytest-xdist: `-n auto --dist loadgroup` in pyproject's addopts) ---------

#: at most this many workers for `-n auto` (each may hold a few GB: torch models, MLflow servers)
MAX_WORKERS = 4
#: modules whose slow tests should start first, so that no long test is left to run alone at the
#: end (the scheduler hands out work in collection order); the rest keep pytest's order
SLOW_MODULES_FIRST = ("test_team_server.py", "test_gfpgan.py", "test_liveportrait.py", "test_end_to_end.py",
                      "test_runs.py", "test_report.py")
#: where the workers leave the groups of the collected tests for the scheduler (main basetemp)
GROUPS_FILE = "xdist_groups.json"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may use, at most MAX_WORKERS; none (the tests
    run in this process) when every argument names tests (`file.py::test`): starting workers
    would take longer than a few tests."""
    if config.args and all("::" in arg for arg in config.args):
        return 0
    return max(1, min(usable_cpus(), MAX_WORKERS))


def share_cpus_between_workers() -> None:
    """On an xdist worker: the thread pools of torch / OpenMP / BLAS (for the worker and the
    processes it starts), OpenCV and onnxruntime (in the worker) sized to this worker's share of
    the CPUs, unless OMP_NUM_THREADS is set. N workers each running pools of one thread per CPU
    oversubscribe the machine, and idle threads spin waiting for work: measured on 2 CPUs and
    2 workers, the same tests took a fifth to a quarter more CPU time and wall time."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, usable_cpus() // workers)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # read OMP_NUM_THREADS when it was imported
        sys.modules["torch"].set_num_threads(threads)
    import cv2
    import onnxruntime

    cv2.setNumThreads(threads)
    # onnxruntime sizes its pool by the CPUs, spinning between runs: sessions made without
    # options (insightface's) get this worker's share, without spinning
    original = onnxruntime.InferenceSession.__init__

    def init(self, path_or_bytes, sess_options=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if sess_options is None:
            sess_options = onnxruntime.SessionOptions()
            sess_options.intra_op_num_threads = threads
            sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        original(self, path_or_bytes, sess_options, *args, **kwargs)

    onnxruntime.InferenceSession.__init__ = init


share_cpus_between_workers()

#: glibc's malloc for the processes the suite starts (xdist workers, CLI runs): freed memory
#: stays in the heap for the next allocation instead of going back to the kernel, which hands it
#: out again page by page, zeroed (torch frees and reallocates the same large activations for
#: every image). Measured on the GFPGAN batch test: 60% fewer page faults, half the system time.
#: Set before the workers start (they read it when they start); no effect where malloc is not
#: glibc's.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
              "MALLOC_TOP_PAD_": str(1 << 30)}
for _name, _value in MALLOC_ENV.items():
    os.environ.setdefault(_name, _value)


def xdist_group_of(item: pytest.Item) -> str | None:
    """The group a test runs in, on one worker with the rest of its group: its `xdist_group`
    mark, else its module's name where it uses a fixture its module defines with module, class
    or session scope (a server, a loaded model, one evaluation several tests check); None for
    a test that may run anywhere."""
    marks = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    if marks:
        return "_".join(marks)
    module, infos = getattr(item, "module", None), getattr(item, "_fixtureinfo", None)
    if module is None or infos is None:
        return None
    for defs in infos.name2fixturedefs.values():
        if defs[-1].scope != "function" and getattr(defs[-1].func, "__module__", None) == module.__name__:
            return item.path.name
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules of SLOW_MODULES_FIRST first; on an xdist worker, the tests' groups written
    where the scheduler (`GroupScheduling`) reads them."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES_FIRST.index(name) if name in SLOW_MODULES_FIRST else len(SLOW_MODULES_FIRST)

    items.sort(key=rank)  # stable: the order within a module is kept
    if os.environ.get("PYTEST_XDIST_WORKER") and getattr(config.option, "loadgroup", False):
        import json

        groups = {item.nodeid: group for item in items if (group := xdist_group_of(item)) is not None}
        target = config._tmp_path_factory.getbasetemp().parent / GROUPS_FILE  # noqa: SLF001 - as xdist does
        partial = target.with_name(f"{target.name}.{os.environ['PYTEST_XDIST_WORKER']}")
        partial.write_text(json.dumps(groups))
        os.replace(partial, target)  # every worker writes the same groups


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201 - xdist's types
    """`--dist loadgroup`, with the groups of `xdist_group_of` (xdist's own loadgroup marks the
    group in the test's node id, which pytest 9.2 no longer lets it change: pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    import json

    from xdist.scheduler import LoadGroupScheduling

    groups_file = config._tmp_path_factory.getbasetemp() / GROUPS_FILE  # noqa: SLF001 - as xdist does

    class GroupScheduling(LoadGroupScheduling):
        """A group's tests are one unit of work (one worker, in order); every other test is a
        unit of its own. Units go out in collection order (--no-loadscope-reorder)."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # the workers have collected (and written it) by now
                self.groups = json.loads(groups_file.read_text()) if groups_file.is_file() else {}
            # a node id xdist suffixed with its group (`...@group`, pytest before 9.2): xdist's rule
            return self.groups[nodeid] if nodeid in self.groups else super()._split_scope(nodeid)

    return GroupScheduling(config, log)


def run_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run that every xdist worker sees (the main process's basetemp;
    a worker's own basetemp is a `popen-gwN` folder in it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    shared = base / "shared"
    shared.mkdir(exist_ok=True)
    return shared


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name` of this run's shared folder, made by `build(folder)` by the first worker
    that asks for it, while the others wait (a file lock); a build that failed is redone."""
    from filelock import FileLock

    root = run_shared_dir(tmp_path_factory) / name
    done = root.with_name(f"{name}.done")
    with FileLock(root.with_name(f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            done.touch()
    return root


def real_faces_root() -> Path | None:
    env = os.environ.get("FRONTAL_EXP_REAL_FACES")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared/data/real_faces"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def real_faces() -> Path:
    root = real_faces_root()
    if root is None:
        pytest.skip("../shared/data/real_faces is not present (set FRONTAL_EXP_REAL_FACES)")
    return root


@pytest.fixture(scope="session")
def package_photos() -> dict[str, Path]:
    from frontal_exp.data.demo import package_photos

    return package_photos()


@pytest.fixture(scope="session")
def embedder():
    """The embedded detector + recognizer pair (SCRFD-500M + MobileFaceNet), CPU."""
    from frontal_exp.embedders import FaceEmbedder
    from frontal_exp.embedders.detectors import InsightFaceDetector
    from frontal_exp.embedders.recognizers import ArcFaceRecognizer

    return FaceEmbedder(
        InsightFaceDetector("packaged:scrfd_500m_bnkps.onnx", device="cpu"),
        ArcFaceRecognizer("packaged:w600k_mbf.onnx", device="cpu"),
        name="scrfd500m_mbf",
    )


def compose_config(overrides: list[str], output_root: Path, hydra_config: bool = False) -> DictConfig:
    """Compose the app's config as `python -m frontal_exp <overrides>` would."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"output_root={output_root}", *overrides],
            return_hydra_config=hydra_config,
        )
    if hydra_config:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path, tmp_path_factory):
    """`make_cfg(*overrides, output_root=...)`: the composed config; a run of it on the demo set
    finds the set already built (see `link_demo_set`)."""

    def _make(*overrides: str, output_root: Path | None = None, hydra_config: bool = False) -> DictConfig:
        cfg = compose_config(list(overrides), output_root or tmp_path / "outputs", hydra_config)
        link_demo_set(cfg, tmp_path_factory)
        return cfg

    return _make


def face_crop(path: Path, embedder, size: int = 200, grow: float = 2.0) -> np.ndarray:
    """A square crop around the largest face of a photo."""
    from frontal_exp.data.demo import crop_square
    from frontal_exp.images import read_image

    image = read_image(path)
    face = embedder.find_face(image)
    assert face is not None, path
    return crop_square(image, face.bbox, grow, size)


@pytest.fixture(scope="session")
def identity_tree(tmp_path_factory, package_photos, embedder) -> Path:
    """A folder-per-identity tree of real faces from package photos: each identity has a
    'frontal' GT and two variants (a flipped and a rescaled copy). Small and offline."""
    import cv2

    from frontal_exp.images import write_image

    root = tmp_path_factory.mktemp("identities")
    for name in ("astronaut", "grace_hopper", "yao_ming"):
        crop = face_crop(package_photos[name], embedder)
        write_image(root / name / "frontal.png", crop)
        write_image(root / name / "flip.jpg", cv2.flip(crop, 1))
        small = cv2.resize(crop, (120, 120), interpolation=cv2.INTER_AREA)
        write_image(root / name / "small.jpg", small)
    return root


# -- the demo set and the MLflow schema, made once per test run ------------------------------------

DEMO_TARGET = "frontal_exp.data.demo.DemoDataset"


def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `cache_dir` for the whole test run, all workers: the demo set is built there once."""
    return run_shared_dir(tmp_path_factory) / "shared_cache"


def load_demo_set(dataset):  # noqa: ANN001, ANN201 - a DemoDataset, its LoadedDataset
    """`dataset.load()`, building the set under a file lock: parallel workers wait for one build
    instead of each building its own (the loser of a race would throw its copy away)."""
    from filelock import FileLock

    dataset.root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(dataset.root.parent / "build.lock"):
        return dataset.load()


def link_demo_set(cfg: DictConfig, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where `cfg` runs on the demo set: its cache gets a link to the same demo set (same
    parameters and code, so the same folder name) built once for the test run in
    `shared_cache_dir`, instead of building its own copy (seconds of rendering per test). The
    run reads the same files. A config whose cache holds the set already is left alone, and so
    is one whose dataset cannot be built (the test is about that error)."""
    from hydra.utils import instantiate

    if cfg.get("dataset") is None or cfg.dataset.get("_target_") != DEMO_TARGET:
        return
    try:
        own = instantiate(cfg.dataset).root
        if own.exists():
            return
        shared = instantiate(cfg.dataset, cache_dir=str(shared_cache_dir(tmp_path_factory)))
    except Exception:  # noqa: BLE001 - a config the test means to fail: it fails in the test
        return
    load_demo_set(shared)
    if own != shared.root:
        own.parent.mkdir(parents=True, exist_ok=True)
        own.symlink_to(shared.root, target_is_directory=True)


def mlflow_db(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`target`: a copy of an MLflow SQLite database that has the schema and nothing else, made
    once per test run (MLflow takes seconds to create a schema)."""

    def make_schema(folder: Path) -> None:
        from frontal_exp.tracking.mlflow_logger import client_for

        client_for(f"sqlite:///{folder / 'mlflow.db'}")

    template = build_once(tmp_path_factory, "mlflow_schema", make_schema)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / "mlflow.db", target)
    return target


def prepare_output_root(output_root: Path, tmp_path_factory: pytest.TempPathFactory, with_db: bool = True) -> Path:
    """An output root for a run on the default demo set: the demo set linked in (see
    `link_demo_set`) and, `with_db`, its MLflow database with the schema made (`mlflow_db`).
    Tests about a fresh output root or database do not use this."""
    link_demo_set(compose_config([], output_root), tmp_path_factory)
    if with_db:
        mlflow_db(output_root / "mlflow.db", tmp_path_factory)
    return output_root


# -- model files in the official formats (random init of the real architectures) -------------
# Made once per test run (`build_once`): the GFPGAN file alone is 348 MB.


def _write_gfpgan_models(root: Path) -> None:
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    from frontal_exp.enhancers.gfpgan import build_gfpgan_net

    (root / "gfpgan").mkdir()
    (root / "facexlib").mkdir()
    torch.manual_seed(0)
    torch.save({"params_ema": build_gfpgan_net().state_dict()}, root / "gfpgan/GFPGANv1.4.pth")
    # v1.3 has the same architecture; one random file serves both
    os.link(root / "gfpgan/GFPGANv1.4.pth", root / "gfpgan/GFPGANv1.3.pth")
    det = RetinaFace(network_name="resnet50", half=False, phase="test", device="cpu")
    torch.save({f"module.{k}": v for k, v in det.state_dict().items()},
               root / "facexlib/detection_Resnet50_Final.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(),
               root / "facexlib/parsing_parsenet.pth")


@pytest.fixture(scope="session")
def gfpgan_models(tmp_path_factory) -> Path:
    """A models dir laid out like the registry, holding randomly initialised official-format files:
    GFPGANv1Clean under `params_ema`, RetinaFace-R50 with DataParallel's "module." keys (as
    facexlib publishes it) and ParseNet as a plain state dict."""
    return build_once(tmp_path_factory, "gfpgan_models", _write_gfpgan_models)


#: the random LivePortrait networks' state dicts as they were in memory when saved (torch.save),
#: next to (not in) the models dir; what the checkpoint files must load back to
LP_STATES = "lp_states.pt"


def _write_lp_models(folder: Path) -> None:
    import torch

    from frontal_exp.frontalizers.liveportrait import checkpoints
    from frontal_exp.frontalizers.liveportrait.modules import build_networks, randomize_

    nets = build_networks()
    gen = torch.Generator().manual_seed(0)
    for module in nets.modules().values():
        randomize_(module, gen)
    checkpoints.save_networks(nets, folder / "models")
    torch.save({name: m.state_dict() for name, m in nets.modules().items()}, folder / LP_STATES)


@pytest.fixture(scope="session")
def lp_random(tmp_path_factory):
    """LivePortrait's random-init networks saved once in the official layout; (models_dir, state
    dicts as the networks held them)."""
    import torch

    folder = build_once(tmp_path_factory, "lp_models", _write_lp_models)
    states = torch.load(folder / LP_STATES, map_location="cpu", weights_only=True, mmap=True)
    return folder / "models", states


@pytest.fixture(scope="session")
def official_models(tmp_path_factory, gfpgan_models, lp_random) -> Path:
    """One models dir holding every file of the weights registry in its official format:
    the GFPGAN / facexlib and LivePortrait files above (hard links, no copies), and the
    insightface packs made of the embedded SCRFD-500M graph (same family as det_10g and
    scrfd_10g) and tiny ArcFace-signature recognizers."""

    def write(root: Path) -> None:
        from frontal_exp import weights
        from frontal_exp.embedders.packaged import packaged_model_path
        from frontal_exp.frontalizers.ffwm import checkpoints as ffwm_checkpoints
        from frontal_exp.frontalizers.ffwm.networks import build_networks as build_ffwm
        from tests._deca_files import write_head_files
        from tests.test_embedders import tiny_arcface_onnx

        for source in (gfpgan_models, lp_random[0]):
            for f in (f for f in source.rglob("*") if f.is_file()):
                target = root / f.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)
        for pack, det, rec in (("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"),
                               ("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx")):
            (root / pack).mkdir()
            shutil.copy(packaged_model_path("scrfd_500m_bnkps.onnx"), root / pack / det)
            tiny_arcface_onnx(root / pack / rec)
        ffwm_checkpoints.save_networks(build_ffwm(), root)  # FFWM's two files, random init
        write_head_files(root / "deca", seeded=False)  # DECA's four files, a synthetic FLAME
        weights.resolve_all(list(weights.REGISTRY), root)  # every registry file is there

    return build_once(tmp_path_factory, "official_models", write)
