"""Vocabularies for the steerability readout: lists of bare words, embedded once by the text tower.

The paper read steering out over 5000 common English words (bare words, no prompt template). That
list is not shipped; the default here is open_clip's 1000 ImageNet class names. Worlds register their own
vocabularies (`sae_clip_plugin.registry`, kind "vocabulary"): `"toy"` is the toy world's concepts (shapes,
colours, backgrounds; the shapes are its class names). A user file is a text file with one word per line
(`#` comments and blank lines skipped) or a JSON list.
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


def readout_probabilities(
    image_embeddings: torch.Tensor, text: torch.Tensor, scale: float = 100.0
) -> torch.Tensor:
    """p = softmax(scale * e_img . T^T) with e_img normalised ([B, V]).

    The scale is fixed at 100 as in the authors' notebooks (CLIP's learned logit scale saturates
    there for OpenAI-style models), so readouts are comparable across models, random ones included.
    """
    e = F.normalize(image_embeddings.float(), dim=-1)
    return torch.softmax(scale * e @ text.to(e.device, e.dtype).T, dim=-1)
