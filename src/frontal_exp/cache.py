"""On-disk caches that make sweeps cheap: embeddings and stage outputs, keyed by content.

Every entry is one small file written atomically (temp file + rename), so parallel jobs of
a sweep can share a cache, and an interrupted run keeps everything it finished. Each cache
lives in a folder named by its stage key, a component's `cache_key()` (code fingerprint,
every setting, model file contents: see `frontal_exp.fingerprint`), so changed code or
settings never read another's entries.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.embedders.base import Face
from frontal_exp.embedders.embedder import FaceEmbedding


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of decoded pixels (the same picture in JPEG or PNG has one key)."""
    h = hashlib.sha1(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name unique across threads, processes and machines (a cache on
    shared storage), then rename: readers see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or Ctrl-C leaves no stray temporary file
        raise


class EmbeddingCache:
    """Embeddings (or the fact that no face was found) per (image content, embedder)."""

    def __init__(self, root: str | os.PathLike, embedder_key: str) -> None:
        self.root = Path(root) / "embeddings" / short_hash(embedder_key)
        self.hits = 0
        self.misses = 0
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "KEY.txt", embedder_key.encode())

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> FaceEmbedding | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path) as z:
                if z["ok"]:
                    result = FaceEmbedding(z["embedding"], Face(z["bbox"], z["kps"], float(z["score"])))
                else:
                    result = FaceEmbedding(None, None, str(z["reason"]))
        except Exception:  # noqa: BLE001 - a damaged entry (e.g. a full disk) is recomputed
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return result

    def put(self, key: str, value: FaceEmbedding) -> None:
        import io

        buf = io.BytesIO()
        if value.ok:
            np.savez(buf, ok=True, embedding=value.embedding, bbox=value.face.bbox,
                     kps=value.face.kps, score=value.face.det_score)
        else:
            np.savez(buf, ok=False, reason=value.reason)
        atomic_write(self._path(key), buf.getvalue())


class ImageCache:
    """Stage outputs (frontalized / enhanced images) as lossless PNG, per (input, stage)."""

    def __init__(self, root: str | os.PathLike, stage_key: str) -> None:
        self.root = Path(root) / "images" / short_hash(stage_key)
        self.hits = 0
        self.misses = 0
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "KEY.txt", stage_key.encode())

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if image is None:
            self.misses += 1
            return None
        self.hits += 1
        return image

    def put(self, key: str, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", image)
        if ok:
            atomic_write(self.path(key), buf.tobytes())

    def put_failure(self, key: str, reason: str) -> None:
        """Remember that the stage failed on this input, so a re-run does not retry it."""
        atomic_write(self.path(key).with_suffix(".fail"), reason.encode())

    def get_failure(self, key: str) -> str | None:
        path = self.path(key).with_suffix(".fail")
        return path.read_text() if path.is_file() else None
