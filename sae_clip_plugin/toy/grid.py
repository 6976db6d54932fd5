"""PNG contact sheets of the toy world, so a person can look at what the model is trained on."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from .datasets import background_spurious_set, colour_spurious_set, train_dataset, typographic_set
from .world import IMAGE_SIZE, font

SCALE, COLS, TEXT_H = 2, 8, 30


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[str]) -> Image.Image:
    """Images enlarged ``SCALE`` times in a grid, each with its (wrapped) caption underneath."""
    cell_w, cell_h = IMAGE_SIZE * SCALE + 8, IMAGE_SIZE * SCALE + TEXT_H
    rows = (len(images) + COLS - 1) // COLS
    sheet = Image.new("RGB", (COLS * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (img, cap) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(k, COLS)
        sheet.paste(img.resize((IMAGE_SIZE * SCALE,) * 2, Image.NEAREST), (c * cell_w + 4, r * cell_h))
        lines = textwrap.wrap(cap, 24)[:2]
        draw.multiline_text(
            (c * cell_w + 4, r * cell_h + IMAGE_SIZE * SCALE + 1),
            "\n".join(lines),
            font=font(11),
            fill="black",
        )
    return sheet


def sample_grid(out_dir: str | Path, seed: int = 0, n: int = 48) -> list[Path]:
    """Write ``train.png`` (training images with captions) and one sheet per evaluation set."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheets = {}
    ds = train_dataset(n, seed=seed)
    sheets["train.png"] = [(img, m["caption"]) for img, m in ds.items()]
    typo = typographic_set(16, seed=seed)
    sheets["typographic.png"] = [
        (img, f"{m['variant']}: true {typo.classnames[m['label']]}") for img, m in typo.items()
    ]
    for name, ds in (
        ("background_spurious.png", background_spurious_set(8, seed)),
        ("colour_spurious.png", colour_spurious_set(8, seed)),
    ):
        sheets[name] = [
            (img, f"{m['group']}{' (majority)' if m['majority'] else ' (minority)'}") for img, m in ds.items()
        ]
    paths = []
    for name, items in sheets.items():
        path = out_dir / name
        contact_sheet([i for i, _ in items], [c for _, c in items]).save(path)
        paths.append(path)
    return paths
