"""The evaluation pipeline on real faces: pairing, caching, resuming, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from frontal_exp.data.base import Item
from frontal_exp.enhancers.simple import NoEnhancer, Sharpen
from frontal_exp.evaluation import summarize
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.frontalizers.identity import IdentityFrontalizer
from frontal_exp.pipeline import EvaluationPipeline


def items_of(root: Path) -> list[Item]:
    items = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        gt = person / "frontal.png"
        for f in sorted(person.iterdir()):
            if f != gt:
                items.append(Item(f"{person.name}/{f.name}", person.name, f, gt))
    return items


def test_identity_model_has_net_gain_exactly_zero(identity_tree, embedder, tmp_path):
    pipe = EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), tmp_path / "cache")
    out = pipe.run(items_of(identity_tree))
    m = summarize(out.records, [], n_boot=100)
    assert m["n"] == m["n_items"] == 6
    assert m["net_gain"] == 0.0 and m["win_rate"] == 0.0 and m["tie_rate"] == 1.0
    # a flipped or rescaled photo of the same face is still close to it
    assert m["angle_to_gt"] > 0.6
    # the GT of each identity was embedded once, not once per item
    assert len(out.gt_embeddings) == 3


class CountingFrontalizer(Frontalizer):
    """Mirrors the image (a stand-in model whose output differs from its input)."""

    name = "mirror"
    # the call counter and the simulated Ctrl-C are test harness, not settings of the model
    runtime_attrs = ("calls", "_fail_after")

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self._fail_after = fail_after

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._fail_after is not None and self.calls >= self._fail_after:
            raise KeyboardInterrupt  # simulates Ctrl-C in the middle of a run
        self.calls += 1
        return cv2.flip(image, 1)


def test_second_run_is_served_from_cache(identity_tree, embedder, tmp_path):
    items = items_of(identity_tree)
    first_model = CountingFrontalizer()
    first = EvaluationPipeline(embedder, first_model, Sharpen(), tmp_path / "cache", batch_size=4).run(items)
    assert first_model.calls == 6
    second_model = CountingFrontalizer()
    pipe = EvaluationPipeline(embedder, second_model, Sharpen(), tmp_path / "cache", batch_size=4)
    second = pipe.run(items)
    assert second_model.calls == 0
    assert second.cache_stats["embedding_cache_misses"] == 0
    assert second.cache_stats["stage_cache_hits"] == 6 and second.cache_stats["frontalized_computed"] == 0
    assert [r.frontal_to_gt for r in first.records] == [r.frontal_to_gt for r in second.records]
    # another enhancer on the same model reuses the frontalized images, re-embeds only its outputs
    third_model = CountingFrontalizer()
    third = EvaluationPipeline(embedder, third_model, NoEnhancer(), tmp_path / "cache", batch_size=4)
    third.run(items)
    assert third_model.calls == 0
    assert third.embeddings.misses == 6  # the 6 new enhanced outputs; GT and angles are hits


def test_interrupted_run_resumes_without_redoing_work(identity_tree, embedder, tmp_path):
    items = items_of(identity_tree)
    crashing = CountingFrontalizer(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        EvaluationPipeline(embedder, crashing, NoEnhancer(), tmp_path / "cache", batch_size=2).run(items)
    assert crashing.calls == 2
    resumed = CountingFrontalizer()
    out = EvaluationPipeline(embedder, resumed, NoEnhancer(), tmp_path / "cache", batch_size=2).run(items)
    assert resumed.calls == 4  # only the items not finished before the interruption
    assert all(r.paired for r in out.records)


def make_bad_inputs(root: Path, good_face: Path) -> dict[str, Path]:
    """Every kind of bad input next to one good face."""
    d = root / "bad"
    d.mkdir(parents=True)
    face = cv2.imread(str(good_face))
    paths = {}
    data = good_face.read_bytes()
    paths["truncated"] = d / "truncated.jpg"
    cv2.imwrite(str(paths["truncated"]), face)
    paths["truncated"].write_bytes(paths["truncated"].read_bytes()[:200])
    paths["not_image"] = d / "notes.png"
    paths["not_image"].write_text("this is not an image")
    paths["empty"] = d / "empty.jpg"
    paths["empty"].write_bytes(b"")
    paths["gray"] = d / "gray.png"
    cv2.imwrite(str(paths["gray"]), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    paths["rgba"] = d / "rgba.png"
    cv2.imwrite(str(paths["rgba"]), cv2.cvtColor(face, cv2.COLOR_BGR2BGRA))
    paths["16bit"] = d / "deep.png"
    cv2.imwrite(str(paths["16bit"]), face.astype(np.uint16) * 257)
    paths["huge"] = d / "huge.jpg"
    cv2.imwrite(str(paths["huge"]), cv2.resize(face, None, fx=20, fy=20))
    paths["no_face"] = d / "wall.png"
    cv2.imwrite(str(paths["no_face"]), np.full((200, 200, 3), (90, 180, 200), np.uint8))
    paths["good"] = d / "good.png"
    Path(paths["good"]).write_bytes(data)
    return paths


class FailsOnGray(Frontalizer):
    """Fails on one specific input, like a model that finds no mesh."""

    name = "fails_on_gray"

    def __call__(self, image):
        from frontal_exp.errors import FrontalizationError

        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
            raise FrontalizationError("no face mesh found")
        return image


def test_bad_inputs_are_counted_and_the_run_completes(identity_tree, embedder, tmp_path):
    bad = make_bad_inputs(tmp_path, identity_tree / "astronaut" / "frontal.png")
    gt = identity_tree / "astronaut" / "frontal.png"
    items = [Item(k, "astronaut", p, gt) for k, p in bad.items()]
    items.append(Item("bad_gt", "nobody", bad["good"], bad["truncated"]))
    items.append(Item("no_face_gt", "wall", bad["good"], bad["no_face"]))
    out = EvaluationPipeline(embedder, FailsOnGray(), NoEnhancer(), tmp_path / "cache", batch_size=3).run(items)
    status = {r.item_id: r.status for r in out.records}
    assert status["truncated"] == "unreadable_angle"
    assert status["not_image"] == "unreadable_angle"
    assert status["empty"] == "unreadable_angle"
    assert status["gray"] == "frontalize_failed"
    assert status["rgba"] == "ok" and status["16bit"] == "ok" and status["huge"] == "ok"
    assert status["no_face"] == "no_face_angle"
    assert status["good"] == "ok"
    assert status["bad_gt"] == "unreadable_gt"
    assert status["no_face_gt"] == "no_face_gt"
    m = summarize(out.records, [], n_boot=50)
    assert m["n"] == 4 and m["unreadable_angle"] == 3 and m["frontalize_failed"] == 1
    assert m["no_face_angle"] == 1 and m["no_face_gt"] == 1 and m["unreadable_gt"] == 1
    # conversions keep the picture: the 16-bit and RGBA copies embed like the original
    sims = {r.item_id: r.angle_to_gt for r in out.records}
    assert sims["16bit"] > 0.95 and sims["rgba"] > 0.95 and sims["huge"] > 0.8


def test_a_broken_enhancer_is_recorded_per_item(identity_tree, embedder, tmp_path):
    from frontal_exp.enhancers.base import Enhancer

    class Picky(Enhancer):
        name = "picky"

        def __call__(self, image, reference=None):
            if image.shape[0] < 150:
                raise ValueError("too small")
            return image

    items = items_of(identity_tree)
    out = EvaluationPipeline(embedder, IdentityFrontalizer(), Picky(), tmp_path / "cache").run(items)
    failed = [r for r in out.records if r.status == "enhance_failed"]
    assert {r.item_id.split("/")[1] for r in failed} == {"small.jpg"} and len(failed) == 3
    assert sum(r.paired for r in out.records) == 3


def test_copying_a_tree_elsewhere_hits_the_same_cache(identity_tree, embedder, tmp_path):
    """Cache keys are image content, not paths."""
    EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), tmp_path / "cache").run(items_of(identity_tree))
    copy = tmp_path / "copy"
    shutil.copytree(identity_tree, copy)
    pipe = EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), tmp_path / "cache")
    pipe.run(items_of(copy))
    assert pipe.embeddings.misses == 0


class Flaky(Frontalizer):
    """Raises an unexpected error (a bug, an out-of-memory) on chosen calls."""

    name = "flaky"
    # the simulated failures are test harness, not settings: both runs are one model
    runtime_attrs = ("_fail_on", "_calls")

    def __init__(self, fail_on: set[int]) -> None:
        self._fail_on = fail_on
        self._calls = 0

    def __call__(self, image):
        self._calls += 1
        if self._calls in self._fail_on:
            raise RuntimeError("CUDA out of memory")
        return image


def test_unexpected_errors_are_recorded_but_retried_next_run(identity_tree, embedder, tmp_path):
    items = items_of(identity_tree)
    pipe = EvaluationPipeline(embedder, Flaky({2}), NoEnhancer(), tmp_path / "cache", batch_size=3)
    out = pipe.run(items)
    failed = [r for r in out.records if r.status == "frontalize_failed"]
    assert len(failed) == 1 and out.cache_stats["unexpected_errors"] == 1
    # not remembered as a failure: the next run tries that item again and succeeds
    again = EvaluationPipeline(embedder, Flaky(set()), NoEnhancer(), tmp_path / "cache", batch_size=3)
    out2 = again.run(items)
    assert all(r.paired for r in out2.records) and again.counts["frontalized_computed"] == 1


def test_a_run_where_everything_breaks_fails_loudly(identity_tree, embedder, tmp_path):
    pipe = EvaluationPipeline(embedder, Flaky(set(range(1, 100))), NoEnhancer(), tmp_path / "cache")
    with pytest.raises(RuntimeError, match="every item failed.*CUDA out of memory"):
        pipe.run(items_of(identity_tree))


def test_damaged_cache_entries_are_recomputed(identity_tree, embedder, tmp_path):
    items = items_of(identity_tree)
    first = EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), tmp_path / "cache").run(items)
    entries = sorted((tmp_path / "cache" / "embeddings").rglob("*.npz"))
    entries[0].write_bytes(b"")
    entries[1].write_bytes(b"not a zip file at all")
    pipe = EvaluationPipeline(embedder, IdentityFrontalizer(), NoEnhancer(), tmp_path / "cache")
    second = pipe.run(items)
    assert pipe.embeddings.misses == 2
    assert [r.angle_to_gt for r in first.records] == [r.angle_to_gt for r in second.records]


def test_without_cache_nothing_is_reused_but_frontals_are_readable(identity_tree, embedder, tmp_path):
    items = items_of(identity_tree)
    model = CountingFrontalizer()
    pipe = EvaluationPipeline(embedder, model, NoEnhancer(), tmp_path / "cache", use_cache=False)
    out = pipe.run(items)
    pipe2 = EvaluationPipeline(embedder, model, NoEnhancer(), tmp_path / "cache", use_cache=False)
    pipe2.run(items)
    assert model.calls == 12 and not (tmp_path / "cache").exists()
    assert out.frontal_cache.get(out.records[0].frontal_key) is not None  # figures can read it


def test_status_is_the_first_problem_in_pipeline_order():
    from frontal_exp.pipeline import ItemRecord

    rec = ItemRecord("i", "p", "a", "g")
    rec.add_problem("no_face_frontal")
    rec.add_problem("no_face_gt")
    assert rec.status == "no_face_gt" and rec.problems == "no_face_gt,no_face_frontal"


class NeedsAFace(FailsOnGray):
    """Like FailsOnGray, and also fails where there is no face at all (a blank wall), as a
    model that must find a face mesh does: such an item has two problems."""

    name = "needs_a_face"

    def __call__(self, image):
        from frontal_exp.errors import FrontalizationError

        if image.reshape(-1, image.shape[-1]).std(axis=0).max() < 1.0:
            raise FrontalizationError("no face mesh found")
        return super().__call__(image)


def test_each_item_counts_under_one_reason(identity_tree, embedder, tmp_path):
    """The per-reason counts add up to `not_paired`: an item is counted once, by its status
    (its first problem in pipeline order), even when it has several problems."""
    from frontal_exp.protocols.frontalization import PROBLEM_COUNTS

    bad = make_bad_inputs(tmp_path, identity_tree / "astronaut" / "frontal.png")
    gt = identity_tree / "astronaut" / "frontal.png"
    items = [Item(k, "astronaut", bad[k], gt) for k in ("truncated", "gray", "no_face", "good")]
    items.append(Item("no_face_gt", "wall", bad["good"], bad["no_face"]))
    out = EvaluationPipeline(embedder, NeedsAFace(), NoEnhancer(), tmp_path / "cache", batch_size=2).run(items)
    rec = {r.item_id: r for r in out.records}
    # the blank wall: no face in the angled photo, and so no frontalized one; counted as
    # no_face_angle, as it is with a model that returns it unchanged
    assert rec["no_face"].problems == "no_face_angle,frontalize_failed"
    assert rec["no_face"].status == "no_face_angle"
    m = summarize(out.records, [], n_boot=20)
    assert m["not_paired"] == 4 and m["n"] == 1
    assert sum(m[p] for p in PROBLEM_COUNTS) == m["not_paired"]
    assert (m["unreadable_angle"], m["frontalize_failed"], m["no_face_angle"], m["no_face_gt"]) == (1, 1, 1, 1)
