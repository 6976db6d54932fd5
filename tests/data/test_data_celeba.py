"""CelebA loader on a 16-image fixture in the official on-disk format (and the Kaggle CSV variant)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from sae_clip_plugin.data import celeba_group_prompts, load_celeba, read_celeba_attributes

ATTRS = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]
MALE, BLOND = ATTRS.index("Male"), ATTRS.index("Blond_Hair")
# image number -> (partition, Male, Blond_Hair); images 1-6 train, 7-14 val, 15-16 test
TABLE = {
    1: (0, 1, 1), 2: (0, -1, 1), 3: (0, -1, -1), 4: (0, 1, -1), 5: (0, -1, 1), 6: (0, 1, -1),
    7: (1, 1, 1), 8: (1, 1, -1), 9: (1, 1, -1), 10: (1, -1, 1), 11: (1, -1, 1),
    12: (1, -1, -1), 13: (1, -1, -1), 14: (1, -1, -1),
    15: (2, 1, 1), 16: (2, -1, -1),
}  # fmt: skip


def _rows():
    rng = np.random.default_rng(0)
    for k, (part, male, blond) in TABLE.items():
        values = rng.choice([-1, 1], size=len(ATTRS))
        values[MALE], values[BLOND] = male, blond
        yield f"{k:06d}.jpg", part, values


def _image(path, k):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 10), (10 * k, 0, 0)).save(path, quality=95)


def make_celeba(base):
    """The official layout: img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt."""
    base.mkdir(parents=True, exist_ok=True)
    lines = [str(len(TABLE)), " ".join(ATTRS) + " "]
    parts = []
    for name, part, values in _rows():
        lines.append(name + " " + " ".join(f"{v:2d}" for v in values))
        parts.append(f"{name} {part}")
        _image(base / "img_align_celeba" / name, int(name[:6]))
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return base


def make_celeba_kaggle(base):
    """The Kaggle layout: CSV files and images nested in img_align_celeba/img_align_celeba/."""
    base.mkdir(parents=True, exist_ok=True)
    with (
        open(base / "list_attr_celeba.csv", "w", newline="") as fa,
        open(base / "list_eval_partition.csv", "w", newline="") as fp,
    ):
        wa, wp = csv.writer(fa), csv.writer(fp)
        wa.writerow(["image_id", *ATTRS])
        wp.writerow(["image_id", "partition"])
        for name, part, values in _rows():
            wa.writerow([name, *values.tolist()])
            wp.writerow([name, part])
            _image(base / "img_align_celeba" / "img_align_celeba" / name, int(name[:6]))
    return base


def test_attribute_file_parsing(tmp_path):
    base = make_celeba(tmp_path / "c")
    files, names, matrix = read_celeba_attributes(base / "list_attr_celeba.txt")
    assert names == ATTRS and files[0] == "000001.jpg" and matrix.shape == (16, 40)
    assert matrix[6, MALE] == 1 and matrix[6, BLOND] == 1 and matrix[15, MALE] == -1


def test_val_split_labels_and_groups(tmp_path):
    ds = load_celeba(make_celeba(tmp_path / "c"), split="val")
    assert ds.extras["file"] == [f"{k:06d}.jpg" for k in range(7, 15)]
    assert ds.classnames == ["woman", "man"]
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert ds.extras["spurious"] == [1, 0, 0, 1, 1, 0, 0, 0]
    assert ds.group_names == ["woman, non-blond", "woman, blond", "man, non-blond", "man, blond"]
    assert ds.groups.tolist() == [3, 2, 2, 1, 1, 0, 0, 0]
    assert ds.group_counts() == {
        "woman, non-blond": 3,
        "woman, blond": 2,
        "man, non-blond": 2,
        "man, blond": 1,
    }
    image, label, group = ds[0]  # 000007.jpg, drawn with red = 70
    assert image.mode == "RGB" and image.size == (8, 10)
    assert abs(image.getpixel((4, 4))[0] - 70) <= 4 and (label, group) == (1, 3)


def test_splits_and_balancing(tmp_path):
    base = make_celeba(tmp_path / "c")
    assert [len(load_celeba(base, split=s)) for s in ("train", "val", "test", "all")] == [6, 8, 2, 16]
    assert len(load_celeba(base, split=1)) == 8
    bal = load_celeba(base, split="val", balanced=True, seed=1)
    assert len(bal) == 4 and set(bal.group_counts().values()) == {1}
    assert "000007.jpg" in bal.extras["file"]  # the only blond man of val is always kept
    with pytest.raises(ValueError, match="n_per_group <= 1"):
        load_celeba(base, split="val", balanced=True, n_per_group=2)


def test_other_attributes_layouts_and_prompts(tmp_path):
    base = make_celeba(tmp_path / "torchvision_root" / "celeba")
    swapped = load_celeba(tmp_path / "torchvision_root", split="val", target="blond_hair", spurious="male")
    assert swapped.info["target"] == "Blond_Hair" and swapped.classnames == ["non-blond", "blond"]
    assert swapped.labels.tolist() == [1, 0, 0, 1, 1, 0, 0, 0]
    generic = load_celeba(base, split="val", target="Wearing_Hat")
    assert generic.classnames == ["not wearing hat", "wearing hat"]
    ds = load_celeba(base, split="val")
    assert celeba_group_prompts(ds) == [
        "a photo of a non-blond woman.",
        "a photo of a blond woman.",
        "a photo of a non-blond man.",
        "a photo of a blond man.",
    ]
    assert celeba_group_prompts(ds, spurious_words=("", "blond"))[2] == "a photo of a man."


def test_kaggle_layout_matches_official(tmp_path):
    official = load_celeba(make_celeba(tmp_path / "a"), split="val")
    kaggle = load_celeba(make_celeba_kaggle(tmp_path / "b"), split="val")
    assert kaggle.extras["file"] == official.extras["file"]
    assert kaggle.labels.tolist() == official.labels.tolist()
    assert kaggle.groups.tolist() == official.groups.tolist()
    assert kaggle[0][0].size == (8, 10)


def test_errors_name_the_fix(tmp_path):
    base = make_celeba(tmp_path / "c")
    with pytest.raises(KeyError, match="Blond_Hair"):
        load_celeba(base, spurious="Blonde_Hair")  # close match suggested
    with pytest.raises(ValueError, match="two different"):
        load_celeba(base, target="Male", spurious="Male")
    with pytest.raises(ValueError, match="unknown CelebA split"):
        load_celeba(base, split="dev")
    with pytest.raises(FileNotFoundError, match=r"list_attr_celeba\.txt"):
        load_celeba(tmp_path / "nowhere")
    (base / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition"):
        load_celeba(base, split="val")
    assert len(load_celeba(base, split="all")) == 16
    text = (base / "list_attr_celeba.txt").read_text().splitlines()
    (base / "list_attr_celeba.txt").write_text("\n".join([text[0], *text[1:-1]]) + "\n")  # drop a row
    with pytest.raises(ValueError, match="truncated"):
        load_celeba(base, split="all")
    (base / "list_attr_celeba.txt").write_text("\n".join([text[0], text[1], text[2][:-3], *text[3:]]) + "\n")
    with pytest.raises(ValueError, match="malformed"):
        load_celeba(base, split="all")


@pytest.mark.parametrize(("value", "message"), [("1e5", "Male='1e5'"), ("nan", "Male='nan'"), ("x", "Male='x'"),
                                                ("300", r"must be \+1/-1"), ("1 -1", "has 3 values")])  # fmt: skip
def test_bad_attribute_values_name_the_row(tmp_path, value, message):
    from sae_clip_plugin.data.celeba import read_celeba_attributes

    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(f"2\nMale Blond_Hair\na.jpg 1 -1\nb.jpg {value} 1\n")
    with pytest.raises(ValueError, match=message) as info:
        read_celeba_attributes(path)
    assert "list_attr_celeba.txt" in str(info.value)
