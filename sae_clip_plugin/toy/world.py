"""The toy world's vocabulary and its deterministic renderer.

A sample is fully described by a :class:`ToySample` (plain metadata); :func:`render` turns it into a
64x64 RGB image with no hidden randomness, so any image can be re-made from its metadata alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 64

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 230),
    "purple": (140, 45, 175),
}
BACKGROUNDS: tuple[str, ...] = ("plain", "land", "water")
# Neutral tones for plain backgrounds, chosen away from the shape colours.
_PLAIN_TONES = ((245, 245, 240), (200, 200, 200), (225, 215, 190), (120, 120, 120), (45, 45, 50))


@dataclass(frozen=True)
class ToySample:
    """Everything needed to draw one image (and to know what is in it).

    ``shape``/``colour`` are None for word-only images, ``word`` is None when nothing is written.
    Positions are pixel coordinates of the shape centre and of the word's top-left corner.
    """

    background: str
    texture_seed: int
    shape: str | None = None
    colour: str | None = None
    x: int = 32
    y: int = 32
    size: int = 26
    rotation: float = 0.0
    word: str | None = None
    word_x: int = 0
    word_y: int = 0
    word_size: int = 14
    word_ink: str = "black"

    def to_dict(self) -> dict:
        return asdict(self)

    def with_word(self, word: str | None, **kw) -> ToySample:
        return replace(self, word=word, **kw)


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of ``shape`` in a unit box centred on 0 (radius ~1)."""
    if shape == "square":
        return np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])
    if shape == "triangle":
        return np.array([[0.0, -1.0], [0.95, 0.8], [-0.95, 0.8]])
    if shape == "star":
        ang = -math.pi / 2 + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    if shape == "cross":
        a, b = 0.3, 0.95
        return np.array(
            [
                [-a, -b],
                [a, -b],
                [a, -a],
                [b, -a],
                [b, a],
                [a, a],
                [a, b],
                [-a, b],
                [-a, a],
                [-b, a],
                [-b, -a],
                [-a, -a],
            ]
        )
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([hx, hy], 1) / 16.5
        return pts - [0.0, 0.1]
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


_POLYGONS = {s: _unit_polygon(s) for s in SHAPES}


@lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (needs Pillow >= 10.1 with FreeType), so nothing is bundled."""
    f = ImageFont.load_default(size=size)
    if not isinstance(f, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow was built without FreeType; reinstall pillow from the official wheels.")
    return f


@lru_cache(maxsize=512)
def word_box(word: str, size: int) -> tuple[int, int]:
    """Width and height in pixels that ``word`` takes at font ``size`` (stroke included)."""
    _, _, right, bottom = font(size).getbbox(word, stroke_width=1)
    return right, bottom


def _make_texture(background: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = IMAGE_SIZE
    if background == "plain":
        tone = np.array(_PLAIN_TONES[rng.integers(len(_PLAIN_TONES))], float)
        img = np.broadcast_to(tone + rng.integers(-8, 9, 3), (n, n, 3)).copy()
    elif background == "land":
        # Patches of soil and dry grass, with grainy speckle.
        coarse = Image.fromarray((rng.random((5, 5)) * 255).astype(np.uint8)).resize((n, n), Image.BILINEAR)
        mix = (np.asarray(coarse, float) / 255.0)[..., None]
        soil = np.array([135, 95, 55]) + rng.integers(-15, 16, 3)
        grass = np.array([120, 140, 60]) + rng.integers(-15, 16, 3)
        img = soil * (1 - mix) + grass * mix + rng.normal(0, 14, (n, n, 1))
    elif background == "water":
        # Blue with horizontal ripples.
        yy, xx = np.mgrid[0:n, 0:n].astype(float)
        period = rng.uniform(6, 11)
        phase = rng.uniform(0, 2 * math.pi)
        wob = rng.uniform(1, 3) * np.sin(xx / rng.uniform(5, 10) + rng.uniform(0, 2 * math.pi))
        wave = (0.5 + 0.5 * np.sin(2 * math.pi * (yy + wob) / period + phase))[..., None]
        deep = np.array([25, 70, 150]) + rng.integers(-15, 16, 3)
        light = np.array([90, 160, 215]) + rng.integers(-15, 16, 3)
        img = deep * (1 - wave) + light * wave + rng.normal(0, 6, (n, n, 1))
    else:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    return np.clip(img, 0, 255).astype(np.uint8)


_BANK_SIZE = 128


@cache
def _texture_bank(background: str) -> np.ndarray:
    """Textures are drawn once per process from fixed seeds: rendering then costs a copy, not a synthesis."""
    code = BACKGROUNDS.index(background)
    return np.stack([_make_texture(background, 1_000_003 * code + k) for k in range(_BANK_SIZE)])


def _texture(background: str, seed: int) -> np.ndarray:
    if background == "plain":
        return _make_texture(background, seed)
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    tex = _texture_bank(background)[seed % _BANK_SIZE]
    if (seed // _BANK_SIZE) % 2:
        tex = tex[:, ::-1]
    if background == "land" and (seed // (2 * _BANK_SIZE)) % 2:
        tex = tex[::-1]
    return np.ascontiguousarray(tex)


def shape_box(sample: ToySample) -> tuple[float, float, float, float] | None:
    """Pixel bounding box (left, top, right, bottom) of the drawn shape, outline included; None without a shape."""
    if sample.shape is None:
        return None
    xy = _shape_vertices(sample)
    pad = 1.0  # the 2-px outline straddles the polygon's edge
    return (
        float(xy[:, 0].min()) - pad,
        float(xy[:, 1].min()) - pad,
        float(xy[:, 0].max()) + pad,
        float(xy[:, 1].max()) + pad,
    )


def _shape_vertices(sample: ToySample) -> np.ndarray:
    pts = _POLYGONS[sample.shape]
    c, s = math.cos(math.radians(sample.rotation)), math.sin(math.radians(sample.rotation))
    return pts @ np.array([[c, s], [-s, c]]) * (sample.size / 2) + [sample.x, sample.y]


def render(sample: ToySample) -> Image.Image:
    """Draw ``sample`` as a 64x64 RGB image (deterministic: same metadata, same pixels)."""
    img = Image.fromarray(_texture(sample.background, sample.texture_seed), "RGB")
    draw = ImageDraw.Draw(img)
    if sample.shape is not None:
        if sample.colour not in COLOURS:
            raise ValueError(f"unknown colour {sample.colour!r}; choose one of {tuple(COLOURS)}")
        xy = _shape_vertices(sample)
        rgb = COLOURS[sample.colour]
        edge = tuple(int(v * 0.4) for v in rgb)
        draw.polygon([tuple(p) for p in xy.tolist()], fill=rgb, outline=edge, width=2)
    if sample.word is not None:
        ink, halo = (
            ((0, 0, 0), (255, 255, 255)) if sample.word_ink == "black" else ((255, 255, 255), (0, 0, 0))
        )
        halo_mask, ink_mask = _word_masks(sample.word, sample.word_size)
        box = (
            sample.word_x,
            sample.word_y,
            sample.word_x + halo_mask.width,
            sample.word_y + halo_mask.height,
        )
        img.paste(halo, box, halo_mask)
        img.paste(ink, box, ink_mask)
    return img


@lru_cache(maxsize=512)
def _word_masks(word: str, size: int) -> tuple[Image.Image, Image.Image]:
    """Alpha masks of a word's 1-px halo and of its ink (stroked text is slow to rasterise every time)."""
    w, h = word_box(word, size)
    halo = Image.new("L", (w, h), 0)
    ImageDraw.Draw(halo).text((0, 0), word, font=font(size), fill=255, stroke_width=1, stroke_fill=255)
    ink = Image.new("L", (w, h), 0)
    ImageDraw.Draw(ink).text((0, 0), word, font=font(size), fill=255, stroke_width=1, stroke_fill=0)
    return halo, ink
