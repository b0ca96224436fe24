"""The weights registry and its command line: list, verify, download (from local URLs)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from frontal_exp import weights
from frontal_exp.errors import MissingWeightsError


def test_registry_names_every_study_file_with_a_source_and_licence():
    expected = {
        "buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx", "antelopev2/scrfd_10g_bnkps.onnx",
        "antelopev2/glintr100.onnx", "facexlib/detection_Resnet50_Final.pth", "facexlib/parsing_parsenet.pth",
        "gfpgan/GFPGANv1.3.pth", "gfpgan/GFPGANv1.4.pth",
        "liveportrait/base_models/appearance_feature_extractor.pth",
        "liveportrait/base_models/motion_extractor.pth", "liveportrait/base_models/warping_module.pth",
        "liveportrait/base_models/spade_generator.pth",
        "liveportrait/retargeting_models/stitching_retargeting_module.pth",
    }
    assert expected <= set(weights.REGISTRY)
    for entry in weights.REGISTRY.values():
        assert entry.url.startswith("https://") and entry.licence and entry.description


def test_resolve_finds_files_nested_or_flat(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"(?s)gfpgan/GFPGANv1.4.pth.*348,632,874 bytes.*TencentARC"):
        weights.resolve("gfpgan/GFPGANv1.4.pth", tmp_path)
    (tmp_path / "w600k_r50.onnx").write_bytes(b"x")  # unpacked flat
    assert weights.resolve("buffalo_l/w600k_r50.onnx", tmp_path) == tmp_path / "w600k_r50.onnx"
    (tmp_path / "buffalo_l").mkdir()
    (tmp_path / "buffalo_l" / "w600k_r50.onnx").write_bytes(b"y")  # registry layout wins
    assert weights.resolve("buffalo_l/w600k_r50.onnx", tmp_path) == tmp_path / "buffalo_l" / "w600k_r50.onnx"


def test_models_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FRONTAL_EXP_MODELS", str(tmp_path))
    assert weights.default_models_dir() == tmp_path


def test_verify_checks_size_and_sha256(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    good = weights.WeightFile("x/f.bin", "https://e", "l", "d", size=5,
                              sha256=hashlib.sha256(b"hello").hexdigest())
    assert weights.verify(good, path) == []
    bad = weights.WeightFile("x/f.bin", "https://e", "l", "d", size=6, sha256="0" * 64)
    assert len(weights.verify(bad, path)) == 2


def test_download_extracts_a_member_of_a_zip(tmp_path):
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pack/model.onnx", b"model-bytes")
        zf.writestr("pack/other.onnx", b"other")
    entry = weights.WeightFile("pack/model.onnx", archive.as_uri(), "l", "d", archive_member="model.onnx")
    out = weights.download(entry, tmp_path / "models")
    assert out.read_bytes() == b"model-bytes"
    plain = weights.WeightFile("direct/file.pth", (tmp_path / "pack.zip").as_uri(), "l", "d")
    assert weights.download(plain, tmp_path / "models").read_bytes() == archive.read_bytes()


def test_cli_list_and_verify(tmp_path, capsys):
    (tmp_path / "gfpgan").mkdir()
    (tmp_path / "gfpgan" / "GFPGANv1.4.pth").write_bytes(b"truncated download")
    assert weights.main(["list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "present    gfpgan/GFPGANv1.4.pth" in out and "missing    buffalo_l/det_10g.onnx" in out
    assert weights.main(["verify", "--models-dir", str(tmp_path), "--only", "gfpgan"]) == 1
    assert "BAD" in capsys.readouterr().out


def test_download_failures_leave_nothing_behind(tmp_path):
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pack/other.onnx", b"other")
    no_member = weights.WeightFile("pack/model.onnx", archive.as_uri(), "l", "d", archive_member="model.onnx")
    with pytest.raises(OSError, match="no member"):
        weights.download(no_member, tmp_path / "models")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    bad_zip = weights.WeightFile("pack/model.onnx", (tmp_path / "bad.zip").as_uri(), "l", "d", archive_member="m")
    with pytest.raises(OSError, match="not a valid zip"):
        weights.download(bad_zip, tmp_path / "models")
    wrong_size = weights.WeightFile("x/f.bin", archive.as_uri(), "l", "d", size=1)
    with pytest.raises(OSError, match="does not match"):
        weights.download(wrong_size, tmp_path / "models")
    assert [p for p in (tmp_path / "models").rglob("*") if p.is_file()] == []


def test_verify_loads_each_file_and_says_what_it_could_check(tmp_path, capsys):
    """Files with no size on record are still checked: a junk .pth or .onnx is BAD, a real
    checkpoint 'loads'; a file matching its recorded size is 'ok'."""
    import torch

    (tmp_path / "liveportrait/base_models").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, tmp_path / "liveportrait/base_models/warping_module.pth")
    (tmp_path / "liveportrait/base_models/spade_generator.pth").write_bytes(b"<html>rate limited</html>")
    (tmp_path / "buffalo_l").mkdir()
    (tmp_path / "buffalo_l/w600k_r50.onnx").write_bytes(b"junk")
    assert weights.main(["verify", "--models-dir", str(tmp_path), "--only", "liveportrait/base"]) == 1
    out = capsys.readouterr().out
    assert "loads      liveportrait/base_models/warping_module.pth" in out
    assert "BAD        liveportrait/base_models/spade_generator.pth" in out and "not a PyTorch checkpoint" in out
    # one closing line counts them (warping loads, spade is unusable, the other two are missing)
    assert out.strip().splitlines()[-1] == "4 files: 1 present, 2 missing, 1 unusable"
    assert weights.main(["verify", "--models-dir", str(tmp_path), "--only", "w600k"]) == 1
    assert "not an ONNX model" in capsys.readouterr().out


def test_load_torch_checkpoint_errors_name_the_file_and_the_source(tmp_path):
    import torch

    from frontal_exp.errors import BadWeightsError

    path = tmp_path / "GFPGANv1.4.pth"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(BadWeightsError, match=r"(?s)GFPGANv1.4.pth \(10 bytes\).*348,632,874 bytes.*TencentARC"):
        weights.load_torch_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(BadWeightsError, match="not a state dict"):
        weights.load_torch_checkpoint(path)


def test_load_strict_strips_a_prefix_and_refuses_what_does_not_fit(tmp_path):
    import torch

    from frontal_exp.errors import BadWeightsError

    net = torch.nn.Linear(2, 3)
    path = tmp_path / "parsing_parsenet.pth"
    state = {f"module.{k}": v + 1 for k, v in net.state_dict().items()}
    weights.load_strict(net, state, path, "a test net", strip_prefix="module.")
    assert torch.equal(net.weight, state["module.weight"])
    with pytest.raises(BadWeightsError, match=r"not usable as a test net.*Missing key.*bias"):
        weights.load_strict(net, {"weight": net.weight}, path, "a test net")
    with pytest.raises(BadWeightsError, match="holds a list where a state dict belongs"):
        weights.load_strict(net, [1], path, "a test net")
    with pytest.raises(BadWeightsError, match="size mismatch"):
        weights.load_strict(torch.nn.Linear(2, 4), dict(net.state_dict()), path, "a test net")


class NotATensor:
    """A class a checkpoint must not hold: unpickling it could run any code."""


def test_a_checkpoint_holding_code_is_refused_without_advice_to_trust_it(tmp_path):
    """torch's weights_only error suggests `weights_only=False` (run the file's code) or
    allowlisting its classes; for a model file of unknown origin both are the wrong advice."""
    import torch

    from frontal_exp.errors import BadWeightsError

    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": {"w": torch.zeros(2)}, "extra": NotATensor()}, path)
    with pytest.raises(BadWeightsError) as err:
        weights.load_torch_checkpoint(path)
    text = f"{err.value} {err.value.reason}"
    assert "NotATensor" in text and "pickled Python objects" in text and str(path) in text
    for advice in ("weights_only", "Re-running", "trust", "add_safe_globals", "safe_globals", "\x1b["):
        assert advice not in text, advice
