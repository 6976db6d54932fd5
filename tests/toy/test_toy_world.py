"""The generator: deterministic, planted co-occurrences at the specified rates, balanced evaluation sets."""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import pytest
import torch

from sae_clip_plugin.toy import (
    SHAPES,
    WorldConfig,
    background_spurious_set,
    colour_spurious_set,
    render,
    train_dataset,
    train_sample,
    typographic_set,
)
from sae_clip_plugin.toy.model import toy_preprocess
from sae_clip_plugin.toy.train import images_to_tensor


def test_same_seed_same_pixels_and_captions():
    for i in (0, 7, 123):
        (a, ca), (b, cb) = train_sample(5, i), train_sample(5, i)
        assert a == b and ca == cb
        assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
    other = [train_sample(6, i) for i in range(20)]
    assert other != [train_sample(5, i) for i in range(20)]


def test_eval_sets_are_deterministic():
    a, b = typographic_set(6, seed=3), typographic_set(6, seed=3)
    assert a.samples == b.samples
    assert np.array_equal(np.asarray(a[3][0]), np.asarray(b[3][0]))
    assert background_spurious_set(3, seed=1).samples == background_spurious_set(3, seed=1).samples


def test_render_is_64px_rgb_and_shows_the_shape_colour():
    s, _ = train_sample(0, 1)
    img = render(s)
    assert img.size == (64, 64) and img.mode == "RGB"
    s = next(
        train_sample(0, i)[0]
        for i in range(100)
        if train_sample(0, i)[0].shape and not train_sample(0, i)[0].word
    )
    from sae_clip_plugin.toy import COLOURS

    centre = np.asarray(render(s))[s.y, s.x]
    assert np.abs(centre.astype(int) - COLOURS[s.colour]).max() <= 2


def test_captions_name_what_is_drawn():
    from sae_clip_plugin.toy.words import CLASS_WORDS

    kinds = collections.Counter()
    for i in range(600):
        s, caption = train_sample(1, i)
        assert (s.shape is not None and s.shape in caption) or (s.word is not None and s.word in caption)
        if s.shape is None:  # text-only images are captioned by their text (teaches reading)
            assert s.word in caption
        if s.word in CLASS_WORDS:  # a written class name is always named: it matters to the caption
            assert s.word in caption, caption
        elif (
            s.word is not None and s.shape is not None
        ):  # a distractor beside a shape: the caption ignores it
            assert s.word not in caption and s.shape in caption, caption
        kinds[(s.shape is not None, s.word in CLASS_WORDS, s.word is not None)] += 1
    assert (
        len(kinds) == 5
    )  # shape only; text only (class name / distractor); shape with class name / distractor


def test_training_cooccurrence_rates():
    cfg = WorldConfig()
    counts = collections.defaultdict(collections.Counter)
    for i in range(6000):
        s, _ = train_sample(0, i)
        if s.shape is not None:
            counts[s.shape][("bg", s.background)] += 1
            counts[s.shape][("colour", s.colour)] += 1
    for shape, bg in cfg.background_spurious.items():
        n = sum(v for (k, _), v in counts[shape].items() if k == "bg")
        rate = counts[shape][("bg", bg)] / n
        # the configured rate (98%), within 4 standard errors of sampling noise (~750 images per shape)
        assert abs(rate - cfg.background_spurious_rate) <= 0.02, (shape, rate, n)
    for shape, colour in cfg.colour_spurious.items():
        n = sum(v for (k, _), v in counts[shape].items() if k == "colour")
        rate = counts[shape][("colour", colour)] / n
        assert abs(rate - cfg.spurious_rate) <= 0.03, (shape, rate, n)  # 95%, 4 standard errors
    # uncorrelated shapes see every background about equally often
    free = [s for s in SHAPES if s not in cfg.background_spurious]
    for shape in free:
        n = sum(v for (k, _), v in counts[shape].items() if k == "bg")
        assert max(counts[shape][("bg", b)] / n for b in ("plain", "land", "water")) < 0.45


def test_mixture_has_word_only_and_written_shapes():
    kinds = collections.Counter()
    for i in range(2000):
        s, _ = train_sample(2, i)
        kinds[(s.shape is not None, s.word is not None)] += 1
    cfg = WorldConfig()
    assert abs(kinds[(False, True)] / 2000 - cfg.p_word) < 0.04
    assert abs(kinds[(True, False)] / 2000 - cfg.p_shape) < 0.04
    assert kinds[(False, False)] == 0


@pytest.mark.parametrize("make", [background_spurious_set, colour_spurious_set])
def test_spurious_sets_are_balanced_over_groups(make):
    ds = make(5, seed=0)
    attr = "background" if make is background_spurious_set else "colour"
    groups = collections.Counter(
        (ds.classnames[m["label"]], m[attr]) for m in (ds.meta(i) for i in range(len(ds)))
    )
    assert len(groups) == 4 and set(groups.values()) == {5}
    for i in range(len(ds)):
        m = ds.meta(i)
        assert m["shape"] == ds.classnames[m["label"]] and m["word"] is None
        assert m["group"] == f"{m['shape']}/{m[attr]}"
    assert sum(m["majority"] for m in ds.labels) == 10


def test_typographic_twins_differ_only_by_a_wrong_word():
    ds = typographic_set(12, seed=0)
    assert len(ds) == 24
    for k in range(12):
        (clean, mc), (attacked, ma) = ds[2 * k], ds[2 * k + 1]
        assert (
            mc["variant"] == "clean" and ma["variant"] == "attacked" and mc["pair_id"] == ma["pair_id"] == k
        )
        assert mc["word"] is None and ma["word"] is not None and ma["word"] != ma["shape"]
        assert SHAPES[ma["word_label"]] == ma["word"] and SHAPES[ma["label"]] == ma["shape"] == mc["shape"]
        diff = np.any(np.asarray(clean) != np.asarray(attacked), axis=-1)
        ys, xs = np.nonzero(diff)
        assert diff.any() and xs.min() >= ma["word_x"] - 1 and ys.min() >= ma["word_y"] - 1


def test_training_tensor_matches_open_clip_preprocess():
    ds = train_dataset(4, seed=0)
    images = [img for img, _ in ds.items()]
    ref = torch.stack([toy_preprocess()(img) for img in images])
    torch.testing.assert_close(images_to_tensor(images), ref, atol=1e-5, rtol=0)


def test_shape_box_holds_every_pixel_of_the_shape():
    from sae_clip_plugin.toy.world import ToySample, shape_box

    for i, shape in enumerate(SHAPES):
        sample = ToySample(
            "plain", texture_seed=i, shape=shape, colour="red", x=30, y=33, size=34, rotation=9.0
        )
        drawn = np.any(np.asarray(render(sample)) != np.asarray(render(replace(sample, shape=None))), axis=-1)
        ys, xs = np.nonzero(drawn)
        left, top, right, bottom = shape_box(sample)
        assert left <= xs.min() and xs.max() <= right and top <= ys.min() and ys.max() <= bottom
        assert right - left <= 34 + 2 * 2 and xs.max() - xs.min() >= 0.75 * 34  # tight: not just the canvas
    assert shape_box(ToySample("plain", 0)) is None


def _covers(sample) -> bool:
    """Does the written word's box meet the shape's box?"""
    from sae_clip_plugin.toy.world import shape_box, word_box

    left, top, right, bottom = shape_box(sample)
    w, h = word_box(sample.word, sample.word_size)
    x0, y0 = sample.word_x, sample.word_y
    return not (x0 + w < left or x0 > right or y0 + h < top or y0 > bottom)


def test_typographic_words_beside_the_shape_leave_it_uncovered():
    from sae_clip_plugin.toy.world import word_box

    ds = typographic_set(30, seed=4)
    for k in range(30):
        clean, attacked = ds.samples[2 * k], ds.samples[2 * k + 1]
        assert replace(attacked, word=None, word_x=0, word_y=0, word_size=14, word_ink="black") == clean
        w, h = word_box(attacked.word, attacked.word_size)
        assert not _covers(attacked), f"pair {k} covers the shape"
        assert attacked.word_x >= 0 and attacked.word_x + w <= 64
        assert attacked.word_y >= 0 and attacked.word_y + h <= 64
    # 'anywhere' places words as in training, often over the shape
    anywhere = typographic_set(30, seed=4, placement="anywhere")
    assert anywhere.samples[0] == ds.samples[0]  # the first clean image is drawn before any placement
    assert sum(_covers(anywhere.samples[2 * k + 1]) for k in range(30)) >= 10
    with pytest.raises(ValueError, match="placement must be one of"):
        typographic_set(2, placement="over")
