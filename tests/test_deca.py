"""DECA's files load strictly and safely: FLAME's chumpy pickle, the landmark embedding, the
head template and deca_model.tar, with clear errors for missing, damaged or hostile files."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from frontal_exp import weights
from frontal_exp.errors import BadWeightsError, MissingWeightsError
from frontal_exp.frontalizers.deca import checkpoints
from frontal_exp.frontalizers.deca.files import (
    load_flame_model,
    load_landmark_embedding,
    read_head_template,
)
from frontal_exp.frontalizers.deca.networks import CODE_SIZES, split_code

from ._deca_files import (
    N_FACES,
    N_VERTS,
    _Py2Pickler,
    fake_chumpy,
    synthetic_flame,
    synthetic_landmarks,
    write_official_files,
)


@pytest.fixture(scope="session")
def deca_dir(tmp_path_factory):
    """The four files, written once per session (read-only for the tests: copy to alter)."""
    root = tmp_path_factory.mktemp("deca_files")
    write_official_files(root)
    return root


class _RunsCode:
    """Pickles as a call of os.system: what a hostile model file would hold."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_flame_pickle_loads_as_plain_arrays(deca_dir):
    model = load_flame_model(deca_dir / "generic_model.pkl")
    want = synthetic_flame()
    for key in ("v_template", "shapedirs", "posedirs", "weights", "f"):
        assert type(model[key]) is np.ndarray
        np.testing.assert_array_equal(model[key], want[key])
    np.testing.assert_array_equal(model["J_regressor"], want["J_regressor"].toarray())
    assert model["kintree_table"][0, 0] == 4294967295


def test_flame_pickle_is_a_python2_chumpy_pickle(deca_dir):
    """Guards the synthetic file's fidelity: without latin-1 decoding a plain unpickler fails
    on the array bytes, and the classes named are those of the official file."""
    raw = (deca_dir / "generic_model.pkl").read_bytes()
    for name in (b"chumpy.ch\nCh", b"scipy.sparse.csc\ncsc_matrix", b"__builtin__\nset"):
        assert name in raw
    with fake_chumpy(), pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)


def test_flame_pickle_with_other_globals_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    model = synthetic_flame()
    model["hostile"] = _RunsCode(marker)
    path = tmp_path / "generic_model.pkl"
    _write_py2(path, model)
    with pytest.raises(BadWeightsError) as err:
        load_flame_model(path)
    assert str(path) in str(err.value) and "system" in str(err.value) and "refused global" in str(err.value)
    assert not marker.exists()


def _write_py2(path, obj) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def test_flame_pickle_missing_fields_truncated_or_wrong_shapes(tmp_path, deca_dir):
    model = synthetic_flame()
    del model["shapedirs"]
    path = tmp_path / "generic_model.pkl"
    _write_py2(path, model)
    with pytest.raises(BadWeightsError, match="shapedirs"):
        load_flame_model(path)
    model = synthetic_flame()
    model["shapedirs"] = model["shapedirs"][:, :, :300]  # no expression components
    _write_py2(path, model)
    with pytest.raises(BadWeightsError, match="shapedirs"):
        load_flame_model(path)
    path.write_bytes((deca_dir / "generic_model.pkl").read_bytes()[:5000])
    with pytest.raises(BadWeightsError, match="generic_model.pkl"):
        load_flame_model(path)


def test_landmark_embedding_loads_numpy_and_torch_entries(deca_dir):
    got = load_landmark_embedding(deca_dir / "landmark_embedding.npy")
    want = synthetic_landmarks()
    for key, value in want.items():
        value = value.numpy() if isinstance(value, torch.Tensor) else value
        np.testing.assert_array_equal(got[key], value)
    assert got["dynamic_lmk_faces_idx"].shape == (79, 17)


def test_landmark_embedding_with_other_globals_is_refused(tmp_path):
    marker = tmp_path / "ran"
    data = synthetic_landmarks()
    data["hostile"] = _RunsCode(marker)
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, data, allow_pickle=True)
    with pytest.raises(BadWeightsError, match="refused global"):
        load_landmark_embedding(path)
    assert not marker.exists()
    np.save(path, np.zeros(3))
    with pytest.raises(BadWeightsError, match="landmark_embedding.npy"):
        load_landmark_embedding(path)


def test_head_template(deca_dir, tmp_path):
    t = read_head_template(deca_dir / "head_template.obj")
    assert t.v.shape == (N_VERTS, 3) and t.f.shape == (N_FACES, 3)
    assert t.vt.shape == (3 * N_FACES, 2) and t.ft.shape == (N_FACES, 3)
    np.testing.assert_array_equal(t.f, synthetic_flame()["f"])  # 1-based in the file
    assert t.ft[1].tolist() == [3, 4, 5]
    bad = tmp_path / "head_template.obj"
    bad.write_text("v 0 0 0\nvt 0 0\nf 1/1 2/1 3/1\n")
    with pytest.raises(BadWeightsError, match="indices"):
        read_head_template(bad)


def test_model_file_loads_strictly_and_tolerates_trainer_keys(deca_dir, tmp_path):
    model = checkpoints.load_model(deca_dir)
    state = torch.load(deca_dir / "deca_model.tar", weights_only=True)
    for name, module in model.networks.modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[name][key]), (name, key)
    assert not model.networks.E_flame.training

    state.update(opt={"lr": 1e-4}, global_step=10, batch_size=2)
    torch.save(state, tmp_path / "deca_model.tar")
    checkpoints.load_networks(tmp_path / "deca_model.tar")

    broken = dict(state)
    broken["E_flame"] = {k: v for k, v in state["E_flame"].items() if k != "layers.2.bias"}
    torch.save(broken, tmp_path / "deca_model.tar")
    with pytest.raises(BadWeightsError, match="layers.2.bias"):
        checkpoints.load_networks(tmp_path / "deca_model.tar")
    torch.save({**state, "E_albedo": {}}, tmp_path / "deca_model.tar")
    with pytest.raises(BadWeightsError, match="E_albedo"):
        checkpoints.load_networks(tmp_path / "deca_model.tar")
    torch.save({**state, "hook": _RunsCode(tmp_path / "ran")}, tmp_path / "deca_model.tar")
    with pytest.raises(BadWeightsError, match="not only tensors"):
        checkpoints.load_networks(tmp_path / "deca_model.tar")
    assert not (tmp_path / "ran").exists()


def test_missing_files_are_named_with_their_sources(deca_dir, tmp_path):
    for name in ("landmark_embedding.npy", "head_template.obj"):
        shutil.copy(deca_dir / name, tmp_path / name)
    with pytest.raises(MissingWeightsError) as err:
        checkpoints.load_model(tmp_path)
    text = str(err.value)
    assert "deca/deca_model.tar" in text and "deca/generic_model.pkl" in text
    assert "flame.is.tue.mpg.de" in text and "landmark_embedding" not in text


def test_registry_entries_and_manual_downloads(tmp_path, capsys):
    for rel in checkpoints.ALL_FILES:
        assert rel in weights.REGISTRY and weights.REGISTRY[rel].licence
    assert weights.REGISTRY[checkpoints.MODEL_FILE].manual
    # files needing a registration are never fetched (a login page would land as the file)
    status = weights.main(["download", "--models-dir", str(tmp_path), "--only", "deca/generic_model"])
    assert status == 1 and "MANUAL" in capsys.readouterr().out
    assert not any(tmp_path.rglob("*.pkl"))


def test_split_code():
    code = torch.arange(236.0)[None].repeat(2, 1)
    parts = split_code(code)
    assert {k: v.shape[1] for k, v in parts.items()} == {**CODE_SIZES, "light": 9}
    assert parts["light"].shape == (2, 9, 3)
    assert parts["pose"][0].tolist() == [200.0, 201, 202, 203, 204, 205]
    assert parts["cam"][0].tolist() == [206.0, 207, 208]
