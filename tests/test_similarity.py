"""Cosine similarity: one `cosine()` everywhere, unit-norm embeddings, scores in [-1, 1] even
when a recognizer (or an old cache entry) hands back unnormalised vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from frontal_exp.embedders import FaceEmbedder, Recognizer
from frontal_exp.enhancers.simple import NoEnhancer
from frontal_exp.frontalizers.identity import IdentityFrontalizer
from frontal_exp.images import read_image
from frontal_exp.metrics.similarity import cosine
from frontal_exp.pipeline import EvaluationPipeline
from tests.test_pipeline import items_of


def test_cosine_of_vectors_and_matrices():
    assert cosine(np.array([3.0, 4.0]), np.array([4.0, 3.0])) == pytest.approx(24 / 25)
    assert cosine(np.array([3.0, 4.0]), np.array([-6.0, -8.0])) == pytest.approx(-1.0)
    assert cosine(np.array([0.0, 0.0]), np.array([1.0, 2.0])) == 0.0  # no direction
    rows = np.array([[3.0, 4.0], [0.0, 2.0], [-5.0, 0.0]])
    sims = cosine(rows, np.array([[10.0, 0.0], [0.0, 0.1]]))
    np.testing.assert_allclose(sims, [[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine(rows, np.array([0.0, 3.0])), [[0.8], [1.0], [0.0]])
    with pytest.raises(ValueError, match="different sizes"):
        cosine(np.ones(3), np.ones(4))


class Scaled(Recognizer):
    """A recognizer returning another's embeddings times a factor (unnormalised features)."""

    def __init__(self, inner: Recognizer, factor: float) -> None:
        self.inner = inner
        self.factor = factor
        self.name = f"{inner.name}_x{factor:g}"
        self.input_size = inner.input_size

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.inner.embed(crops) * self.factor


def test_unnormalised_recognizer_gives_the_same_similarities(identity_tree, embedder, tmp_path):
    scaled = FaceEmbedder(embedder.detector, Scaled(embedder.recognizer, 7.0), name="scaled")
    face = scaled.embed(read_image(identity_tree / "astronaut" / "frontal.png"))
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    items = items_of(identity_tree)
    runs = [EvaluationPipeline(e, IdentityFrontalizer(), NoEnhancer(), tmp_path / name).run(items).records
            for e, name in ((embedder, "plain"), (scaled, "scaled"))]
    for plain, big in zip(*runs, strict=True):
        for attr in ("angle_to_gt", "frontal_to_gt", "frontal_to_angle"):
            assert -1.0 <= getattr(big, attr) <= 1.0
            assert getattr(big, attr) == pytest.approx(getattr(plain, attr), abs=1e-5)


def test_protocol_pair_scores_are_cosines_of_unnormalised_embeddings():
    """Embeddings from elsewhere (an old cache entry, a custom recognizer) are compared by
    their direction only, in the robustness and verification protocols alike."""
    from frontal_exp.protocols.robustness import pair_scores as robustness_scores
    from frontal_exp.protocols.verification import VerificationPair
    from frontal_exp.protocols.verification import pair_scores as verification_scores

    emb = {"a": np.array([3.0, 4.0]), "b": np.array([8.0, 6.0]), "c": np.array([0.0, -0.5]), "none": None}
    pairs = [("a", "b"), ("a", "c"), ("b", "none")]
    scores, missing = robustness_scores(pairs, emb)
    np.testing.assert_allclose(scores, [24 / 25, -0.8])
    assert missing == 1
    ver = verification_scores([VerificationPair(a, b, True, 0) for a, b in pairs], emb)
    np.testing.assert_allclose(ver[:2], [24 / 25, -0.8])
    assert math.isnan(ver[2])

