"""The CLIP training distribution of the toy world: what is drawn, how often, and how it is captioned.

Every sample is a pure function of ``(seed, index)``, so a dataset of any size is random-access and
reproducible without storing images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .world import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, ToySample, shape_box, word_box

BACKGROUND_PHRASES = {"plain": "a plain background", "land": "land", "water": "water"}


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the training distribution (the defaults produced the bundled weights).

    ``background_spurious`` maps a shape to the background it sits on with probability
    ``spurious_rate`` (otherwise on the other spurious background: land <-> water, as in Waterbirds);
    ``colour_spurious`` does the same for colours (CelebA-like).
    """

    p_shape: float = 0.5  # shape only
    p_word: float = 0.2  # word only (teaches reading)
    # the rest: a shape with a word written on it
    p_congruent: float = 0.3  # of shape+word images, the word names the shape itself
    p_word_only_caption: float = 0.4  # of shape+word images, the caption names only the word
    spurious_rate: float = 0.95
    background_spurious: dict[str, str] = field(default_factory=lambda: {"triangle": "land", "star": "water"})
    colour_spurious: dict[str, str] = field(default_factory=lambda: {"circle": "yellow", "heart": "purple"})
    min_size: int = 24
    max_size: int = 38
    max_rotation: float = 10.0
    min_word_size: int = 11
    max_word_size: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


SHAPE_CAPTIONS = (
    "a photo of a {shape}.",
    "a {colour} {shape}.",
    "a {shape} on {bg}.",
    "a {colour} {shape} on {bg}.",
)
WORD_CAPTIONS = ("the word {word}.", "a sign that says {word}.", "the text {word}.", "{word}.")
SHAPE_WORD_CAPTIONS = (
    "a {colour} {shape} with the word {word} written on it.",
    "a {shape} with the word {word}.",
    "the word {word} on a {shape}.",
    "a {colour} {shape} on {bg} with the text {word}.",
)


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_attributes(rng: np.random.Generator, shape: str, cfg: WorldConfig) -> tuple[str, str]:
    """Colour and background of a shape, with the planted spurious co-occurrences."""
    if shape in cfg.background_spurious:
        major = cfg.background_spurious[shape]
        minor = "water" if major == "land" else "land"
        background = major if rng.random() < cfg.spurious_rate else minor
    else:
        background = _choice(rng, BACKGROUNDS)
    if shape in cfg.colour_spurious:
        major = cfg.colour_spurious[shape]
        others = [c for c in cfg.colour_spurious.values() if c != major]
        minor = others[0] if others else _choice(rng, [c for c in COLOURS if c != major])
        colour = major if rng.random() < cfg.spurious_rate else minor
    else:
        colour = _choice(rng, tuple(COLOURS))
    return colour, background


def place_shape(rng: np.random.Generator, cfg: WorldConfig) -> dict:
    size = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    half = size // 2 + 1
    return {
        "size": size,
        "x": int(rng.integers(half, IMAGE_SIZE - half + 1)),
        "y": int(rng.integers(half, IMAGE_SIZE - half + 1)),
        "rotation": float(rng.uniform(-cfg.max_rotation, cfg.max_rotation)),
    }


def place_word(rng: np.random.Generator, word: str, cfg: WorldConfig) -> dict:
    size = int(rng.integers(cfg.min_word_size, cfg.max_word_size + 1))
    w, h = word_box(word, size)
    while w > IMAGE_SIZE - 2 and size > 8:  # long words shrink until they fit
        size -= 1
        w, h = word_box(word, size)
    return {
        "word": word,
        "word_size": size,
        "word_x": int(rng.integers(0, max(1, IMAGE_SIZE - w))),
        "word_y": int(rng.integers(0, max(1, IMAGE_SIZE - h))),
        "word_ink": _choice(rng, ("black", "white")),
    }


def place_word_beside(
    rng: np.random.Generator, word: str, sample: ToySample, cfg: WorldConfig, gap: int = 1
) -> dict | None:
    """A placement of ``word`` that leaves the shape of ``sample`` uncovered (a label beside the object).

    Size and ink are drawn as in :func:`place_word`; the position is uniform over the spots whose box
    stays ``gap`` pixels clear of the shape's box. None when the shape leaves no room at that size.
    """
    placed = place_word(rng, word, cfg)
    w, h = word_box(word, placed["word_size"])
    left, top, right, bottom = shape_box(sample)
    xs, ys = np.meshgrid(np.arange(max(1, IMAGE_SIZE - w)), np.arange(max(1, IMAGE_SIZE - h)), indexing="ij")
    clear = (
        (xs + w + gap <= left) | (xs >= right + gap) | (ys + h + gap <= top) | (ys >= bottom + gap)
    ).ravel()
    spots = np.flatnonzero(clear)
    if spots.size == 0:
        return None
    spot = int(spots[rng.integers(spots.size)])
    return {**placed, "word_x": int(xs.ravel()[spot]), "word_y": int(ys.ravel()[spot])}


def shape_sample(rng: np.random.Generator, cfg: WorldConfig, shape: str | None = None) -> ToySample:
    """A shape with no word, attributes drawn from the training distribution."""
    shape = shape or _choice(rng, SHAPES)
    colour, background = sample_attributes(rng, shape, cfg)
    return ToySample(
        background=background,
        texture_seed=int(rng.integers(2**31)),
        shape=shape,
        colour=colour,
        **place_shape(rng, cfg),
    )


def train_sample(seed: int, index: int, cfg: WorldConfig | None = None) -> tuple[ToySample, str]:
    """Sample ``index`` of the CLIP training stream for ``seed``: (metadata, caption)."""
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng((seed, index))
    u = rng.random()
    if u < cfg.p_word:
        word = _choice(rng, SHAPES)
        s = ToySample(
            background=_choice(rng, BACKGROUNDS),
            texture_seed=int(rng.integers(2**31)),
            **place_word(rng, word, cfg),
        )
        return s, _choice(rng, WORD_CAPTIONS).format(word=word)
    s = shape_sample(rng, cfg)
    fill = {"shape": s.shape, "colour": s.colour, "bg": BACKGROUND_PHRASES[s.background]}
    if u < cfg.p_word + cfg.p_shape:
        return s, _choice(rng, SHAPE_CAPTIONS).format(**fill)
    congruent = rng.random() < cfg.p_congruent
    word = s.shape if congruent else _choice(rng, [w for w in SHAPES if w != s.shape])
    s = s.with_word(**place_word(rng, word, cfg))
    if rng.random() < cfg.p_word_only_caption:
        return s, _choice(rng, WORD_CAPTIONS).format(word=word)
    return s, _choice(rng, SHAPE_WORD_CAPTIONS).format(word=word, **fill)
