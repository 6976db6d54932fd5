"""Waterbirds loader on a 10-image fixture with the real metadata.csv columns."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from sae_clip_plugin.data import load_waterbirds

COLUMNS = ["img_id", "img_filename", "y", "split", "place", "place_filename"]
# (y, split, place); group = 2y + place
ROWS = [
    (0, 0, 0), (0, 0, 1), (1, 0, 1), (1, 0, 0),
    (0, 1, 0), (1, 1, 1),
    (0, 2, 0), (0, 2, 0), (1, 2, 1), (1, 2, 0),
]  # fmt: skip


def make_waterbirds(base, rows=ROWS, columns=COLUMNS):
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i, (y, split, place) in enumerate(rows):
            folder = "001.Black_footed_Albatross" if y else "002.Laysan_Albatross"
            rel = f"{folder}/Bird_{i:04d}.jpg"
            (base / folder).mkdir(exist_ok=True)
            Image.new("RGB", (9, 7), (0, 20 * i, 0)).save(base / rel)
            record = {"img_id": i + 1, "img_filename": rel, "y": y, "split": split, "place": place,
                      "place_filename": f"/b/bamboo_forest/{i:08d}.jpg"}  # fmt: skip
            w.writerow([record[c] for c in columns])
    return base


def test_test_split_labels_and_groups(tmp_path):
    ds = load_waterbirds(make_waterbirds(tmp_path / "waterbird_complete95_forest2water2"), split="test")
    assert ds.classnames == ["landbird", "waterbird"]
    assert ds.group_names == [
        "landbird on land",
        "landbird on water",
        "waterbird on land",
        "waterbird on water",
    ]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.groups.tolist() == [0, 0, 3, 2]
    assert ds.extras["place"] == [0, 0, 1, 0]
    assert ds.group_counts() == {
        "landbird on land": 2,
        "landbird on water": 0,
        "waterbird on land": 1,
        "waterbird on water": 1,
    }
    image, label, group = ds[2]  # row 8
    assert image.size == (9, 7) and abs(image.getpixel((3, 3))[1] - 160) <= 4 and (label, group) == (1, 3)
    assert ds.class_prompts() == ["a photo of a landbird.", "a photo of a waterbird."]


def test_splits_parent_folder_and_balancing(tmp_path):
    make_waterbirds(tmp_path / "waterbird_complete95_forest2water2")
    # the parent folder works when it holds exactly one dataset folder
    assert [len(load_waterbirds(tmp_path, split=s)) for s in ("train", "val", "test", "all")] == [4, 2, 4, 10]
    train = load_waterbirds(tmp_path, split=0, balanced=True)
    assert train.group_counts() == dict.fromkeys(train.group_names, 1)
    with pytest.raises(ValueError, match="no samples"):
        load_waterbirds(tmp_path, split="test", balanced=True)  # landbird on water is empty in test


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv"):
        load_waterbirds(tmp_path)
    make_waterbirds(tmp_path / "a", columns=["img_id", "img_filename", "y", "split"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['place'\]"):
        load_waterbirds(tmp_path / "a")
    base = make_waterbirds(tmp_path / "b", rows=[(0, 0, 0), (2, 0, 0)])
    with pytest.raises(ValueError, match="line 3: column 'y' must be one of"):
        load_waterbirds(base, split="all")
    base = make_waterbirds(tmp_path / "c")
    with pytest.raises(ValueError, match="unknown Waterbirds split"):
        load_waterbirds(base, split="holdout")
    (base / "002.Laysan_Albatross" / "Bird_0006.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="Bird_0006"):
        load_waterbirds(base, split="test")
