"""Typographic generator: resize/crop against hand-computed PIL crops, determinism, wrong-word choice,
fitting, and the write -> read-back round trip in the RTA-100 naming scheme."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from sae_clip_plugin.data import (
    LabelledImageDataset,
    TypographicConfig,
    TypographicGenerator,
    load_font,
    load_typographic_folder,
    make_typographic_dataset,
    prepare_image,
    write_typographic_set,
)

CLASSES = ["cat", "dog", "fire truck"]
FAST = TypographicConfig(fonts=("default",), seed=7)


def _noise(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def base(tmp_path):
    sizes = [(300, 200), (200, 300), (224, 224), (448, 448), (250, 260), (230, 500)]
    sources = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / "src" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        _noise(w, h, i).save(path)
        sources.append(str(path))
    labels = [0, 1, 2, 0, 1, 2]
    return LabelledImageDataset(sources, labels, labels, CLASSES, CLASSES, name="src")


def _arr(im):
    return np.asarray(im, dtype=np.int16)


def test_prepare_image_is_resize_then_centre_crop():
    wide, tall = _noise(300, 200, 1), _noise(200, 300, 2)
    # shorter side 200 -> 224: 300 -> 336 wide, crop left = (336 - 224) / 2 = 56
    expect = wide.resize((336, 224), Image.BICUBIC).crop((56, 0, 280, 224))
    assert np.array_equal(_arr(prepare_image(wide)), _arr(expect))
    expect = tall.resize((224, 336), Image.BICUBIC).crop((0, 56, 224, 280))
    assert np.array_equal(_arr(prepare_image(tall)), _arr(expect))
    square = _noise(448, 448, 3)
    assert np.array_equal(_arr(prepare_image(square)), _arr(square.resize((224, 224), Image.BICUBIC)))
    assert prepare_image(square, 64).size == (64, 64)


def test_plans_are_deterministic_and_order_free():
    a, b = TypographicGenerator(CLASSES, FAST), TypographicGenerator(CLASSES, FAST)
    forward = [a.plan(i, i % 3) for i in range(12)]
    backward = [b.plan(i, i % 3) for i in reversed(range(12))][::-1]
    assert forward == backward
    other = TypographicGenerator(CLASSES, TypographicConfig(fonts=("default",), seed=8))
    assert [other.plan(i, i % 3) for i in range(12)] != forward
    img = _noise(300, 200, 5)
    att1, clean1, p1 = a.attack(img, 1, 4)
    att2, _, p2 = b.attack(img, 1, 4)
    assert p1 == p2 and np.array_equal(_arr(att1), _arr(att2))
    assert np.array_equal(_arr(clean1), _arr(prepare_image(img)))


def test_written_word_is_another_class_and_fits():
    gen = TypographicGenerator(CLASSES, FAST)
    seen = {0: set(), 1: set(), 2: set()}
    for i in range(60):
        label = i % 3
        p = gen.plan(i, label)
        assert p.word != CLASSES[label] and p.word == CLASSES[p.text_label]
        assert p.text_label == gen.choose_word(i, label)
        seen[label].add(p.word)
        # the whole text box lies inside the image
        left, top, right, bottom = load_font(p.font, p.font_size).getbbox(p.word, stroke_width=p.stroke_width)
        x, y = p.xy
        assert x + left >= 0 and y + top >= 0 and x + right <= 224 and y + bottom <= 224
        # the size is fitted: width within the configured 30-90% of the image (+-2 px rounding)
        # unless the height cap (40% of the image) bound first
        width = load_font(p.font, p.font_size).getbbox(p.word)
        w, h = width[2] - width[0], width[3] - width[1]
        assert w <= 0.9 * 224 + 2
        assert w >= 0.3 * 224 - 2 or h >= 0.4 * 224 - p.font_size * 0.1
        assert 0 <= p.stroke_width <= round(0.08 * p.font_size)
    assert all(len(words) == 2 for words in seen.values())  # both wrong classes get drawn
    with pytest.raises(ValueError, match="two distinct"):
        TypographicGenerator(["cat", "cat"], FAST)


def test_attack_changes_only_pixels_near_the_text():
    gen = TypographicGenerator(CLASSES, FAST)
    attacked, clean, p = gen.attack(Image.new("RGB", (224, 224), (128, 128, 128)), 0, 3)
    diff = np.abs(_arr(attacked) - _arr(clean)).sum(-1) > 0
    assert diff.any()
    ys, xs = np.nonzero(diff)
    left, top, right, bottom = load_font(p.font, p.font_size).getbbox(p.word, stroke_width=p.stroke_width)
    assert xs.min() >= p.xy[0] + left - 1 and xs.max() <= p.xy[0] + right + 1
    assert ys.min() >= p.xy[1] + top - 1 and ys.max() <= p.xy[1] + bottom + 1


def test_fonts_user_and_system(tmp_path):
    ttf = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    if not os.path.isfile(ttf):
        pytest.skip("DejaVuSans.ttf not installed")
    gen = TypographicGenerator(CLASSES, TypographicConfig(fonts=("default", ttf), seed=1))
    assert {gen.plan(i, 0).font for i in range(20)} == {"default", ttf}
    auto = TypographicGenerator(CLASSES, TypographicConfig(seed=1))
    assert auto.fonts[0] == "default" and ttf in auto.fonts
    bad = tmp_path / "broken.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(ValueError, match=r"broken\.ttf"):
        TypographicGenerator(CLASSES, TypographicConfig(fonts=(str(bad),)))


def test_dataset_attacked_then_clean_twins(base):
    ds = make_typographic_dataset(base, FAST)
    assert len(ds) == 12 and ds.classnames == CLASSES
    assert ds.groups.tolist() == [1] * 6 + [0] * 6 and ds.labels.tolist() == [0, 1, 2, 0, 1, 2] * 2
    assert ds.extras["pair_id"] == list(range(6)) * 2 and ds.extras["text_label"][6:] == [-1] * 6
    for i in range(6):
        assert ds.extras["text"][i] not in ("", CLASSES[ds.labels[i]])
        attacked, label, group = ds[i]
        clean, label2, group2 = ds[i + 6]
        assert attacked.size == clean.size == (224, 224) and (label, group, group2) == (label2, 1, 0)
        assert np.array_equal(_arr(clean), _arr(prepare_image(base.load_image(i))))  # the clean twin
        assert not np.array_equal(_arr(attacked), _arr(clean))
    copy = pickle.loads(pickle.dumps(ds))  # DataLoader workers receive the dataset pickled
    assert np.array_equal(_arr(copy[2][0]), _arr(ds[2][0]))
    assert len(make_typographic_dataset(base, FAST, include_clean=False)) == 6
    by_text = make_typographic_dataset(base, FAST, group_by="text")
    assert (
        by_text.groups.tolist()[:6] == ds.extras["text_label"][:6] and by_text.groups.tolist()[6:] == [3] * 6
    )
    pairs = make_typographic_dataset([(base.sources[0], 1)], FAST, classnames=["a", "b"])
    assert pairs.extras["text"] == ["a", ""]


def test_write_and_read_back(base, tmp_path):
    out = tmp_path / "typo"
    write_typographic_set(base, out, FAST, progress=False)
    manifest = json.loads((out / "typographic_manifest.json").read_text())
    assert (
        manifest["classnames"] == CLASSES and manifest["n_images"] == 6 and manifest["fonts"] == ["default"]
    )
    attacked_files = sorted(p.name for p in (out / "attacked").iterdir())
    assert attacked_files[0].startswith("label=cat_text=") and attacked_files[0].endswith("_id=00000.png")
    assert not [p for p in out.rglob(".tmp-*")]

    ds = load_typographic_folder(out)  # recursive because of the manifest
    assert len(ds) == 12 and ds.classnames == CLASSES
    mem = make_typographic_dataset(base, FAST)
    by_key = {(ds.extras["pair_id"][j], int(ds.groups[j])): j for j in range(len(ds))}
    for i in range(12):
        j = by_key[(f"{mem.extras['pair_id'][i]:05d}", int(mem.groups[i]))]
        assert int(ds.labels[j]) == int(mem.labels[i]) and ds.extras["text"][j] == mem.extras["text"][i]
        assert np.array_equal(_arr(ds[j][0]), _arr(mem[i][0]))  # PNG keeps the pixels exactly


def test_write_resumes_and_refuses_other_settings(base, tmp_path):
    out = tmp_path / "typo"
    write_typographic_set(base, out, FAST, progress=False)
    files = sorted((out / "attacked").iterdir())
    victim, keep = files[2], files[3]
    before = victim.read_bytes()
    victim.unlink()
    os.utime(keep, (1, 1))
    write_typographic_set(base, out, FAST, progress=False)
    assert victim.read_bytes() == before  # recreated identically
    assert keep.stat().st_mtime == 1  # finished files are skipped
    other = TypographicConfig(fonts=("default",), seed=8)
    with pytest.raises(ValueError, match="config differ"):
        write_typographic_set(base, out, other, progress=False)
    write_typographic_set(base, out, other, overwrite=True, progress=False)
    assert json.loads((out / "typographic_manifest.json").read_text())["config"]["seed"] == 8
    assert len(list((out / "attacked").iterdir())) == 6
    with pytest.raises(ValueError, match="rename the class"):
        write_typographic_set(
            [(base.sources[0], 0)], tmp_path / "x", FAST, classnames=["a/b", "c"], progress=False
        )
