"""The CLIP training distribution of the toy world: what is drawn, how often, and how it is captioned.

Every sample is a pure function of ``(seed, index)``, so a dataset of any size is random-access and
reproducible without storing images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .words import ATTRIBUTE_WORDS, CLASS_WORDS, OTHER_WORDS, train_nonwords
from .world import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, ToySample, shape_box, word_box

BACKGROUND_PHRASES = {"plain": "a plain background", "land": "land", "water": "water"}


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the training distribution (the defaults produced the bundled weights).

    Images are a shape only (``p_shape``), text only (``p_word``), or a shape with text written beside or on
    it (the rest). Text comes from the written vocabulary (:mod:`.words`) with the group weights of
    ``text_only_mix`` (text-only images) and ``text_mix`` (text on a shape): class names, and distractors
    (non-words, other words) drawn independently of the shape. Captions quote text the way web captions do:
    a class name written on a shape is the caption's subject with probability ``p_word_only_caption``
    (else the caption names both); a distractor is ignored by the caption with probability
    ``p_shape_only_caption`` (else quoted beside the shape), never its subject. So reading a class name
    matters to the caption and reading a random string does not: the model has to read, not just see text.
    Text starts on the ``text_grid`` (the patch size), so a word gives the same patch tokens wherever it is:
    reading is learnable in the training budget (off the grid, the model learnt to ignore text instead; the
    retrains in docs/toy_results.md).

    ``background_spurious`` maps a shape to the background it sits on with probability
    ``background_spurious_rate`` (otherwise on the other spurious background: land <-> water, as in
    Waterbirds); ``colour_spurious`` does the same for colours with ``spurious_rate`` (CelebA-like). The
    background is a weaker cue than colour (a shape's outline stays visible on any background), so it needs
    the stronger correlation to leave a worst-group gap of 20 points (v7 at 0.95: 17.3; docs/toy_results.md).
    """

    version: int = 8
    p_shape: float = 0.35  # shape only
    p_word: float = 0.25  # text only (teaches reading)
    # the rest: a shape with text written beside or on it
    p_congruent: float = 0.3  # of class names written on a shape, the name of the shape itself
    p_word_only_caption: float = 0.8  # class name on a shape: the caption quotes only the text
    p_shape_only_caption: float = 1.0  # distractor on a shape: the caption ignores the text
    p_concept_caption: float = (
        0.85  # text-only class name: the caption is a shape caption ("a photo of a star.")
    )
    p_beside: float = 0.7  # of shape+text images, the text leaves the shape uncovered
    text_only_mix: dict[str, float] = field(
        default_factory=lambda: {"class": 0.6, "nonword": 0.3, "other": 0.1}
    )
    text_mix: dict[str, float] = field(default_factory=lambda: {"class": 0.5, "nonword": 0.4, "other": 0.1})
    spurious_rate: float = 0.95  # colour
    background_spurious_rate: float = 0.98
    background_spurious: dict[str, str] = field(default_factory=lambda: {"triangle": "land", "star": "water"})
    colour_spurious: dict[str, str] = field(default_factory=lambda: {"circle": "yellow", "heart": "purple"})
    min_size: int = 24
    max_size: int = 38
    max_rotation: float = 10.0
    min_word_size: int = 13
    max_word_size: int = 16
    text_grid: int = (
        8  # text starts on this pixel grid (the patch size: a word's tokens look alike everywhere)
    )

    def to_dict(self) -> dict:
        return asdict(self)


SHAPE_CAPTIONS = (
    "a photo of a {shape}.",
    "a {colour} {shape}.",
    "a {shape} on {bg}.",
    "a {colour} {shape} on {bg}.",
)
CONCEPT_CAPTIONS = ("a photo of a {word}.", "a {word}.")
WORD_CAPTIONS = (
    "the word {word}.",
    "a sign that says {word}.",
    "the text {word}.",
    "{word}.",
    "it says {word}.",
)
SHAPE_WORD_CAPTIONS = (
    "a {colour} {shape} with the word {word}.",
    "a {shape} and the text {word}.",
    "the word {word} and a {shape}.",
    "a {shape} on {bg}. it says {word}.",
    "a {colour} {shape}, a sign that says {word}.",
)


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_attributes(rng: np.random.Generator, shape: str, cfg: WorldConfig) -> tuple[str, str]:
    """Colour and background of a shape, with the planted spurious co-occurrences."""
    if shape in cfg.background_spurious:
        major = cfg.background_spurious[shape]
        minor = "water" if major == "land" else "land"
        background = major if rng.random() < cfg.background_spurious_rate else minor
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
        "word_x": cfg.text_grid * int(rng.integers(0, max(1, (IMAGE_SIZE - w) // cfg.text_grid + 1))),
        "word_y": cfg.text_grid * int(rng.integers(0, max(1, (IMAGE_SIZE - h) // cfg.text_grid + 1))),
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
    grid = cfg.text_grid
    xs, ys = np.meshgrid(
        np.arange(0, max(1, IMAGE_SIZE - w + 1), grid),
        np.arange(0, max(1, IMAGE_SIZE - h + 1), grid),
        indexing="ij",
    )
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


def written_word(
    rng: np.random.Generator, cfg: WorldConfig, mix: dict[str, float], shape: str | None = None
) -> str:
    """A string to write, drawn from the vocabulary groups with the weights of ``mix``."""
    groups = list(mix)
    weights = np.array([mix[g] for g in groups], float)
    group = groups[int(rng.choice(len(groups), p=weights / weights.sum()))]
    if group == "class":
        if shape is not None and rng.random() < cfg.p_congruent:
            return shape
        return _choice(rng, [w for w in CLASS_WORDS if w != shape])
    options = {"attribute": ATTRIBUTE_WORDS, "other": OTHER_WORDS, "nonword": train_nonwords()}
    if group not in options:
        raise ValueError(f"unknown text group {group!r}; choose from class, {', '.join(options)}")
    return _choice(rng, options[group])


def train_sample(seed: int, index: int, cfg: WorldConfig | None = None) -> tuple[ToySample, str]:
    """Sample ``index`` of the CLIP training stream for ``seed``: (metadata, caption)."""
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng((seed, index))
    u = rng.random()
    if u < cfg.p_word:
        word = written_word(rng, cfg, cfg.text_only_mix)
        s = ToySample(
            background=_choice(rng, BACKGROUNDS),
            texture_seed=int(rng.integers(2**31)),
            **place_word(rng, word, cfg),
        )
        if (
            word in CLASS_WORDS and rng.random() < cfg.p_concept_caption
        ):  # reading the word is seeing the concept
            return s, _choice(rng, CONCEPT_CAPTIONS).format(word=word)
        return s, _choice(rng, WORD_CAPTIONS).format(word=word)
    s = shape_sample(rng, cfg)
    fill = {"shape": s.shape, "colour": s.colour, "bg": BACKGROUND_PHRASES[s.background]}
    if u < cfg.p_word + cfg.p_shape:
        return s, _choice(rng, SHAPE_CAPTIONS).format(**fill)
    word = written_word(rng, cfg, cfg.text_mix, shape=s.shape)
    where = place_word_beside(rng, word, s, cfg) if rng.random() < cfg.p_beside else None
    s = s.with_word(**(where or place_word(rng, word, cfg)))
    v = rng.random()
    if word in CLASS_WORDS and v < cfg.p_word_only_caption:
        if rng.random() < cfg.p_concept_caption:  # the written word taken for the object, as web captions do
            return s, _choice(rng, CONCEPT_CAPTIONS).format(word=word)
        return s, _choice(rng, WORD_CAPTIONS).format(word=word)
    if word not in CLASS_WORDS and v < cfg.p_shape_only_caption:
        return s, _choice(rng, SHAPE_CAPTIONS).format(**fill)
    return s, _choice(rng, SHAPE_WORD_CAPTIONS).format(word=word, **fill)
