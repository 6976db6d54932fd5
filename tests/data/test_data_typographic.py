"""RTA-100 / PAINT name parsing and folder loaders on fixture folders in the real layouts."""

from __future__ import annotations

import pytest
from PIL import Image

from sae_clip_plugin.data import (
    format_typographic_name,
    load_paint_typographic,
    load_rta100,
    load_typographic_folder,
    parse_typographic_name,
)


@pytest.mark.parametrize(
    ("name", "label", "text", "pair_id", "attacked"),
    [
        ("label=dog_text=cat.jpg", "dog", "cat", "", True),
        ("label=coffee_mug_text=fire truck.png", "coffee_mug", "fire truck", "", True),
        ("label=st. bernard_text=ipod.JPEG", "st. bernard", "ipod", "", True),
        ("label=dog_text=dog.jpg", "dog", "dog", "", False),
        ("label=dog_text=cat_id=00012.png", "dog", "cat", "00012", True),
        ("label=great white shark_id=7.png", "great white shark", "", "7", False),
        ("label=dog_text=cat", "dog", "cat", "", True),
    ],
)
def test_parse_names(name, label, text, pair_id, attacked):
    parsed = parse_typographic_name(name)
    assert (parsed.label, parsed.text, parsed.pair_id, parsed.attacked) == (label, text, pair_id, attacked)


@pytest.mark.parametrize(
    "name", ["dog_text=cat.jpg", "IMG_0001.jpg", "label=_text=cat.jpg", "text=cat_label=dog.png"]
)
def test_malformed_names_raise(name):
    with pytest.raises(ValueError, match="label=<true class>_text=<written word>"):
        parse_typographic_name(name)


def test_format_round_trip_and_refusals():
    for label, text, pid in [("dog", "cat", None), ("coffee_mug", "fire truck", "0003"), ("a b", "", 5)]:
        name = format_typographic_name(label, text, pid, ext="jpg")
        parsed = parse_typographic_name(name)
        assert (parsed.label, parsed.text, parsed.pair_id) == (label, text, "" if pid is None else str(pid))
    assert format_typographic_name("dog", "cat") == "label=dog_text=cat.png"
    for bad in ("a/b", "x_text=y", ".hidden"):
        with pytest.raises(ValueError, match="rename the class"):
            format_typographic_name(bad, "cat")


def _fill(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", (5, 4), (i, 2 * i, 3 * i)).save(folder / n)


RTA_FILES = [
    "label=dog_text=cat.jpg",
    "label=cat_text=dog.png",
    "label=coffee mug_text=fire truck.jpg",
    "label=fire truck_text=dog.jpeg",
    "label=dog_text=dog.png",
]


def test_rta100_layout(tmp_path):
    _fill(tmp_path / "ours" / "data", RTA_FILES)
    (tmp_path / "ours" / "data" / "README.txt").write_text("ignored")
    ds = load_rta100(tmp_path)
    # sorted union of true labels and written words
    assert ds.classnames == ["cat", "coffee mug", "dog", "fire truck"]
    # files are sorted by name: cat, coffee mug, dog(cat), dog(dog), fire truck
    assert ds.extras["file"] == sorted(RTA_FILES)
    assert ds.labels.tolist() == [0, 1, 2, 2, 3]
    assert ds.extras["text"] == ["dog", "fire truck", "cat", "dog", "dog"]
    assert ds.extras["text_label"] == [2, 3, 0, 2, 2]
    assert ds.group_names == ["clean", "attacked"] and ds.groups.tolist() == [1, 1, 1, 0, 1]
    assert ds.class_prompts()[1] == "a photo of a coffee mug."
    image, label, group = ds[2]
    assert image.mode == "RGB" and image.size == (5, 4) and (label, group) == (2, 1)
    by_text = load_rta100(tmp_path, group_by="text")
    assert by_text.group_names == ["cat", "coffee mug", "dog", "fire truck", "(no text)"]
    assert by_text.groups.tolist() == [2, 3, 0, 2, 2]
    fixed = load_rta100(tmp_path, classnames=["fire truck", "dog", "cat", "coffee mug", "zebra"])
    assert fixed.labels.tolist() == [2, 3, 1, 1, 0]


def test_paint_layout_and_direct_folder(tmp_path):
    folder = tmp_path / "typographic_real_data_from_PAINT" / "typographic_attacks"
    _fill(folder, ["label=apple_text=ipod.jpg", "label=ipod_text=apple.jpg"])
    ds = load_paint_typographic(tmp_path)
    assert (
        ds.classnames == ["apple", "ipod"]
        and ds.labels.tolist() == [0, 1]
        and ds.extras["text_label"] == [1, 0]
    )
    assert load_paint_typographic(folder).labels.tolist() == [0, 1]  # the image folder itself works too
    assert len(load_typographic_folder(folder)) == 2


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_typographic_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_typographic_folder(tmp_path / "empty")
    _fill(tmp_path / "bad", ["label=dog_text=cat.jpg", "photo_001.jpg"])
    with pytest.raises(ValueError, match=r"photo_001\.jpg"):
        load_typographic_folder(tmp_path / "bad")
    _fill(tmp_path / "ok", ["label=dog_text=cat.jpg"])
    with pytest.raises(ValueError, match="not in classnames"):
        load_typographic_folder(tmp_path / "ok", classnames=["dog"])
    with pytest.raises(ValueError, match="group_by"):
        load_typographic_folder(tmp_path / "ok", group_by="word")
