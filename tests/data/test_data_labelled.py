"""LabelledImageDataset and the ImageFolder loader on tiny PNG folders, against hand-computed counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sae_clip_plugin.data import LabelledImageDataset, load_image_folder


def _write(path, value, mode="RGB", size=(6, 5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    # groups: 0 -> 4 samples, 1 -> 2 samples, 2 -> 3 samples
    groups = [0, 0, 1, 0, 2, 2, 1, 0, 2]
    labels = [0, 1, 1, 0, 1, 0, 1, 1, 0]
    sources = [
        _write(tmp_path / f"{i}.png", 10 * i, mode="L" if i == 0 else "RGB") for i in range(len(groups))
    ]
    return LabelledImageDataset(
        sources,
        labels,
        groups,
        ["cat", "dog"],
        ["g0", "g1", "g2"],
        extras={"idx": list(range(len(groups)))},
        name="tiny",
    )


def test_items_are_rgb_images_with_labels_and_groups(tiny):
    image, label, group = tiny[0]
    assert image.mode == "RGB" and image.size == (6, 5)  # saved as greyscale, converted on load
    assert image.getpixel((0, 0)) == (0, 0, 0)
    image, label, group = tiny[4]
    assert image.getpixel((2, 2)) == (40, 215, 7)
    assert (label, group) == (1, 2)
    assert tiny[-1][1:] == (0, 2)
    with pytest.raises(IndexError):
        tiny[9]


def test_transform_is_applied():
    ds = LabelledImageDataset(
        [Image.new("RGB", (3, 2), (1, 2, 3))], [0], [0], ["a"], ["g"], transform=np.asarray
    )
    arr = ds[0][0]
    assert arr.shape == (2, 3, 3) and tuple(arr[0, 0]) == (1, 2, 3)
    assert isinstance(ds.with_transform(None)[0][0], Image.Image)


def test_counts_and_prompts(tiny):
    assert tiny.group_counts() == {"g0": 4, "g1": 2, "g2": 3}
    assert tiny.class_counts() == {"cat": 4, "dog": 5}
    assert tiny.class_prompts() == ["a photo of a cat.", "a photo of a dog."]
    assert tiny.class_prompts("{}!") == ["cat!", "dog!"]
    info = tiny.sample_info(6)
    assert (info["classname"], info["group_name"], info["idx"]) == ("dog", "g1", 6)


def test_balanced_subset_to_smallest_group(tiny):
    bal = tiny.balanced_subset(seed=3)
    assert bal.group_counts() == {"g0": 2, "g1": 2, "g2": 2}
    kept = bal.extras["idx"]
    assert kept == sorted(kept)
    assert {2, 6} <= set(kept)  # g1 has exactly two members: both kept
    # labels/groups/extras stay aligned with the parent dataset
    for j, i in enumerate(kept):
        assert int(bal.labels[j]) == int(tiny.labels[i]) and int(bal.groups[j]) == int(tiny.groups[i])
        assert bal.sources[j] == tiny.sources[i]
    assert bal.extras["idx"] == tiny.balanced_subset(seed=3).extras["idx"]  # deterministic
    draws = {tuple(tiny.balanced_subset(seed=s).extras["idx"]) for s in range(8)}
    assert len(draws) > 1  # the seed matters


def test_balanced_subset_explicit_size_and_errors(tiny):
    one = tiny.balanced_subset(n_per_group=1, seed=0)
    assert len(one) == 3 and one.group_counts() == {"g0": 1, "g1": 1, "g2": 1}
    with pytest.raises(ValueError, match="n_per_group <= 2"):
        tiny.balanced_subset(n_per_group=3)
    only_two = tiny.subset([0, 1, 2, 3])  # g2 now empty
    with pytest.raises(ValueError, match="g2"):
        only_two.balanced_subset()
    assert only_two.balanced_subset(groups=[0, 1]).group_counts() == {"g0": 1, "g1": 1, "g2": 0}


def test_subset_and_validation(tiny):
    sub = tiny.subset(torch.tensor([8, 1]))
    assert sub.labels.tolist() == [0, 1] and sub.groups.tolist() == [2, 0] and sub.extras["idx"] == [8, 1]
    assert len(tiny.subset([])) == 0
    with pytest.raises(ValueError, match="same length"):
        LabelledImageDataset(["a", "b"], [0], [0, 0], ["x"], ["g"])
    with pytest.raises(ValueError, match="labels must lie"):
        LabelledImageDataset(["a"], [2], [0], ["x", "y"], ["g"])
    with pytest.raises(ValueError, match="groups must lie"):
        LabelledImageDataset(["a"], [0], [1], ["x"], ["g"])


def test_missing_file_error_names_the_file(tmp_path):
    ds = LabelledImageDataset([str(tmp_path / "gone.jpg")], [0], [0], ["x"], ["g"])
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg"):
        ds[0]


def test_image_folder(tmp_path):
    _write(tmp_path / "n01_gold_fish" / "b.png", 1)
    _write(tmp_path / "n01_gold_fish" / "a.jpg", 2)
    _write(tmp_path / "n02_shark" / "c.png", 3)
    (tmp_path / "n02_shark" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.classnames == ["n01 gold fish", "n02 shark"]
    assert [s.rsplit("/", 1)[-1] for s in ds.sources] == ["a.jpg", "b.png", "c.png"]
    assert ds.labels.tolist() == [0, 0, 1] and ds.groups.tolist() == [0, 0, 1]
    named = load_image_folder(tmp_path, classnames=["goldfish", "shark"])
    assert named.class_prompts() == ["a photo of a goldfish.", "a photo of a shark."]
    with pytest.raises(ValueError, match="one name per sorted folder"):
        load_image_folder(tmp_path, classnames=["goldfish"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path / "empty")
