"""What can be written in the toy world: class names, attribute words, hundreds of other words, non-words.

Why so many: real CLIP reads because web captions quote the text in images, for every word; a toy model
that only ever sees its six class names written learns "text is there", not reading (see
docs/toy_results.md). Non-words are drawn from a fixed seed; the evaluation's control non-words come from
another seed and never occur in training.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .world import BACKGROUNDS, COLOURS, SHAPES

# Common short English words; none is a class name, colour or background word of the world.
_OTHER_WORDS_TEXT = """
    apple baby back bag ball band bank bear bed bell bird boat body bone book boot bowl box boy bread bridge
    brush bus cake camera car card cat chair cheese child city clock cloud coat coffee corn cow cup dance
    desk dog door dream drum duck egg eye face farm fish flag floor flower food foot fork fox frog fruit
    game garden gate ghost gift girl glass goat gold grape grass guitar hair hand hat head hill horse hotel
    house ice iron jam jar juice key king kite knife lake lamp leaf lemon letter lion lock love map mask
    meat milk money monkey moon mouse music nail name nest net news night nose note ocean oil onion owl page
    paint paper park party pen pencil piano pig pilot pipe pizza plane plant plate pool potato queen rabbit
    radio rain river road robot rock roof rope rose salt sand school sea seed sheep ship shirt shoe shop
    silk sky snake snow soap sock sofa song soup spoon sport stamp stone storm street sugar sun table tail
    taxi tea teeth tent tiger toast tooth towel town toy train tree truck tulip van vase wall watch wheel
    whale wind window wine wolf wood wool zebra zoo
"""
OTHER_WORDS: tuple[str, ...] = tuple(_OTHER_WORDS_TEXT.split())
ATTRIBUTE_WORDS: tuple[str, ...] = (*COLOURS, *BACKGROUNDS)
CLASS_WORDS: tuple[str, ...] = SHAPES
_LETTERS = "bcdfghjklmnpqrstvwxzaeiouy"
N_NONWORDS = 300
TRAIN_NONWORD_SEED = 7


def _random_string(rng: np.random.Generator, length: int) -> str:
    # consonant-heavy, so a non-word rarely looks like an English word
    weights = np.array([3.0] * 20 + [1.0] * 6)
    idx = rng.choice(len(_LETTERS), size=length, p=weights / weights.sum())
    return "".join(_LETTERS[i] for i in idx)


def _nonwords(seed: int, n: int, exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    rng = np.random.default_rng(seed)
    real = set(OTHER_WORDS) | set(ATTRIBUTE_WORDS) | set(CLASS_WORDS) | exclude
    out: list[str] = []
    while len(out) < n:
        word = _random_string(rng, int(rng.integers(3, 9)))
        if word not in real and word not in out:
            out.append(word)
    return tuple(out)


@cache
def train_nonwords() -> tuple[str, ...]:
    """The non-words written on training images (fixed: seed TRAIN_NONWORD_SEED)."""
    return _nonwords(TRAIN_NONWORD_SEED, N_NONWORDS)


def control_nonword(rng: np.random.Generator, length: int) -> str:
    """A non-word of `length` letters never written in training: the typographic attack's control."""
    banned = set(train_nonwords()) | set(OTHER_WORDS) | set(ATTRIBUTE_WORDS) | set(CLASS_WORDS)
    while True:
        word = _random_string(rng, length)
        if word not in banned:
            return word


def written_vocabulary() -> tuple[str, ...]:
    """Every string the training world can write (class names first)."""
    return (*CLASS_WORDS, *ATTRIBUTE_WORDS, *OTHER_WORDS, *train_nonwords())
