"""The toy world's names in `sae_clip_plugin.registry` (declared as an entry point in pyproject.toml).

Every factory imports its module when called, so registering costs nothing on the `sae-clip --help` path.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from sae_clip_plugin import registry

if TYPE_CHECKING:  # annotations only: registering the world must not import torch
    from sae_clip_plugin.model.hooked_vit import HookedViT

NAME = "toy"
TASKS = ("toy-typographic", "toy-background", "toy-colour")


def hooked_toy_clip(model_cls: type[HookedViT], **kwargs: Any) -> HookedViT:
    """The bundled toy CLIP as a HookedViT (`model_cls`) carrying its own preprocess transform."""
    from sae_clip_plugin.toy.model import load_toy_clip  # lazy: torch, open_clip

    clip, preprocess, tokenizer = load_toy_clip()
    model = model_cls.from_open_clip(clip, tokenizer=tokenizer, model_spec=NAME, **kwargs)
    model._preprocess = preprocess
    return model


def training_images(n_images: int = 10_000, seed: int = 0) -> Any:
    """The toy CLIP's training stream (shapes, text, captions), rendered lazily."""
    from sae_clip_plugin.toy.datasets import train_dataset  # lazy: torch

    return train_dataset(n_images, seed=seed)


def concept_words() -> list[str]:
    """The toy world's concept words: its shapes (the class names), colours and backgrounds."""
    from sae_clip_plugin.toy.world import BACKGROUNDS, COLOURS, SHAPES  # lazy: PIL, numpy

    return [*SHAPES, *COLOURS, *BACKGROUNDS]


def world_words() -> list[str]:
    """The concepts, then every word the world can write (other English words, non-words): 518 words.

    The steerability readout's vocabulary for the toy, its analogue of the paper's 5000 common English words
    (arXiv 2504.08729, section 3): every one is in the text tower's training captions and can be read off an
    image. Over the 15 concepts alone the clean readout is concentrated on a few words and an edit that merely
    moves mass between them passes S > 0.10; a random image tower's edits do (docs/toy_results.md).
    """
    from sae_clip_plugin.toy.words import written_vocabulary  # lazy: numpy

    return list(dict.fromkeys([*concept_words(), *written_vocabulary()]))


def text_bank() -> list[str]:
    """TextSpan texts: each concept as a thing and as a written word (so "a circle" and "the word circle" differ)."""
    from sae_clip_plugin.toy.world import BACKGROUNDS, COLOURS, SHAPES  # lazy: PIL, numpy

    as_thing = {"a {}": SHAPES, "something {}": COLOURS, "a photo of {}": BACKGROUNDS}
    return [
        text
        for form, words in as_thing.items()
        for word in words
        for text in (form.format(word), f"the word {word}")
    ]


def eval_images(n: int, seed: int = 4321) -> tuple[Any, list[str], list[str]]:
    """`n` labelled shape images (the clean half of the typographic set), their class names and templates."""
    # lazy: torch, open_clip
    from sae_clip_plugin.toy.datasets import ToyDataset, typographic_set
    from sae_clip_plugin.toy.vocabulary import toy_classnames, toy_templates

    typo = typographic_set(n, seed=seed)
    dataset = ToyDataset(typo.samples[0::2], typo.labels[0::2], classnames=toy_classnames())
    return dataset, toy_classnames(), toy_templates()


def task(
    name: str, model: HookedViT, n_select: int = 300, n_eval: int = 300, seed: int = 0, **options: Any
) -> Any:
    """One of the toy world's disentanglement tasks (see `sae_clip_plugin.toy.tasks.toy_task`)."""
    # here, not at module level: toy.tasks imports this module (cycle)
    from sae_clip_plugin.toy.tasks import toy_task

    return toy_task(model, name, n_select=n_select, n_eval=n_eval, seed=seed, **options)


_TASK_FACTORIES = {name: partial(task, name) for name in TASKS}


def register() -> None:
    """Register the toy world's model spec, images, vocabulary, text bank, evaluation images and tasks."""
    registry.register("model", NAME, hooked_toy_clip)
    registry.register("images", NAME, training_images)
    registry.register("vocabulary", NAME, world_words)
    registry.register("vocabulary", f"{NAME}-concepts", concept_words)
    registry.register("text_bank", NAME, text_bank)
    registry.register("eval_images", NAME, eval_images)
    for name, factory in _TASK_FACTORIES.items():
        registry.register("task", name, factory)
