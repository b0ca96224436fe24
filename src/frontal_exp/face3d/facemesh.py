"""MediaPipe FaceMesh (478 3D landmarks) as a reusable detector, plus its triangulation."""

from __future__ import annotations

import collections
import threading
from functools import lru_cache

import cv2
import numpy as np

from frontal_exp.errors import FrontalizationError
from frontal_exp.quiet import native_stderr_filtered

#: FaceMesh returns 468 mesh points and, with refine_landmarks, 10 iris points
N_LANDMARKS = 478
N_MESH = 468


class FaceMeshDetector:
    """478 FaceMesh landmarks in pixel units (x, y in pixels; z scaled like x, larger = farther).

    The MediaPipe graph is loaded on first use and kept; calls are serialised with a lock
    because one graph instance is not re-entrant.
    """

    def __init__(
        self,
        *,
        max_faces: int = 4,
        min_confidence: float = 0.5,
        crop_grow: float = 0.5,
        detector_fallback: bool = True,
    ) -> None:
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.crop_grow = crop_grow
        self.detector_fallback = detector_fallback
        self._mesh = None
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------
    def detect(
        self, image: np.ndarray, box: tuple[float, float, float, float] | None = None
    ) -> np.ndarray | None:
        """Landmarks (478x3 float32, pixels) of the largest face, or None when there is none.

        `box` (x1, y1, x2, y2) is a face box to look in: the image is cropped around it
        (box grown by `crop_grow` of its size on each side) because FaceMesh's own detector
        misses small faces in large images. Without a box the whole image is tried first,
        then (if `detector_fallback`) crops around the packaged SCRFD detector's boxes.
        """
        if box is not None:
            return self._on_crop(image, box)
        found = self._run(image)
        if found is not None or not self.detector_fallback:
            return found
        boxes = self._scrfd_boxes(image)
        best = None
        for b in boxes:
            lm = self._on_crop(image, b)
            if lm is not None and (best is None or _area(lm) > _area(best)):
                best = lm
        return best

    def landmarks(
        self, image: np.ndarray, box: tuple[float, float, float, float] | None = None
    ) -> np.ndarray:
        """Like `detect`, but raise `FrontalizationError` when no face mesh is found."""
        found = self.detect(image, box)
        if found is None:
            h, w = image.shape[:2]
            raise FrontalizationError(
                f"no face mesh found in the {w}x{h} image (MediaPipe FaceMesh): the face may be "
                "too small, cut off, or not a face; pass a face box or a tighter crop"
            )
        return found

    # -- internals ------------------------------------------------------------------------
    def _graph(self):
        if self._mesh is None:
            import mediapipe as mp  # heavy import, only when a mesh is first needed

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=self.max_faces,
                refine_landmarks=True,
                min_detection_confidence=self.min_confidence,
            )
        return self._mesh

    def _run(self, image: np.ndarray, near: np.ndarray | None = None) -> np.ndarray | None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FrontalizationError(f"expected a BGR uint8 HxWx3 image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if min(h, w) < 16:
            return None
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        with self._lock:
            if self._mesh is None:  # graph creation and first inference print native chatter
                with native_stderr_filtered():
                    result = self._graph().process(rgb)
            else:
                result = self._graph().process(rgb)
        if not result.multi_face_landmarks:
            return None
        meshes = [
            np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            for face in result.multi_face_landmarks
        ]
        if near is None:
            return max(meshes, key=_area)
        # a face box was given: the mesh centred nearest to it, not a bigger neighbour
        return min(meshes, key=lambda m: float(np.linalg.norm(m[:, :2].mean(0) - near)))

    def _on_crop(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        gx, gy = (x2 - x1) * self.crop_grow, (y2 - y1) * self.crop_grow
        cx1, cy1 = max(0, int(x1 - gx)), max(0, int(y1 - gy))
        cx2, cy2 = min(w, int(np.ceil(x2 + gx))), min(h, int(np.ceil(y2 + gy)))
        if cx2 - cx1 < 16 or cy2 - cy1 < 16:
            return None
        crop = image[cy1:cy2, cx1:cx2]
        # FaceMesh works on a 192 px face; tiny crops are upscaled so its detector fires
        up = max(1.0, 256.0 / max(crop.shape[:2]))
        if up > 1.0:
            crop = cv2.resize(crop, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        centre = np.array([((x1 + x2) / 2 - cx1) * up, ((y1 + y2) / 2 - cy1) * up])
        lm = self._run(crop, near=centre)
        if lm is None:
            return None
        lm = lm / up
        lm[:, 0] += cx1
        lm[:, 1] += cy1
        return lm

    def _scrfd_boxes(
        self, image: np.ndarray, max_num: int | None = None
    ) -> list[tuple[float, float, float, float]]:
        """Face boxes from the packaged SCRFD detector; [] only when it finds no face. Any
        other failure propagates: a missing or unusable model file raises `ModelFileError`
        (which stops a run), never a cached "no face"."""
        from frontal_exp.landmarks import landmark_service

        dets, _ = landmark_service().detect(
            image, 640, 0.5, max_num=self.max_faces if max_num is None else max_num, metric="max"
        )
        return [tuple(map(float, d[:4])) for d in dets]


def _area(lm: np.ndarray) -> float:
    span = lm[:, :2].max(0) - lm[:, :2].min(0)
    return float(span[0] * span[1])


_SHARED: FaceMeshDetector | None = None
_SHARED_LOCK = threading.Lock()


def get_face_mesh() -> FaceMeshDetector:
    """The process-wide detector (one MediaPipe graph shared by every caller)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = FaceMeshDetector()
        return _SHARED


@lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """The (852, 3) int32 triangles of the 468-point mesh, consistently oriented.

    mediapipe ships only the edge list `FACEMESH_TESSELATION`; its triangles are the
    3-cliques of that graph, except two spurious cliques (one per cheek, by the nose) whose
    edges already border two real triangles each. Orientation is propagated across shared
    edges and chosen so that the image-space cross product (v1-v0) x (v2-v0) is negative
    along z, i.e. the normal points toward the camera, for a face seen from the front.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]})
    uses = collections.Counter(e for t in cliques for e in _tri_edges(t))
    tris = [t for t in cliques if not all(uses[e] > 2 for e in _tri_edges(t))]
    return _orient(np.array(tris, dtype=np.int32))


def _tri_edges(t: tuple[int, int, int]) -> list[tuple[int, int]]:
    a, b, c = t
    return [(a, b), (b, c), (a, c)]


def _orient(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so neighbours traverse shared edges in opposite directions."""
    by_edge: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for i, t in enumerate(tris):
        for e in _tri_edges(tuple(t)):
            by_edge[e].append(i)
    tris = tris.copy()
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            i = queue.pop()
            directed = {(tris[i][k], tris[i][(k + 1) % 3]) for k in range(3)}
            for e in _tri_edges(tuple(sorted(tris[i]))):
                for j in by_edge[e]:
                    if done[j]:
                        continue
                    dj = {(tris[j][k], tris[j][(k + 1) % 3]) for k in range(3)}
                    if directed & dj:  # same direction on the shared edge: flip j
                        tris[j] = tris[j][[0, 2, 1]]
                    done[j] = True
                    queue.append(j)
    # pick the global sign with the canonical (frontal) mesh: normals toward the camera (-z)
    from frontal_exp.face3d.canonical import canonical_mesh

    v = canonical_mesh()
    n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    if (n[:, 2] < 0).sum() < len(tris) / 2:
        tris = tris[:, [0, 2, 1]]
    return np.ascontiguousarray(tris)
