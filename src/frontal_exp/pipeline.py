"""The evaluation pipeline: angled image -> frontalized -> enhanced -> embedding -> scores.

One `ItemRecord` per dataset item flows through the stages; every failure is kept on the
record with its reason, so nothing is dropped silently. Work is cached by content at each
stage (see `frontal_exp.cache`), so a sweep over enhancers re-runs only what changed and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from frontal_exp.cache import EmbeddingCache, ImageCache, atomic_write, pixel_hash
from frontal_exp.data.base import Item
from frontal_exp.embedders.embedder import FaceEmbedder, FaceEmbedding
from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import BadImageError, FrontalExpError, ModelFileError, RunInterrupted
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.images import read_image
from frontal_exp.metrics.similarity import cosine, fused_template
from frontal_exp.quiet import progress_bar

log = logging.getLogger(__name__)

#: item status values, in the order the pipeline meets them (read, embed GT and angle, then
#: frontalize, enhance, embed the frontal): an item's status is its first problem, so a photo
#: without a face counts as `no_face_angle` whichever model runs after it
STATUSES = (
    "ok",
    "unreadable_angle",
    "unreadable_gt",
    "no_face_gt",
    "no_face_angle",
    "frontalize_failed",
    "enhance_failed",
    "no_face_frontal",
)


@dataclass
class ItemRecord:
    """Everything measured for one item. Similarities are None where a face is missing."""

    item_id: str
    identity: str
    angle_path: str
    gt_path: str
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    angle_face: bool = False
    frontal_face: bool = False
    gt_face: bool = False
    angle_to_gt: float | None = None
    frontal_to_gt: float | None = None
    frontal_to_angle: float | None = None
    #: cos(normalize(e_angle + w e_frontal), e_gt), w = the pipeline's `fusion_weight`
    fused_to_gt: float | None = None
    angle_det_score: float | None = None
    frontal_det_score: float | None = None
    #: "ok", or the first reason this item cannot be paired (see STATUSES)
    status: str = "ok"
    #: every problem found, comma-separated (an item can lack two faces)
    problems: str = ""
    #: why the frontalizer returned the photo unchanged instead of frontalizing it (its fit
    #: was not trusted, see the model's `fallback_reason`); "" when it did not
    frontal_fallback: str = ""
    #: content key of the enhanced frontal image in the image cache
    frontal_key: str | None = None
    angle_embedding: np.ndarray | None = field(default=None, repr=False)
    frontal_embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def paired(self) -> bool:
        return self.status == "ok"

    def add_problem(self, problem: str) -> None:
        """Record a problem; `status` is the first problem in STATUSES order."""
        order = {s: k for k, s in enumerate(STATUSES)}
        found = sorted({*filter(None, self.problems.split(",")), problem}, key=lambda p: order.get(p, len(order)))
        self.problems = ",".join(found)
        self.status = found[0]

    def row(self) -> dict:
        """The record as a flat table row (no embeddings)."""
        d = asdict(self)
        d.pop("angle_embedding")
        d.pop("frontal_embedding")
        return d


@dataclass
class PipelineOutput:
    records: list[ItemRecord]
    #: GT embedding per GT image path (None where no face / unreadable)
    gt_embeddings: dict[str, np.ndarray | None]
    cache_stats: dict[str, int]
    frontal_cache: ImageCache
    device_info: dict[str, str] = field(default_factory=dict)


class EvaluationPipeline:
    """Runs items through frontalizer, enhancer and embedder in batches, with caching."""

    def __init__(
        self,
        embedder: FaceEmbedder,
        frontalizer: Frontalizer,
        enhancer: Enhancer,
        cache_dir: str | Path,
        batch_size: int = 32,
        io_workers: int = 2,
        use_cache: bool = True,
        fusion_weight: float = 0.5,
    ) -> None:
        self.embedder = embedder
        self.fusion_weight = fusion_weight
        self.frontalizer = frontalizer
        self.enhancer = enhancer
        self.batch_size = max(1, batch_size)
        self.io_workers = max(1, io_workers)
        if not use_cache:
            # a private, throw-away cache: nothing is reused, but the stages (and the figures
            # that read frontal images back) work the same way
            tmp = tempfile.mkdtemp(prefix="frontal_exp_nocache_")
            weakref.finalize(self, shutil.rmtree, tmp, True)
            cache_dir = tmp
        self.embeddings = EmbeddingCache(cache_dir, embedder.cache_key())
        # keys hold the code fingerprint, every setting and the model files of each stage
        # (see frontal_exp.fingerprint): changed code or settings never read stale outputs
        model_key = frontalizer.cache_key()
        self.frontal_images = ImageCache(cache_dir, model_key)
        self.enhanced_images = ImageCache(cache_dir, f"{model_key}|{enhancer.cache_key()}")
        self.counts = {"frontalized_computed": 0, "enhanced_computed": 0, "unexpected_errors": 0}
        self._first_unexpected: str | None = None

    # -- embedding with cache ---------------------------------------------------------
    def embed_many(self, images: list[np.ndarray], keys: list[str] | None = None) -> list[FaceEmbedding]:
        """Embeddings for images, from the cache where possible; misses run as one batch."""
        keys = keys or [pixel_hash(im) for im in images]
        out: list[FaceEmbedding | None] = [self.embeddings.get(k) for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        if todo:
            fresh = self.embedder.embed_images([images[i] for i in todo])
            for i, r in zip(todo, fresh, strict=True):
                self.embeddings.put(keys[i], r)
                out[i] = r
        return out  # type: ignore[return-value]

    # -- image loading, overlapped with compute ---------------------------------------
    def _read(self, path: Path) -> np.ndarray | BadImageError:
        try:
            return read_image(path)
        except BadImageError as exc:
            return exc

    def _prefetch(self, chunks: list[list[Path]]) -> Iterator[list[np.ndarray | BadImageError]]:
        """Yield decoded chunks while the next chunk decodes in background threads."""
        if not chunks:
            return
        with ThreadPoolExecutor(self.io_workers) as pool:
            pending = [pool.submit(self._read, p) for p in chunks[0]]
            for nxt in [*chunks[1:], None]:
                current = [f.result() for f in pending]
                pending = [pool.submit(self._read, p) for p in nxt] if nxt is not None else []
                yield current

    def _chunks(self, seq: list, size: int) -> list[list]:
        return [seq[i : i + size] for i in range(0, len(seq), size)]

    # -- stages -----------------------------------------------------------------------
    def embed_gts(self, items: list[Item]) -> tuple[dict[str, np.ndarray | None], dict[str, str]]:
        """Embed each distinct GT image once; returns embeddings and failure reasons by path."""
        return self.embed_paths([str(it.gt_path) for it in items])

    def embed_paths(self, paths: list[str]) -> tuple[dict[str, np.ndarray | None], dict[str, str]]:
        """Embed each distinct image file once (cached); embeddings (None: no face or
        unreadable) and failure reasons ("unreadable: ..." or the embedder's) by path."""
        paths = sorted({str(p) for p in paths})
        embeddings: dict[str, np.ndarray | None] = {}
        reasons: dict[str, str] = {}
        chunks = self._chunks([Path(p) for p in paths], self.batch_size)
        batches = zip(chunks, self._prefetch(chunks), strict=True)
        for chunk, images in progress_bar(batches, "embed images", total=len(chunks), unit="batch"):
            good = [(str(p), im) for p, im in zip(chunk, images, strict=True) if not isinstance(im, Exception)]
            for p, im in zip(chunk, images, strict=True):
                if isinstance(im, Exception):
                    embeddings[str(p)] = None
                    reasons[str(p)] = f"unreadable: {im}"
            results = self.embed_many([im for _, im in good])
            for (p, _), r in zip(good, results, strict=True):
                embeddings[p] = r.embedding
                if not r.ok:
                    reasons[p] = r.reason
        return embeddings, reasons

    def run(self, items: list[Item], progress: bool = False) -> PipelineOutput:
        gt_emb, gt_reasons = self.embed_gts(items)
        records: list[ItemRecord] = []
        chunks = self._chunks(items, self.batch_size)
        iterator = zip(chunks, self._prefetch([[it.angle_path for it in c] for c in chunks]), strict=True)
        iterator = progress_bar(iterator, "items", total=len(chunks), unit="batch", enabled=progress)
        try:
            for chunk, images in iterator:
                records.extend(self._run_chunk(chunk, images, gt_emb, gt_reasons))
        except KeyboardInterrupt as exc:  # Ctrl-C: say how many items are done (and cached)
            raise RunInterrupted(len(records)) from exc
        attempted = sum(r.status != "unreadable_angle" for r in records)
        if attempted and self.counts["unexpected_errors"] >= attempted:
            # every item broke the same way: a bug or a broken device, not bad images
            raise RuntimeError(f"every item failed with an unexpected error; the first: {self._first_unexpected}")
        stats = {
            "embedding_cache_hits": self.embeddings.hits,
            "embedding_cache_misses": self.embeddings.misses,
            "stage_cache_hits": self.enhanced_images.hits,
            **self.counts,
        }
        if callable(getattr(self.frontalizer, "fallback_reason", None)):
            # photos the frontalizer returned unchanged because it did not trust its fit
            # (from the records, so a run served from the cache counts them too)
            stats["frontalizer_fallback"] = sum(bool(r.frontal_fallback) for r in records)
        for stage, component in (("frontalizer", self.frontalizer), ("enhancer", self.enhancer)):
            if isinstance(getattr(component, "no_face_count", None), int):
                # outputs a component passed through unchanged because it found no face
                stats[f"{stage}_no_face"] = component.no_face_count
        return PipelineOutput(records, gt_emb, stats, self.enhanced_images)

    def _failure(self, stage: str, key: str, exc: BaseException) -> str:
        """The reason recorded for a failed stage. Expected failures (a bad image, no face
        mesh) are remembered so a re-run skips them; anything else is logged, counted and
        retried next time. A model file that is missing or unusable stops the run: every
        item would fail the same way."""
        if isinstance(exc, ModelFileError):
            raise exc
        if isinstance(exc, FrontalExpError):
            reason = f"{stage}_failed: {type(exc).__name__}: {exc}"
            self.enhanced_images.put_failure(key, reason)
            return reason
        self.counts["unexpected_errors"] += 1
        reason = f"{stage}_failed: unexpected {type(exc).__name__}: {exc}"
        if self._first_unexpected is None:
            self._first_unexpected = reason
            log.warning("%s (not cached; retried on the next run)", reason, exc_info=exc)
        return reason

    def frontalize_enhance(self, images: list[np.ndarray]) -> list[tuple[np.ndarray | None, str]]:
        """Frontalized + enhanced image (or None and the failure reason) per image, cached."""
        return self._frontalize_enhance(images, [pixel_hash(im) for im in images])

    def _frontalize_enhance(
        self, angles: list[np.ndarray], keys: list[str]
    ) -> list[tuple[np.ndarray | None, str]]:
        """Enhanced frontal image (or None and the reason) per angled image, via the caches."""
        out: list[tuple[np.ndarray | None, str]] = [(None, "")] * len(angles)
        need_enhance: list[int] = []
        frontals: dict[int, np.ndarray] = {}
        need_frontal: list[int] = []
        for i, key in enumerate(keys):
            failure = self.enhanced_images.get_failure(key)
            cached = None if failure else self.enhanced_images.get(key)
            if failure:
                out[i] = (None, failure)
            elif cached is not None:
                out[i] = (cached, "")
            else:
                frontal = self.frontal_images.get(key)
                if frontal is not None:
                    frontals[i] = frontal
                    need_enhance.append(i)
                else:
                    need_frontal.append(i)
        if need_frontal:
            results = self.frontalizer.frontalize_batch([angles[i] for i in need_frontal])
            self.counts["frontalized_computed"] += len(need_frontal)
            fallback_reason = getattr(self.frontalizer, "fallback_reason", None)
            for i, res in zip(need_frontal, results, strict=True):
                if isinstance(res, Exception):
                    out[i] = (None, self._failure("frontalize", keys[i], res))
                else:
                    reason = fallback_reason(keys[i]) if callable(fallback_reason) else ""
                    if reason:  # kept next to the cached output, so a re-run counts it too
                        atomic_write(self._fallback_path(keys[i]), reason.encode())
                    else:
                        self._fallback_path(keys[i]).unlink(missing_ok=True)
                    self.frontal_images.put(keys[i], res)
                    frontals[i] = res
                    need_enhance.append(i)
        if need_enhance:
            idx = sorted(need_enhance)
            try:
                enhanced = self.enhancer.enhance_batch([frontals[i] for i in idx], [angles[i] for i in idx])
            except ModelFileError:
                raise
            except Exception:  # noqa: BLE001 - fall back to one by one, to blame one image
                enhanced = []
                for i in idx:
                    try:
                        enhanced.append(self.enhancer(frontals[i], angles[i]))
                    except ModelFileError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - recorded per item
                        enhanced.append(exc)
            self.counts["enhanced_computed"] += len(idx)
            for i, res in zip(idx, enhanced, strict=True):
                if isinstance(res, Exception):
                    out[i] = (None, self._failure("enhance", keys[i], res))
                else:
                    self.enhanced_images.put(keys[i], res)
                    out[i] = (res, "")
        return out

    def _fallback_path(self, key: str) -> Path:
        return self.frontal_images.path(key).with_suffix(".fallback")

    def fallback_of(self, key: str) -> str:
        """Why the frontalizer returned the photo with pixel hash `key` unchanged ("" if it
        did not), as recorded when its output was computed."""
        path = self._fallback_path(key)
        return path.read_text() if path.is_file() else ""

    def _run_chunk(
        self,
        chunk: list[Item],
        images: list[np.ndarray | BadImageError],
        gt_emb: dict[str, np.ndarray | None],
        gt_reasons: dict[str, str],
    ) -> list[ItemRecord]:
        records = [
            ItemRecord(it.item_id, it.identity, str(it.angle_path), str(it.gt_path), it.yaw, it.pitch, it.roll)
            for it in chunk
        ]
        readable = [i for i, im in enumerate(images) if not isinstance(im, Exception)]
        for i, im in enumerate(images):
            if isinstance(im, Exception):
                records[i].add_problem("unreadable_angle")
        for rec in records:
            reason = gt_reasons.get(rec.gt_path, "")
            rec.gt_face = gt_emb.get(rec.gt_path) is not None
            if reason.startswith("unreadable"):
                rec.add_problem("unreadable_gt")
        angles = [images[i] for i in readable]
        keys = [pixel_hash(im) for im in angles]
        angle_results = self.embed_many(angles, keys)
        staged = self._frontalize_enhance(angles, keys)
        made = [j for j, (img, _) in enumerate(staged) if img is not None]
        frontal_results = dict(zip(made, self.embed_many([staged[j][0] for j in made]), strict=True))
        for j, i in enumerate(readable):
            rec = records[i]
            rec.frontal_key = keys[j]
            a = angle_results[j]
            rec.angle_face, rec.angle_embedding = a.ok, a.embedding
            rec.angle_det_score = a.face.det_score if a.ok else None
            if not a.ok:
                rec.add_problem("no_face_angle")
            img, reason = staged[j]
            if img is None:
                rec.add_problem(reason.split(":")[0])
            else:
                rec.frontal_fallback = self.fallback_of(keys[j])
                f = frontal_results[j]
                rec.frontal_face, rec.frontal_embedding = f.ok, f.embedding
                rec.frontal_det_score = f.face.det_score if f.ok else None
                if not f.ok:
                    rec.add_problem("no_face_frontal")
        for rec in records:
            g = gt_emb.get(rec.gt_path)
            if g is None and "unreadable_gt" not in rec.problems:
                rec.add_problem("no_face_gt")
            if g is not None and rec.angle_embedding is not None:
                rec.angle_to_gt = cosine(rec.angle_embedding, g)
            if g is not None and rec.frontal_embedding is not None:
                rec.frontal_to_gt = cosine(rec.frontal_embedding, g)
            if rec.angle_embedding is not None and rec.frontal_embedding is not None:
                rec.frontal_to_angle = cosine(rec.frontal_embedding, rec.angle_embedding)
                if g is not None:
                    fused = fused_template(rec.angle_embedding, rec.frontal_embedding, self.fusion_weight)
                    rec.fused_to_gt = cosine(fused, g)
        return records
