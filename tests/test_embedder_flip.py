"""`embedder.flip=true`: the embedding of the aligned crop averaged with its mirror's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from frontal_exp.app import CONFIG_DIR
from frontal_exp.embedders import FaceEmbedder
from frontal_exp.images import read_image
from frontal_exp.metrics.similarity import cosine


@pytest.fixture(scope="module")
def flip_embedder(embedder) -> FaceEmbedder:
    return FaceEmbedder(embedder.detector, embedder.recognizer, name=embedder.name, flip=True)


@pytest.fixture(scope="module")
def photos(package_photos) -> list[np.ndarray]:
    return [read_image(package_photos[n]) for n in ("astronaut", "grace_hopper")]


def test_flip_is_the_normalised_mean_of_crop_and_mirror(embedder, flip_embedder, photos):
    got = flip_embedder.embed_images(photos)
    for image, res in zip(photos, got, strict=True):
        # recomputed by hand: detect, align, embed the crop and its mirror one by one
        face = embedder.find_face(image)
        crop = embedder.align(image, face)
        plain = embedder.recognizer.embed([crop])[0]
        mirror = embedder.recognizer.embed([crop[:, ::-1].copy()])[0]
        expected = plain / np.linalg.norm(plain) + mirror / np.linalg.norm(mirror)
        expected /= np.linalg.norm(expected)
        assert res.ok
        assert np.linalg.norm(res.embedding) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(res.embedding, expected, atol=1e-5)
        # not the plain embedding: the mirror is a different image to the recognizer
        assert cosine(res.embedding, plain) < 0.9999
        np.testing.assert_allclose(res.face.kps, face.kps)


def test_a_mirrored_photo_gets_nearly_the_same_embedding(embedder, flip_embedder, photos):
    for image in photos:
        mirrored = cv2.flip(image, 1)
        plain = cosine(embedder.embed(image).embedding, embedder.embed(mirrored).embedding)
        flipped = cosine(flip_embedder.embed(image).embedding, flip_embedder.embed(mirrored).embedding)
        assert flipped > 0.97
        assert flipped > plain


def test_flip_is_in_the_cache_key_and_every_embedder_option(embedder, flip_embedder, make_cfg):
    assert embedder.cache_key() != flip_embedder.cache_key()
    options = sorted(p.stem for p in (Path(CONFIG_DIR) / "embedder").glob("*.yaml"))
    assert len(options) >= 5
    for option in options:
        cfg = make_cfg(f"embedder={option}", "embedder.flip=true")
        assert cfg.embedder.flip is True
        assert make_cfg(f"embedder={option}").embedder.flip is False
