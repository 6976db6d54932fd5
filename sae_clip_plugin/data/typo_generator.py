"""Generate typographic attacks on any labelled image set (ImageNet-100-Typo style).

Each image is resized (shorter side) and centre-cropped to `size`; a random OTHER class name is drawn on it
with a random font, a font size fitted to the image, random fill and stroke colours and a random position.
The clean twin (the same resized crop without text) is kept. Every choice comes from a generator seeded
with (seed, image index), so an image's attack does not depend on which other images are rendered or in
what order, and a run can be resumed. `write_typographic_set` stores the result in the RTA-100 naming
scheme so `load_typographic_folder` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm

from sae_clip_plugin.atomic import atomic_write_json

from ._io import is_image_file, save_image_atomic, to_rgb
from .fonts import load_font, resolve_fonts
from .labelled import DEFAULT_TEMPLATE, LabelledImageDataset
from .typographic import ATTACK_GROUPS, MANIFEST_NAME, NO_TEXT, format_typographic_name

MANIFEST_FORMAT = "sae_clip_plugin.typographic/1"


@dataclass(frozen=True)
class TypographicConfig:
    """How attacks are drawn. Fractions are relative to the (square) output image."""

    size: int = 224
    fonts: tuple[str, ...] | None = None  # "default" and/or .ttf/.otf paths; None = default + system fonts
    use_system_fonts: bool = True
    width_frac: tuple[float, float] = (
        0.3,
        0.9,
    )  # text width drawn uniformly in this range of the image width
    max_height_frac: float = 0.4  # text never taller than this fraction of the image height
    min_font_px: int = 8
    stroke_frac: tuple[float, float] = (0.0, 0.08)  # stroke width as a fraction of the font size
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size={self.size} is too small to write text on; use e.g. 224")
        lo, hi = self.width_frac
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"width_frac={self.width_frac} must satisfy 0 < low <= high <= 1")
        if not 0 <= self.stroke_frac[0] <= self.stroke_frac[1]:
            raise ValueError(f"stroke_frac={self.stroke_frac} must satisfy 0 <= low <= high")
        if self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        if self.fonts is not None:
            object.__setattr__(self, "fonts", tuple(str(f) for f in self.fonts))


@dataclass(frozen=True)
class AttackParams:
    """Everything needed to redraw one attack."""

    word: str
    text_label: int
    font: str
    font_size: int
    fill: tuple[int, int, int]
    stroke_fill: tuple[int, int, int]
    stroke_width: int
    xy: tuple[int, int]


def prepare_image(image: Image.Image, size: int = 224) -> Image.Image:
    """Resize the shorter side to `size` (bicubic, as CLIP's preprocess) and centre-crop to size x size."""
    image = to_rgb(image)
    image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
    return TF.center_crop(image, [size, size])


def render_text(image: Image.Image, params: AttackParams) -> Image.Image:
    """A copy of `image` with `params.word` drawn on it."""
    out = image.copy()
    ImageDraw.Draw(out).text(
        params.xy,
        params.word,
        font=load_font(params.font, params.font_size),
        fill=params.fill,
        stroke_width=params.stroke_width,
        stroke_fill=params.stroke_fill,
    )
    return out


class TypographicGenerator:
    """Plans and draws attacks for images of a labelled set whose class names are `classnames`."""

    def __init__(self, classnames: Sequence[str], config: TypographicConfig | None = None) -> None:
        self.classnames = list(classnames)
        if len(set(self.classnames)) < 2:
            raise ValueError(
                "a typographic attack needs at least two distinct class names to write a wrong one"
            )
        self.config = config or TypographicConfig()
        self.fonts = resolve_fonts(self.config.fonts, self.config.use_system_fonts)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, int(index)])

    def _word(self, rng: np.random.Generator, label: int) -> int:
        true_name = self.classnames[label]
        candidates = [j for j, c in enumerate(self.classnames) if c != true_name]
        return candidates[int(rng.integers(len(candidates)))]

    def choose_word(self, index: int, label: int) -> int:
        """Class index of the word written on image `index` (cheap: no rendering)."""
        return self._word(self._rng(index), label)

    def plan(self, index: int, label: int, image_size: tuple[int, int] | None = None) -> AttackParams:
        """The attack drawn on image `index` of class `label`, for an image of `image_size` (W, H)."""
        cfg = self.config
        width, height = image_size or (cfg.size, cfg.size)
        rng = self._rng(index)
        text_label = self._word(rng, label)
        word = self.classnames[text_label]
        font = self.fonts[int(rng.integers(len(self.fonts)))]
        width_frac = float(rng.uniform(*cfg.width_frac))
        stroke_rel = float(rng.uniform(*cfg.stroke_frac))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        stroke_fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        u, v = (float(x) for x in rng.uniform(0.0, 1.0, size=2))

        # Fit: scale a reference measurement to the drawn width, cap the height, then shrink until it fits.
        ref = 100
        left, top, right, bottom = load_font(font, ref).getbbox(word)
        ref_w, ref_h = max(right - left, 1), max(bottom - top, 1)
        size = int(ref * width_frac * width / ref_w)
        size = min(size, int(ref * cfg.max_height_frac * height / ref_h))
        size = max(size, cfg.min_font_px)
        while True:
            stroke = round(stroke_rel * size)
            left, top, right, bottom = load_font(font, size).getbbox(word, stroke_width=stroke)
            if (right - left <= width and bottom - top <= height) or size <= cfg.min_font_px:
                break
            size = max(cfg.min_font_px, int(size * 0.9))
        # Random position keeping the whole text box inside the image where possible.
        x_lo, x_hi = -left, width - right
        y_lo, y_hi = -top, height - bottom
        x = round(x_lo + u * (x_hi - x_lo)) if x_hi >= x_lo else round((x_lo + x_hi) / 2)
        y = round(y_lo + v * (y_hi - y_lo)) if y_hi >= y_lo else round((y_lo + y_hi) / 2)
        return AttackParams(word, text_label, font, size, fill, stroke_fill, stroke, (x, y))

    def attack(
        self, image: Image.Image, label: int, index: int
    ) -> tuple[Image.Image, Image.Image, AttackParams]:
        """(attacked image, clean twin, params) for image `index` of class `label`."""
        clean = prepare_image(image, self.config.size)
        params = self.plan(index, label, clean.size)
        return render_text(clean, params), clean, params


class _TypographicLoader:
    """Renders sample (base index, attacked?) on demand; a class so DataLoader workers can pickle it."""

    def __init__(self, base: LabelledImageDataset, generator: TypographicGenerator) -> None:
        self.base = base.with_transform(None)
        self.generator = generator

    def __call__(self, source: tuple[int, bool]) -> Image.Image:
        index, attacked = source
        clean = prepare_image(self.base.load_image(index), self.generator.config.size)
        if not attacked:
            return clean
        label = int(self.base.labels[index])
        return render_text(clean, self.generator.plan(index, label, clean.size))


def _as_dataset(base: Any, classnames: Sequence[str] | None) -> LabelledImageDataset:
    if isinstance(base, LabelledImageDataset):
        return base
    if classnames is None:
        raise ValueError("pass classnames when the image set is not a LabelledImageDataset")
    pairs = list(base)
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(
            "an image set must be a LabelledImageDataset or a non-empty sequence of (image or path, label)"
        )
    labels = [int(lab) for _, lab in pairs]
    return LabelledImageDataset(
        [s for s, _ in pairs], labels, labels, classnames, list(classnames), name="images"
    )


def make_typographic_dataset(
    base: LabelledImageDataset | Sequence[tuple[Any, int]],
    config: TypographicConfig | None = None,
    *,
    classnames: Sequence[str] | None = None,
    include_clean: bool = True,
    group_by: str = "attack",
    transform: Callable[[Image.Image], Any] | None = None,
) -> LabelledImageDataset:
    """Attacked images (first `len(base)` samples) and, if `include_clean`, their clean twins (next `len(base)`).

    Labels are the true classes of `base` (whose `classnames` are written, unless `classnames` is given).
    `group_by="attack"`: groups clean / attacked; `"text"`: one group per written word plus "(no text)".
    `extras`: text, text_label (-1 for clean), pair_id (index in `base`). Rendered lazily in `__getitem__`.
    """
    base = _as_dataset(base, classnames)
    names = list(classnames) if classnames is not None else base.classnames
    if len(names) != base.n_classes:
        raise ValueError(f"got {len(names)} classnames for a dataset with {base.n_classes} classes")
    gen = TypographicGenerator(names, config)
    n = len(base)
    labels = base.labels.tolist()
    words = [gen.choose_word(i, labels[i]) for i in range(n)]
    sources: list[tuple[int, bool]] = [(i, True) for i in range(n)]
    text_labels = list(words)
    if include_clean:
        sources += [(i, False) for i in range(n)]
        text_labels += [-1] * n
        labels = labels + labels
    if group_by == "attack":
        group_names, groups = list(ATTACK_GROUPS), [int(t >= 0) for t in text_labels]
    elif group_by == "text":
        group_names = [*names, NO_TEXT]
        groups = [t if t >= 0 else len(names) for t in text_labels]
    else:
        raise ValueError(f"unknown group_by {group_by!r}; use 'attack' or 'text'")
    return LabelledImageDataset(
        sources,
        labels,
        groups,
        names,
        group_names,
        transform=transform,
        loader=_TypographicLoader(base, gen),
        templates=(DEFAULT_TEMPLATE,),
        extras={
            "text": [names[t] if t >= 0 else "" for t in text_labels],
            "text_label": text_labels,
            "pair_id": [s[0] for s in sources],
        },
        name=f"{base.name}-typo",
        info={
            "format": "typographic_generated",
            "config": dataclasses.asdict(gen.config),
            "fonts": gen.fonts,
        },
    )


def _manifest(
    gen: TypographicGenerator, n: int, include_clean: bool, ext: str, source: str
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "classnames": gen.classnames,
        "config": json.loads(json.dumps(dataclasses.asdict(gen.config))),
        "fonts": gen.fonts,
        "n_images": n,
        "include_clean": include_clean,
        "ext": ext,
        "source": source,
    }


def write_typographic_set(
    base: LabelledImageDataset | Sequence[tuple[Any, int]],
    out_dir: str | os.PathLike,
    config: TypographicConfig | None = None,
    *,
    classnames: Sequence[str] | None = None,
    include_clean: bool = True,
    ext: str = ".png",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render the attacked set to `out_dir/attacked/` and the clean twins to `out_dir/clean/`.

    Names follow RTA-100: `label=<true>_text=<word>_id=<i>.<ext>` and `label=<true>_id=<i>.<ext>`; a
    `typographic_manifest.json` records class names, config and fonts. Files are written atomically, so an
    interrupted run resumes by skipping finished images; rerunning with other settings needs
    `overwrite=True` (which deletes the old images) or another folder. Read back with
    `load_typographic_folder(out_dir)`. PNG (default) keeps the clean twin bit-exact.
    """
    base = _as_dataset(base, classnames)
    names = list(classnames) if classnames is not None else base.classnames
    gen = TypographicGenerator(names, config)
    ext = ext if ext.startswith(".") else "." + ext
    for c in names:
        format_typographic_name(c, c, 0, ext)  # fail before writing anything if a name cannot be a file name
    out = Path(out_dir)
    n = len(base)
    manifest = _manifest(gen, n, include_clean, ext, base.name)
    manifest_path = out / MANIFEST_NAME
    if manifest_path.is_file() and not overwrite:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        keys = ("format", "classnames", "config", "fonts", "n_images", "include_clean", "ext")
        changed = [k for k in keys if old.get(k) != manifest[k]]
        if changed:
            raise ValueError(
                f"{out} holds a typographic set written with other settings ({', '.join(changed)} differ); "
                "use another out_dir, or overwrite=True to replace it"
            )
    if overwrite:
        for sub in ("attacked", "clean"):
            shutil.rmtree(out / sub, ignore_errors=True)
    stray = [p for p in out.iterdir() if p.is_file() and is_image_file(p)] if out.is_dir() else []
    if stray:
        raise ValueError(
            f"{out} already holds other images ({stray[0].name}, ...); write the set to its own folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest_path, manifest, default=str)
    width = max(5, len(str(max(n - 1, 0))))
    base_raw = base.with_transform(None)
    for i in tqdm(range(n), desc="typographic set", disable=not progress):
        label = int(base_raw.labels[i])
        word = gen.classnames[gen.choose_word(i, label)]
        pair_id = f"{i:0{width}d}"
        attacked_path = out / "attacked" / format_typographic_name(gen.classnames[label], word, pair_id, ext)
        clean_path = out / "clean" / format_typographic_name(gen.classnames[label], "", pair_id, ext)
        if attacked_path.is_file() and (clean_path.is_file() or not include_clean):
            continue
        attacked, clean, _ = gen.attack(base_raw.load_image(i), label, i)
        save_image_atomic(attacked, attacked_path)
        if include_clean:
            save_image_atomic(clean, clean_path)
    return out
