"""Face recognizers: insightface-format ArcFace ONNX models (MobileFaceNet, ResNet50/100)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frontal_exp.embedders.base import Recognizer, l2_normalize
from frontal_exp.embedders.detectors import execution_device, onnx_providers
from frontal_exp.embedders.models import load_insightface_model, resolve_model


class ArcFaceRecognizer(Recognizer):
    """ArcFace-style recognizer (112x112 aligned BGR crop in, D-dim embedding out), batched."""

    runtime_attrs = ("_model",)

    def __init__(
        self,
        model: str,
        models_dir: str | None = None,
        batch_size: int = 32,
        device: str = "auto",
    ) -> None:
        self.model_path = resolve_model(model, models_dir)
        self.batch_size = batch_size
        providers = onnx_providers(device)
        self.execution = execution_device(providers)
        self._model = load_insightface_model(self.model_path, providers, "get_feat",
                                             "an insightface-format face recognizer")
        self.input_size = int(self._model.input_size[0])
        # Models exported with a fixed batch of 1 cannot take a stacked batch.
        shape = self._model.session.get_inputs()[0].shape
        self._fixed_batch = isinstance(shape[0], int) and shape[0] == 1
        self.name = Path(model).stem

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        step = 1 if self._fixed_batch else self.batch_size
        feats = [self._model.get_feat(list(crops[i : i + step])) for i in range(0, len(crops), step)]
        return l2_normalize(np.concatenate(feats, axis=0).astype(np.float32))
