"""SCAM loader on a tiny in-memory `datasets.Dataset` with the hub dataset's columns, saved to disk."""

from __future__ import annotations

import pickle

import datasets
import huggingface_hub
import pytest
from PIL import Image

from sae_clip_plugin.data import load_scam

ROWS = [  # (type, object_label, attack_word)
    ("SCAM", "ball", "car"),
    ("SCAM", "chair", "zebra"),
    ("NoSCAM", "ball", "car"),
    ("SynthSCAM", "ball", "car"),
    ("NoSCAM", "chair", "zebra"),
]


@pytest.fixture(scope="module")
def scam():
    return datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (12, 10), (40 * i, 0, 0)) for i in range(len(ROWS))],
            "type": [r[0] for r in ROWS],
            "object_label": [r[1] for r in ROWS],
            "attack_word": [r[2] for r in ROWS],
            "postit_area_pct": [0.5, 1.0, 1.5, 2.0, 2.5],
            "id": [f"{r[0]}_img_{i:04d}" for i, r in enumerate(ROWS)],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "type": datasets.Value("string"),
                "object_label": datasets.Value("string"),
                "attack_word": datasets.Value("string"),
                "postit_area_pct": datasets.Value("float64"),
                "id": datasets.Value("string"),
            }
        ),
    )


def test_from_disk(scam, tmp_path):
    scam.save_to_disk(str(tmp_path / "scam"))
    ds = load_scam(tmp_path / "scam")
    assert ds.classnames == ["ball", "car", "chair", "zebra"]
    assert ds.labels.tolist() == [0, 2, 0, 0, 2]
    assert ds.extras["text_label"] == [1, 3, 1, 1, 3]
    assert ds.group_names == ["clean", "attacked"] and ds.groups.tolist() == [1, 1, 0, 1, 0]
    assert ds.extras["id"][3] == "SynthSCAM_img_0003" and ds.extras["postit_area_pct"][4] == 2.5
    image, label, group = ds[3]
    assert image.mode == "RGB" and image.size == (12, 10) and image.getpixel((1, 1)) == (120, 0, 0)
    assert (label, group) == (0, 1)
    assert ds.class_prompts()[2] == "a photo of a chair."
    assert pickle.loads(pickle.dumps(ds))[3][0].getpixel((1, 1)) == (120, 0, 0)


def test_dataset_object_dict_types_and_grouping(scam):
    by_type = load_scam(scam, group_by="type")
    assert by_type.group_names == ["NoSCAM", "SCAM", "SynthSCAM"] and by_type.groups.tolist() == [
        1,
        1,
        0,
        2,
        0,
    ]
    by_text = load_scam(datasets.DatasetDict({"train": scam}), group_by="text")
    assert by_text.groups.tolist() == [1, 3, 4, 1, 4]  # NoSCAM -> "(no text)" = index 4
    real = load_scam(scam, types=["SCAM", "NoSCAM"])
    assert len(real) == 4 and real.extras["type"] == ["SCAM", "SCAM", "NoSCAM", "NoSCAM"]
    assert real[3][0].getpixel((0, 0)) == (160, 0, 0)  # row 4 of the source
    sub = real.balanced_subset(seed=0)
    assert sub.group_counts() == {"clean": 2, "attacked": 2}
    assert load_scam(scam, types="SynthSCAM").labels.tolist() == [0]


def test_errors_name_the_fix(scam, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="lacks column"):
        load_scam(scam.remove_columns(["attack_word"]))
    with pytest.raises(ValueError, match="unknown SCAM type"):
        load_scam(scam, types=["scam"])
    with pytest.raises(KeyError, match="splits"):
        load_scam(datasets.DatasetDict({"test": scam}))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="save_to_disk"):
        load_scam("no-such-owner/no-such-scam-copy")
