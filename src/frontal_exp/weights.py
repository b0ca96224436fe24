"""Registry of every model file frontal_exp can use but cannot ship, and a CLI for them.

    python -m frontal_exp.weights list      # what is expected, and what is present
    python -m frontal_exp.weights verify    # size / sha256 where known, and that each file loads
    python -m frontal_exp.weights download  # fetch what is missing (needs internet)

Files live under one models directory: `$FRONTAL_EXP_MODELS`, else `~/.frontal_exp/models`
(every model config also takes an explicit directory). Each entry's `relpath` is its place
inside that directory, e.g. `buffalo_l/w600k_r50.onnx`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from frontal_exp.errors import BadWeightsError, MissingWeightsError

INSIGHTFACE_LICENCE = "insightface pretrained models: non-commercial research use only"
_IF_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"
_LP_HUB = "https://huggingface.co/KwaiVGI/LivePortrait/resolve/main/liveportrait"


@dataclass(frozen=True)
class WeightFile:
    """One external model file: where it goes, how to check it, where to get it."""

    relpath: str
    url: str
    licence: str
    description: str
    size: int | None = None
    sha256: str | None = None
    #: when `url` is a zip archive, the member to extract (matched by file name)
    archive_member: str | None = None
    #: the source needs a registration or a browser (licence form, Google Drive): no download
    manual: bool = False

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


def _entries() -> list[WeightFile]:
    gfpgan_licence = "GFPGAN: Apache-2.0 (model trained on FFHQ, research use)"
    lp_licence = "LivePortrait: MIT"
    lp_files = {
        "base_models/appearance_feature_extractor.pth": "appearance feature extractor (3D feature volume)",
        "base_models/motion_extractor.pth": "motion extractor (keypoints, pose, expression)",
        "base_models/warping_module.pth": "warping network (dense motion)",
        "base_models/spade_generator.pth": "SPADE decoder (512x512 output)",
        "retargeting_models/stitching_retargeting_module.pth": "stitching and eye/lip retargeting MLPs",
    }
    out = [
        WeightFile(
            "buffalo_l/det_10g.onnx", f"{_IF_RELEASE}/buffalo_l.zip", INSIGHTFACE_LICENCE,
            "SCRFD-10GF face detector with 5 keypoints (insightface buffalo_l pack)",
            archive_member="det_10g.onnx",
        ),
        WeightFile(
            "buffalo_l/w600k_r50.onnx", f"{_IF_RELEASE}/buffalo_l.zip", INSIGHTFACE_LICENCE,
            "ArcFace ResNet50 trained on WebFace600K (insightface buffalo_l pack)",
            archive_member="w600k_r50.onnx",
        ),
        WeightFile(
            "antelopev2/scrfd_10g_bnkps.onnx", f"{_IF_RELEASE}/antelopev2.zip", INSIGHTFACE_LICENCE,
            "SCRFD-10GF face detector with 5 keypoints (insightface antelopev2 pack)",
            archive_member="scrfd_10g_bnkps.onnx",
        ),
        WeightFile(
            "antelopev2/glintr100.onnx", f"{_IF_RELEASE}/antelopev2.zip", INSIGHTFACE_LICENCE,
            "ArcFace ResNet100 trained on Glint360K (insightface antelopev2 pack)",
            archive_member="glintr100.onnx",
        ),
        WeightFile(
            "facexlib/detection_Resnet50_Final.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            "facexlib: MIT (RetinaFace weights from biubug6/Pytorch_Retinaface)",
            "RetinaFace-ResNet50 face detector with 5 keypoints (also GFPGAN's face helper)",
        ),
        WeightFile(
            "facexlib/parsing_parsenet.pth",
            "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/parsing_parsenet.pth",
            "facexlib: MIT",
            "ParseNet face parsing (GFPGAN's face helper uses it to paste faces back)",
        ),
        WeightFile(
            "gfpgan/GFPGANv1.3.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
            gfpgan_licence, "GFPGAN v1.3 face restoration (arch clean, channel multiplier 2)",
            size=348632874,
        ),
        WeightFile(
            "gfpgan/GFPGANv1.4.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            gfpgan_licence, "GFPGAN v1.4 face restoration (arch clean, channel multiplier 2)",
            size=348632874,
        ),
    ]
    out += [
        WeightFile(f"liveportrait/{rel}", f"{_LP_HUB}/{rel}", lp_licence, f"LivePortrait {desc}")
        for rel, desc in lp_files.items()
    ]
    out += _deca_entries()
    out += _ffwm_entries()
    return out


def _ffwm_entries() -> list[WeightFile]:
    """FFWM (csyxwei/FFWM): the two test-time networks, from the Google Drive folder of its
    README (mirror: https://pan.baidu.com/s/1X62Atd9Q_USs0aGQk3WllA, code l98p)."""
    drive = "https://drive.google.com/drive/folders/1U26FvuLtXraxPrRNxCxFka3DOvRuG4NW"
    licence = "FFWM: code MIT; no licence stated for the weights (trained on Multi-PIE, whose terms apply)"
    return [
        WeightFile("ffwm/latest_net_flowNetF.pth", drive, licence,
                   "FFWM flowNetF (flow to frontal; checkpoints/ffwm/ in the Drive folder)", manual=True),
        WeightFile("ffwm/latest_net_netG.pth", drive, licence,
                   "FFWM netG (flow-warped generator; checkpoints/ffwm/ in the Drive folder)", manual=True),
    ]


def _deca_entries() -> list[WeightFile]:
    """DECA (yfeng95/DECA): its model, FLAME 2020 and DECA's data files, as one folder."""
    deca_licence = ("DECA: non-commercial scientific research only, no redistribution "
                    "(MPI licence, https://deca.is.tue.mpg.de)")
    flame_licence = "FLAME 2020: MPI non-commercial licence, registration required (https://flame.is.tue.mpg.de)"
    data = "https://github.com/yfeng95/DECA/raw/master/data"
    return [
        WeightFile("deca/deca_model.tar",
                   "https://drive.google.com/file/d/1rp8kdyLPvErw2dTmqtjISRVvQLj6Yzje/view", deca_licence,
                   "DECA encoders and detail decoder (a torch.save dict, not a tar archive)", manual=True),
        WeightFile("deca/generic_model.pkl", "https://flame.is.tue.mpg.de/ (FLAME2020.zip)", flame_licence,
                   "FLAME 2020 head model (register, download FLAME2020.zip, take generic_model.pkl)",
                   manual=True),
        WeightFile("deca/landmark_embedding.npy", f"{data}/landmark_embedding.npy", deca_licence,
                   "FLAME landmark faces and barycentric coordinates (DECA's data/)"),
        WeightFile("deca/head_template.obj", f"{data}/head_template.obj", deca_licence,
                   "FLAME topology with UV coordinates (DECA's data/)"),
        WeightFile("deca/uv_face_eye_mask.png", f"{data}/uv_face_eye_mask.png", deca_licence,
                   "UV mask of the face and eyes, where DECA's detail applies (DECA's data/; "
                   "model.detail=true only)"),
        WeightFile("deca/fixed_displacement_256.npy", f"{data}/fixed_displacement_256.npy", deca_licence,
                   "DECA's fixed UV displacement correction (DECA's data/; model.detail=true only)"),
    ]


REGISTRY: dict[str, WeightFile] = {w.relpath: w for w in _entries()}


def default_models_dir() -> Path:
    """`$FRONTAL_EXP_MODELS`, else `~/.frontal_exp/models`."""
    env = os.environ.get("FRONTAL_EXP_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".frontal_exp" / "models"


def resolve(relpath: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of a registered file, or raise `MissingWeightsError` saying how to get it.

    `models_dir` may hold the file at `relpath`, inside the pack's own folder, or directly by
    its file name (users often unpack a pack's files flat into one folder).
    """
    entry = REGISTRY[relpath]
    root = Path(models_dir).expanduser() if models_dir else default_models_dir()
    found = _find(entry, root)
    if found is None:
        raise MissingWeightsError(missing_message([entry], root))
    return found


def resolve_all(relpaths: list[str], models_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of several registered files; one `MissingWeightsError` naming every missing one."""
    found: dict[str, Path] = {}
    missing: list[WeightFile] = []
    for rel in dict.fromkeys(relpaths):
        try:
            found[rel] = resolve(rel, models_dir)
        except MissingWeightsError:
            missing.append(REGISTRY[rel])
    if missing:
        root = Path(models_dir).expanduser() if models_dir else default_models_dir()
        raise MissingWeightsError(missing_message(missing, root))
    return found


def missing_message(entries: list[WeightFile], root: Path) -> str:
    lines = [f"Missing model file(s) under {root}:"]
    for e in entries:
        size = f"{e.size:,} bytes" if e.size else "size unknown"
        sha = f", sha256 {e.sha256}" if e.sha256 else ""
        src = f"{e.url} (member {e.archive_member})" if e.archive_member else e.url
        lines.append(f"  - {e.relpath} ({size}{sha}): {e.description}\n    get it from {src}")
    lines.append(
        "Put the files there (or set FRONTAL_EXP_MODELS / the config's models_dir), or run "
        "`python -m frontal_exp.weights download` on a machine with internet access."
    )
    return "\n".join(lines)


def bad_weights(path: str | os.PathLike, what: str, exc: BaseException | str) -> BadWeightsError:
    """The error for a model file that is present but unusable: what it is, what it should be."""
    path = Path(path)
    size = f"{path.stat().st_size:,} bytes" if path.is_file() else "no file"
    entry = next((e for e in REGISTRY.values() if path.as_posix().endswith(e.relpath)
                  or path.name == e.filename), None)
    official = ""
    if entry is not None:
        expected = f"{entry.size:,} bytes, " if entry.size else ""
        official = f" The official file ({expected}{entry.url}) is expected there."
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return BadWeightsError(
        f"{path} ({size}) is not usable as {what}: {reason}. It may be truncated, damaged or "
        f"another file.{official} Check it with `python -m frontal_exp.weights verify`.",
        reason=f"not {what} ({reason})",
    )


def torch_load_reason(exc: BaseException) -> str:
    """Why `torch.load(weights_only=True)` refused a file, without torch's advice to load it
    with `weights_only=False` or to allowlist its classes: for a file of unknown origin that
    would run the code it holds. Only the cause is kept."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())  # no ANSI styles, one line
    if "Weights only load failed" not in text:
        return f"{type(exc).__name__}: {text}"
    cause = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
    cause = cause.split(" Please use", 1)[0].split(" Check the documentation", 1)[0].strip().rstrip(".")
    cause = f" ({cause})" if cause else ""
    return f"it holds pickled Python objects, not only tensors{cause}; frontal_exp loads model files as data only"


def load_torch_checkpoint(path: str | os.PathLike) -> dict:
    """`torch.load(..., weights_only=True)` of a state-dict file (a checkpoint is data, never
    code); `BadWeightsError` when it is not a readable checkpoint holding a dict."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip/torch errors of many types
        raise bad_weights(path, "a PyTorch checkpoint", torch_load_reason(exc)) from None  # torch's advice is wrong here
    if not isinstance(obj, dict):
        raise bad_weights(path, "a PyTorch checkpoint", f"holds a {type(obj).__name__}, not a state dict")
    return obj


def load_strict(module, state: object, path: str | os.PathLike, what: str, strip_prefix: str = "") -> None:
    """`module.load_state_dict(state, strict=True)`, with `strip_prefix` (e.g. DataParallel's
    "module.") removed from the keys; `BadWeightsError` naming the file when `state` is not a
    state dict or its keys or shapes do not match the architecture."""
    if not isinstance(state, Mapping):
        raise bad_weights(path, what, f"holds a {type(state).__name__} where a state dict belongs")
    state = {(k.removeprefix(strip_prefix) if strip_prefix else k): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        reason = " ".join(str(exc).split())  # the missing / unexpected keys, on one line
        raise bad_weights(path, what, reason[:1000]) from exc


def check_readable(path: Path) -> str | None:
    """Why a present file cannot be loaded as what its suffix says (None when it can)."""
    if path.suffix == ".pth":
        try:
            load_torch_checkpoint(path)
        except BadWeightsError as exc:
            return exc.reason
    elif path.suffix == ".onnx":
        import onnx

        try:
            onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf decode errors
            return bad_weights(path, "an ONNX model", exc).reason
    return None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(entry: WeightFile, path: Path, load: bool = False) -> list[str]:
    """Problems with a present file (empty list when it matches what is known); with `load`,
    also whether it loads as the format its name says (a PyTorch checkpoint, an ONNX model)."""
    problems = []
    if entry.size is not None and path.stat().st_size != entry.size:
        problems.append(f"size {path.stat().st_size:,} != expected {entry.size:,}")
    if entry.sha256 is not None and sha256_of(path) != entry.sha256:
        problems.append("sha256 mismatch")
    if load and not problems and (why := check_readable(path)):
        problems.append(why)
    return problems


def download(entry: WeightFile, root: Path) -> Path:
    """Fetch one file (extracting it from its zip when needed) into `root`.

    The file appears under its final name only when complete, so an interrupted download
    never looks present.
    """
    target = root / entry.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fetched = Path(tmp) / Path(entry.url).name
        urllib.request.urlretrieve(entry.url, fetched)  # noqa: S310 - fixed https URLs
        if entry.archive_member:
            try:
                with zipfile.ZipFile(fetched) as zf:
                    member = next((n for n in zf.namelist() if Path(n).name == entry.archive_member), None)
                    if member is None:
                        raise OSError(f"{entry.url} has no member {entry.archive_member}")
                    extracted = Path(tmp) / entry.filename
                    with zf.open(member) as src, open(extracted, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            except zipfile.BadZipFile as exc:
                raise OSError(f"{entry.url} is not a valid zip archive: {exc}") from exc
            fetched = extracted
        problems = verify(entry, fetched)
        if problems:
            raise OSError(f"downloaded {entry.relpath} does not match: {'; '.join(problems)}")
        os.replace(fetched, target)
    return target


def _find(entry: WeightFile, root: Path) -> Path | None:
    """The file under `root`: at its registry path, at that path inside its pack folder
    (root = the pack folder itself, e.g. .../liveportrait), or flat by file name."""
    inside_pack = entry.relpath.split("/", 1)[1] if "/" in entry.relpath else entry.relpath
    for candidate in (root / entry.relpath, root / inside_pack, root / entry.filename):
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frontal_exp.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "verify", "download"])
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="default: $FRONTAL_EXP_MODELS or ~/.frontal_exp/models")
    parser.add_argument("--only", default="", help="substring filter on the file path")
    args = parser.parse_args(argv)
    root = (args.models_dir or default_models_dir()).expanduser()
    entries = [e for e in REGISTRY.values() if args.only in e.relpath]
    status = 0
    tally = {"present": 0, "missing": 0, "unusable": 0}
    print(f"models directory: {root}")
    print(f"licences: {INSIGHTFACE_LICENCE}; see README for the others.")
    for e in entries:
        path = _find(e, root)
        if args.command == "download" and path is None and e.manual:
            print(f"  MANUAL     {e.relpath}: get it by hand from {e.url} ({e.licence})")
            status = 1
            continue
        if args.command == "download" and path is None:
            try:
                path = download(e, root)
                print(f"  downloaded {e.relpath}")
            except OSError as exc:
                print(f"  FAILED     {e.relpath}: {exc} (get it by hand from {e.url})")
                status = 1
                continue
        if path is None:
            tally["missing"] += 1
            print(f"  missing    {e.relpath:55s} {e.url}")
            status = 1 if args.command == "verify" else status
        elif args.command == "list":
            tally["present"] += 1
            print(f"  present    {e.relpath:55s} {path.stat().st_size:,} bytes")
        else:
            problems = verify(e, path, load=True)
            # "ok": matches the size / sha256 on record; "loads": nothing on record, but it loads
            label = "BAD" if problems else "ok" if e.size or e.sha256 else "loads"
            note = "; ".join(problems) or ("" if label == "ok" else "(no size or sha256 on record)")
            print(f"  {label:10s} {e.relpath:55s} {note}")
            tally["unusable" if problems else "present"] += 1
            status = 1 if problems else status
    checked = ", ".join(f"{n} {k}" for k, n in tally.items() if k != "unusable" or args.command != "list")
    print(f"{len(entries)} files: {checked}")  # the last line: what the listing adds up to
    return status


if __name__ == "__main__":
    sys.exit(main())
