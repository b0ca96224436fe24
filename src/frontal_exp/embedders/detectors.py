"""Face detectors: insightface-format ONNX detectors (SCRFD) and RetinaFace-ResNet50 (PyTorch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frontal_exp import weights
from frontal_exp.embedders.base import Detector, Face
from frontal_exp.embedders.models import load_insightface_model, resolve_model


def onnx_providers(device: str = "auto") -> list:
    """onnxruntime providers for a device name, by the project's one device rule: auto uses
    CUDA when the runtime has it; cuda / cuda:N without it is a config error."""
    import onnxruntime

    from frontal_exp.errors import ConfigError

    # batched calls of models exported with a fixed batch dimension warn on every call
    onnxruntime.set_default_logger_severity(3)
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device.startswith("cuda") and not has_cuda:
        raise ConfigError(
            f"device={device} but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu), or use device=auto / cpu"
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    device_id = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


def execution_device(providers: list) -> str:
    """"cpu" or "cuda": where onnxruntime runs with `providers` (a setting of cached outputs)."""
    return "cpu" if providers == ["CPUExecutionProvider"] else "cuda"


def _round_up(x: int, k: int = 32) -> int:
    return ((x + k - 1) // k) * k


class InsightFaceDetector(Detector):
    """Any detector in insightface's ONNX format with 5 keypoints (SCRFD-500M, SCRFD-10GF, ...).

    `det_size` caps the network input; smaller images are run at their own size (rounded
    up to a multiple of 32, at least `min_det_size`), which is faster and as accurate.
    """

    runtime_attrs = ("_model",)

    def __init__(
        self,
        model: str,
        models_dir: str | None = None,
        det_size: int = 640,
        min_det_size: int = 160,
        det_thresh: float = 0.5,
        device: str = "auto",
    ) -> None:
        self.model_path = resolve_model(model, models_dir)
        self.det_size = det_size
        self.min_det_size = min_det_size
        self.det_thresh = det_thresh
        providers = onnx_providers(device)
        self.execution = execution_device(providers)
        self._model = load_insightface_model(self.model_path, providers, "detect",
                                             "an insightface-format face detector")
        # ctx_id < 0 would force the CPU; >= 0 keeps the providers chosen above
        self._model.prepare(ctx_id=-1 if device == "cpu" else 0, det_thresh=det_thresh,
                            input_size=(det_size, det_size))
        self.name = f"{Path(model).stem}"

    def input_size_for(self, image: np.ndarray) -> tuple[int, int]:
        side = _round_up(max(image.shape[:2]))
        side = int(min(self.det_size, max(self.min_det_size, side)))
        return side, side

    def detect(self, image: np.ndarray) -> list[Face]:
        bboxes, kpss = self._model.detect(image, input_size=self.input_size_for(image))
        faces = [
            Face(bbox=b[:4].astype(np.float32), kps=k.astype(np.float32), det_score=float(b[4]))
            for b, k in zip(bboxes, kpss, strict=True)
        ]
        return sorted(faces, key=lambda f: -f.det_score)


class RetinaFaceDetector(Detector):
    """RetinaFace proper (ResNet50 backbone, facexlib architecture), e.g. the study's detector.

    Loads `detection_Resnet50_Final.pth` (the biubug6 / facexlib checkpoint) from the models
    directory; never downloads.
    """

    runtime_attrs = ("_net",)

    def __init__(
        self,
        model: str = "facexlib/detection_Resnet50_Final.pth",
        models_dir: str | None = None,
        det_thresh: float = 0.8,
        max_side: int = 640,
        device: str = "auto",
    ) -> None:
        import torch
        from facexlib.detection.retinaface import RetinaFace

        self.model_path = resolve_model(model, models_dir)
        self.det_thresh = det_thresh
        self.max_side = max_side
        from frontal_exp.devices import torch_device

        self.device = torch.device(torch_device(device))
        net = RetinaFace(network_name="resnet50", half=False, phase="test", device=self.device)
        # checkpoints saved from DataParallel carry a "module." prefix
        weights.load_strict(net, weights.load_torch_checkpoint(self.model_path), self.model_path,
                            "a RetinaFace-ResNet50 checkpoint", strip_prefix="module.")
        self._net = net.to(self.device).eval()
        self.name = "retinaface_r50"

    def detect(self, image: np.ndarray) -> list[Face]:
        import torch

        from frontal_exp.images import downscale_to

        small, scale = downscale_to(image, self.max_side)
        with torch.no_grad():
            dets = self._net.detect_faces(small, conf_threshold=self.det_thresh)
        faces = []
        for d in np.asarray(dets, dtype=np.float32).reshape(-1, 15):
            faces.append(Face(bbox=d[:4] / scale, kps=d[5:15].reshape(5, 2) / scale,
                              det_score=float(d[4])))
        return sorted(faces, key=lambda f: -f.det_score)
