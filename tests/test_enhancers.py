"""Light corrections, GT-rule framing, omit-bg crop, sharp variants and enhancer chains."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from frontal_exp.embedders.align import norm_crop
from frontal_exp.enhancers.base import Enhancer
from frontal_exp.enhancers.chain import EnhancerChain
from frontal_exp.enhancers.corrections import (
    LightCorrections,
    equalize_sharpness,
    match_color,
    sharpness,
    trim_box,
)
from frontal_exp.enhancers.match_crop import MatchCrop, template_with_margin
from frontal_exp.enhancers.simple import Sharpen
from frontal_exp.errors import MissingWeightsError

CHEAP_OPTIONS = ("sharp_strong", "sharp_mild", "corrections", "match_crop", "omit_bg_crop",
                 "sharp_corrections", "corrections_match_crop")


@pytest.fixture(scope="module")
def hanks(package_photos) -> np.ndarray:
    from frontal_exp.images import read_image

    return read_image(package_photos["tom_hanks"])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def match_crop() -> MatchCrop:
    return MatchCrop(output_size=224, margin=0.25)


# -- corrections ---------------------------------------------------------------------------


def test_trim_removes_constant_padding_only(astronaut):
    padded = cv2.copyMakeBorder(astronaut, 13, 7, 21, 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    assert trim_box(padded) == (13, 13 + 512, 21, 21 + 512)
    # no common corner colour: nothing to trim
    assert trim_box(astronaut) == (0, 512, 0, 512)
    out = LightCorrections(color=False, sharpen=False)(padded)
    np.testing.assert_array_equal(out, astronaut)


def test_trim_is_capped_and_keeps_flat_images():
    flat = np.zeros((50, 40, 3), np.uint8)
    top, bottom, left, right = trim_box(flat)
    assert bottom - top >= 50 * 0.2 and right - left >= 40 * 0.2


def test_color_match_moves_lab_stats_to_reference(astronaut, hanks):
    out = match_color(astronaut, hanks)
    lab = cv2.cvtColor(out, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)
    ref = cv2.cvtColor(hanks, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)
    src = cv2.cvtColor(astronaut, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float)
    assert np.abs(lab.mean(0) - ref.mean(0)).max() < 3 < np.abs(src.mean(0) - ref.mean(0)).max()
    # strength 0 is the identity (up to the Lab round trip)
    same = match_color(astronaut, hanks, strength=0.0)
    assert np.abs(same.astype(int) - astronaut).max() <= 1


def test_color_match_leaves_padding_alone(astronaut, hanks):
    padded = cv2.copyMakeBorder(astronaut, 0, 0, 40, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    padded[:, :40] = 0
    out = LightCorrections(trim=False, sharpen=False)(padded, hanks)
    assert out.shape == padded.shape
    assert not out[:, :40].any()


def test_sharpness_equalisation_only_sharpens_and_is_capped(hanks):
    blurred = cv2.GaussianBlur(hanks, (0, 0), 2.0)
    out = equalize_sharpness(blurred, hanks, max_amount=0.5)
    assert sharpness(blurred) < sharpness(out) < sharpness(hanks)
    # a sharper image than the reference is left as it is
    np.testing.assert_array_equal(equalize_sharpness(hanks, blurred), hanks)


def test_corrections_steps_switch_and_need_reference(hanks):
    # a plain grey background is not padding: only black (or any_color) borders are trimmed
    np.testing.assert_array_equal(LightCorrections()(hanks), hanks)
    assert trim_box(hanks, any_color=True)[3] < 112
    blurred = cv2.GaussianBlur(hanks, (0, 0), 2.0)
    np.testing.assert_array_equal(LightCorrections()(blurred), blurred)  # no reference
    off = LightCorrections(trim=False, color=False, sharpen=False)
    np.testing.assert_array_equal(off(blurred, hanks), blurred)
    out = LightCorrections()(blurred, hanks)
    assert out.shape == hanks.shape and out.dtype == np.uint8


# -- match_crop ----------------------------------------------------------------------------


def test_template_with_margin_zero_is_the_gt_rule():
    from frontal_exp.embedders.align import ARCFACE_TEMPLATE_112

    np.testing.assert_allclose(template_with_margin(112, 0.0), ARCFACE_TEMPLATE_112)
    t = template_with_margin(224, 0.5)
    # the 112 box is half the crop, centred
    np.testing.assert_allclose(t, ARCFACE_TEMPLATE_112 + 56)


def test_match_crop_frames_like_gt(match_crop, hanks, astronaut):
    from frontal_exp.enhancers.match_crop import detect_faces, largest

    out = match_crop(astronaut, hanks)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # the template box (224 / 1.5 px, centred), resized to 112, is the GT alignment
    face = largest(detect_faces(match_crop.detector(), astronaut))
    gt = norm_crop(astronaut, face.kps, 112)
    lo, hi = round(224 / 6), round(224 - 224 / 6)
    inner = cv2.resize(out[lo:hi, lo:hi], (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(inner.astype(float) - gt).mean() < 8
    # re-detecting in the output finds the eyes on the scaled template
    again = largest(detect_faces(match_crop.detector(), out))
    assert np.abs(again.kps[:2] - template_with_margin(224, 0.25)[:2]).max() < 6
    # a tight, pre-aligned crop is found too (padded retry) and framed the same way
    assert match_crop(hanks).shape == (224, 224, 3)


def test_match_crop_no_face_returns_input(match_crop):
    flat = np.full((100, 90, 3), 60, np.uint8)
    before = match_crop.no_face_count
    assert match_crop(flat) is flat
    assert match_crop.no_face_count == before + 1


# -- omit_bg crop, sharp variants ----------------------------------------------------------


def test_omit_bg_crop_is_tight_around_the_face(astronaut):
    from frontal_exp.enhancers.omit_bg import OmitBackgroundCrop

    out = OmitBackgroundCrop(crop_to="face", margin=0.1)(astronaut)
    h, w = out.shape[:2]
    # the astronaut's face is about 130 px wide in a 512 px photo
    assert 80 < w < 260 and 80 < h < 300
    person = OmitBackgroundCrop(crop_to="person", margin=0.0)(astronaut)
    assert person.shape[0] * person.shape[1] > h * w


def test_sharp_strong_is_stronger(make_cfg, hanks):
    from frontal_exp.config import instantiate_checked

    strong = instantiate_checked(make_cfg("enhancer=sharp_strong").enhancer, "enhancer")
    base = instantiate_checked(make_cfg("enhancer=sharp").enhancer, "enhancer")
    assert sharpness(strong(hanks)) > sharpness(base(hanks)) > sharpness(hanks)


# -- chains and configs --------------------------------------------------------------------


class _Add(Enhancer):
    name = "add"

    def __init__(self, value: int) -> None:
        self.value = value

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        assert reference is not None
        return image + np.uint8(self.value)


class _Double(_Add):
    name = "double"

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        return image * np.uint8(2)


def test_chain_applies_steps_in_order_with_the_reference():
    img = np.ones((4, 4, 3), np.uint8)
    chain = EnhancerChain([_Add(1), _Double(0)])
    assert chain.name == "add+double"
    assert int(chain(img, img)[0, 0, 0]) == 4  # (1 + 1) * 2, not 1 * 2 + 1
    assert [int(x[0, 0, 0]) for x in chain.enhance_batch([img, img * 3], [img, img])] == [4, 8]
    assert chain.cache_key() != EnhancerChain([_Double(0), _Add(1)]).cache_key()
    with pytest.raises(ValueError):
        EnhancerChain([])


def test_chain_builds_step_configs():
    from omegaconf import OmegaConf

    steps = OmegaConf.create([{"_target_": "frontal_exp.enhancers.simple.Sharpen", "amount": 0.5}])
    chain = EnhancerChain(list(steps), name="s")
    assert isinstance(chain.steps[0], Sharpen) and chain.steps[0].amount == 0.5
    assert chain.name == "s"


@pytest.mark.parametrize("option", CHEAP_OPTIONS)
def test_every_new_option_instantiates(make_cfg, option):
    from frontal_exp.config import instantiate_checked

    enh = instantiate_checked(make_cfg(f"enhancer={option}").enhancer, "enhancer")
    assert isinstance(enh, Enhancer)
    assert enh.cache_key()


def test_chain_config_runs_in_order(make_cfg, hanks):
    from frontal_exp.config import instantiate_checked

    chain = instantiate_checked(make_cfg("enhancer=sharp_corrections").enhancer, "enhancer")
    assert isinstance(chain, EnhancerChain) and chain.name == "sharp+corrections"
    assert isinstance(chain.steps[0], Sharpen) and chain.steps[1].sharpen is False
    blurred = cv2.GaussianBlur(hanks, (0, 0), 1.5)
    out = chain(blurred, hanks)
    assert out.shape == hanks.shape and out.dtype == np.uint8


@pytest.mark.parametrize("option", ["gfpgan", "gfpgan_v13", "gfpgan_face", "gfpgan_corrections"])
def test_gfpgan_options_without_weights_fail_clearly(make_cfg, tmp_path, option):
    from frontal_exp.config import instantiate_checked

    cfg = make_cfg(f"enhancer={option}", f"models_dir={tmp_path}")
    with pytest.raises(Exception) as err:
        instantiate_checked(cfg.enhancer, "enhancer")
    # Hydra wraps constructor errors; the cause must be ours, naming the file to get
    cause = err.value
    while not isinstance(cause, MissingWeightsError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, MissingWeightsError) or "GFPGANv1" in str(err.value)
    assert "python -m frontal_exp.weights download" in str(err.value)
