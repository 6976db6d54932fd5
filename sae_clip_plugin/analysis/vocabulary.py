"""Vocabularies for the steerability readout: lists of bare words, embedded once by the text tower.

The paper read steering out over 5000 common English words (bare words, no prompt template; arXiv 2504.08729,
section 3). That list is not shipped; the default here is open_clip's 1000 ImageNet class names. Worlds register
their own vocabularies (`sae_clip_plugin.registry`, kind "vocabulary"): `"toy"` is the toy world's words (its
concepts, then every word its images can show written: its analogue of the paper's common words),
`"toy-concepts"` its 15 concepts alone. A user file is a text file with one word per line (`#` comments and
blank lines skipped) or a JSON list.

The readout's softmax scale defaults to the model's own learned logit scale (`resolve_readout_scale`): see there why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sae_clip_plugin import registry

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT

DEFAULT_VOCABULARY = "imagenet"


def vocabulary_names() -> list[str]:
    """The vocabularies known by name: "imagenet" and those registered by installed worlds."""
    return [DEFAULT_VOCABULARY, *registry.names("vocabulary")]


def default_vocabulary(model_spec: str | None) -> str:
    """The model's own world's vocabulary when it registered one (the toy CLIP: "toy"), else "imagenet"."""
    return model_spec if model_spec and registry.find("vocabulary", model_spec) else DEFAULT_VOCABULARY


def imagenet_vocabulary() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # lazy: open_clip

    return list(IMAGENET_CLASSNAMES)


def _dedupe(words: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for word in words:
        word = str(word).strip()
        if word:
            seen.setdefault(word, None)
    return list(seen)


def read_vocabulary_file(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"{path}: a JSON vocabulary must be a list of words")
        return [str(w) for w in data]
    return [line.split("#", 1)[0] for line in text.splitlines()]


def load_vocabulary(vocabulary: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """A word list from a name ('imagenet', or a registered one such as 'toy'), a file, a comma list of those ('toy,imagenet'), or a
    list of words; duplicates and blanks dropped, first occurrence kept."""
    if vocabulary is None:
        vocabulary = DEFAULT_VOCABULARY
    if isinstance(vocabulary, str) and "," in vocabulary and not Path(vocabulary).is_file():
        words = [w for part in vocabulary.split(",") if part.strip() for w in load_vocabulary(part.strip())]
    elif isinstance(vocabulary, (str, os.PathLike)):
        name = str(vocabulary)
        if name == "imagenet":
            words = imagenet_vocabulary()
        elif registry.find("vocabulary", name) is not None:
            words = registry.lookup("vocabulary", name)()
        elif Path(name).is_file():
            words = read_vocabulary_file(name)
        else:
            raise ValueError(
                f"unknown vocabulary {name!r}: pass one of {vocabulary_names()}, a word-per-line text file, a JSON list "
                "file, or a list of words"
            )
    else:
        words = list(vocabulary)
    words = _dedupe(words)
    if len(words) < 2:
        raise ValueError(f"a vocabulary needs at least two distinct words, got {words}")
    return words


@torch.no_grad()
def text_embeddings(model: HookedViT, words: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings of the bare words ([V, d_embed]), computed once per vocabulary."""
    chunks = [
        model.encode_text(list(words[i : i + batch_size])).float() for i in range(0, len(words), batch_size)
    ]
    return F.normalize(torch.cat(chunks), dim=-1)


PAPER_READOUT_SCALE = 100.0


def resolve_readout_scale(model: HookedViT, scale: float | None = None) -> float:
    """The readout's softmax scale: `scale` when given, else the model's learned logit scale.

    Why the model's own: the paper reads out with softmax(100 * cos) (arXiv 2504.08729, section 3; the
    authors' notebooks), and 100 is CLIP ViT-B/32's learned logit scale (trained up to its clamp at 100), the
    temperature the model's cosines are calibrated to. The paper does not say what to do for a model whose
    scale differs, so this is our choice: keep the model's calibration. A fixed 100 on the toy CLIP (learned
    scale 18, cosines spread 10x wider than CLIP's) turns the readout into an argmax, so any edit that moves
    the embedding at all flips whole images from one word to another and passes S > 0.10, a random image
    tower's edits included (docs/toy_results.md, "Steerability per layer"). The random-model control shares
    the trained text tower, hence the same scale.
    """
    if scale is not None:
        return float(scale)
    text = getattr(model, "text", None)
    if text is None:
        return PAPER_READOUT_SCALE
    return float(text.logit_scale.exp())


def readout_probabilities(
    image_embeddings: torch.Tensor, text: torch.Tensor, scale: float = PAPER_READOUT_SCALE
) -> torch.Tensor:
    """p = softmax(scale * e_img . T^T) with e_img normalised ([B, V]); `resolve_readout_scale` gives the scale."""
    e = F.normalize(image_embeddings.float(), dim=-1)
    return torch.softmax(scale * e @ text.to(e.device, e.dtype).T, dim=-1)
