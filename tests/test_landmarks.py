"""The landmark service: one packaged detector + 106-point model per process, shared by the
frontalizers' crops and the face mesh fallback, with per-call thresholds."""

from __future__ import annotations

import numpy as np
from insightface.app.common import Face
from insightface.model_zoo import get_model

from frontal_exp.embedders.packaged import packaged_model_path
from frontal_exp.face3d.facemesh import FaceMeshDetector
from frontal_exp.images import read_image
from frontal_exp.landmarks import FaceLandmarker, landmark_service


def test_every_user_shares_one_service(monkeypatch):
    import frontal_exp.landmarks as landmarks

    service = landmark_service()
    assert FaceLandmarker(512, 0.3).service is service and FaceLandmarker(640, 0.5).service is service
    # the face mesh's detector fallback asks the same service: no second detector loaded
    calls = []
    real = type(service).detect

    def spy(self, image, *args, **kwargs):
        calls.append(self)
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(landmarks.LandmarkService, "detect", spy)
    FaceMeshDetector()._scrfd_boxes(np.zeros((64, 64, 3), np.uint8))
    assert calls == [service]


def test_landmarks_are_those_of_the_packaged_models_with_the_callers_threshold(package_photos):
    """The shared service gives what the two packaged models give when loaded directly, and a
    caller's threshold neither leaks into nor comes from another caller's."""
    image = read_image(package_photos["astronaut"])
    detector = get_model(str(packaged_model_path("scrfd_500m_bnkps.onnx")), providers=["CPUExecutionProvider"])
    detector.prepare(ctx_id=-1, input_size=(512, 512), det_thresh=0.3)
    model = get_model(str(packaged_model_path("2d106det.onnx")), providers=["CPUExecutionProvider"])
    model.prepare(ctx_id=-1)
    boxes, kps = detector.detect(image, max_num=0, metric="default")
    i = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    expected = model.get(image, Face(bbox=boxes[i, :4], kps=kps[i], det_score=boxes[i, 4]))
    np.testing.assert_allclose(FaceLandmarker(512, 0.3)(image), expected, atol=1e-4)

    service = landmark_service()
    low, _ = service.detect(image, 512, 0.3)
    assert len(service.detect(image, 512, 0.999)[0]) == 0  # a strict caller finds nothing ...
    again, _ = service.detect(image, 512, 0.3)
    np.testing.assert_array_equal(again, low)  # ... and leaves the others' threshold alone
    assert (low[:, 4] >= 0.3).all()
