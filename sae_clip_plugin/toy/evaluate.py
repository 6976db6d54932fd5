"""The toy world's reference numbers (zero-shot, typographic and spurious-group accuracy).

Measured with open_clip's own encode_image / encode_text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .datasets import ToyDataset, background_spurious_set, colour_spurious_set, typographic_set
from .model import TEMPLATES, load_toy_clip
from .sampling import WorldConfig
from .world import SHAPES

CONTROL_SEED = 99  # the control non-words' stream
_CONSONANTS, _VOWELS = "bcdfghjklmnpqrstvwxz", "aeiouy"


def control_nonword(rng: np.random.Generator, length: int) -> str:
    """A random, consonant-heavy string of `length` letters that names nothing in the toy world."""
    names = {w.lower() for w in SHAPES}
    while True:
        letters = [
            str(rng.choice(list(_VOWELS if rng.random() < 0.25 else _CONSONANTS))) for _ in range(length)
        ]
        word = "".join(letters)
        if word not in names:
            return word


@torch.no_grad()
def zero_shot_weights(
    model, tokenizer, classnames: Sequence[str], templates: Sequence[str] = TEMPLATES, device="cpu"
):
    """One unit-norm text embedding per class (template embeddings averaged, as in CLIP's zero-shot)."""
    rows = []
    for name in classnames:
        emb = model.encode_text(tokenizer([t.format(name) for t in templates]).to(device), normalize=True)
        rows.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def open_clip_zero_shot_logits(
    model, preprocess, dataset: ToyDataset, class_weights, device="cpu", batch_size=256
):
    """logit_scale * cos(image, class) for every item of ``dataset``."""
    out = []
    for start in range(0, len(dataset), batch_size):
        imgs = [
            preprocess(img)
            for img, _ in (dataset[i] for i in range(start, min(start + batch_size, len(dataset))))
        ]
        feats = model.encode_image(torch.stack(imgs).to(device), normalize=True)
        out.append(model.logit_scale.exp() * feats @ class_weights.T)
    return torch.cat(out).cpu()


def group_accuracies(correct: torch.Tensor, dataset: ToyDataset) -> dict[str, Any]:
    """Per-group accuracy, worst group, mean over groups (= overall accuracy on a balanced set), gap."""
    groups: dict[str, list[bool]] = {}
    for i, ok in enumerate(correct.tolist()):
        groups.setdefault(dataset.labels[i]["group"], []).append(ok)
    acc = {g: sum(v) / len(v) for g, v in groups.items()}
    worst = min(acc, key=acc.get)
    mean = sum(acc.values()) / len(acc)
    return {
        "groups": acc,
        "worst_group": worst,
        "worst_group_accuracy": acc[worst],
        "mean_accuracy": mean,
        "gap": mean - acc[worst],
    }


def _typographic(model, preprocess, w, n: int, seed: int, world, device, placement: str) -> dict[str, float]:
    """Clean and attacked accuracy on twins, how often the written word wins, and a non-word control.

    The control writes a random non-word of the same length in place of the class name (same place, size
    and ink): it tells the part of the drop that comes from reading a class name from the part that any text
    of that size there causes.
    """
    typo = typographic_set(n, seed=seed, cfg=world, placement=placement)
    pred = open_clip_zero_shot_logits(model, preprocess, typo, w, device).argmax(-1)
    labels = torch.tensor([m["label"] for m in typo.labels])
    words = torch.tensor([m["word_label"] for m in typo.labels])
    clean = torch.tensor([m["variant"] == "clean" for m in typo.labels])
    out = {
        "clean_accuracy": (pred == labels)[clean].float().mean().item(),
        "attacked_accuracy": (pred == labels)[~clean].float().mean().item(),
        "attack_success_rate": (pred == words)[~clean].float().mean().item(),
    }
    out["typographic_drop"] = out["clean_accuracy"] - out["attacked_accuracy"]
    nonword = nonword_twins(typo, seed)
    pred = open_clip_zero_shot_logits(model, preprocess, nonword, w, device).argmax(-1)
    out["nonword_accuracy"] = (pred == labels[~clean]).float().mean().item()
    return out


def nonword_twins(typo: ToyDataset, seed: int) -> ToyDataset:
    """The attacked images of `typo` with each class name replaced by a control non-word of its length."""
    rng = np.random.default_rng((seed, CONTROL_SEED))
    attacked = [i for i, m in enumerate(typo.labels) if m["variant"] == "attacked"]
    samples = [typo.samples[i] for i in attacked]
    return ToyDataset(
        [dataclasses.replace(s, word=control_nonword(rng, len(s.word))) for s in samples],
        [typo.labels[i] for i in attacked],
    )


def evaluate_toy_clip(
    model=None,
    preprocess=None,
    tokenizer=None,
    n_typographic: int = 600,
    n_per_group: int = 150,
    seed: int = 1234,
    device: str | torch.device = "cpu",
    world: WorldConfig | None = None,
) -> dict[str, Any]:
    """Clean and attacked zero-shot shape accuracy, and worst-group vs mean on both spurious sets.

    Defaults to the bundled weights. Typographic: 6-way zero-shot over all shapes with the word written
    beside the shape (the attack proper: reading); ``result['anywhere']`` holds the same with the word
    anywhere, as in training (reading plus covering the shape). Spurious sets: 2-way zero-shot between the
    two correlated shapes (as Waterbirds / CelebA are binary tasks).
    ``world`` must be the configuration the model was trained on (default: the bundled recipe's).
    """
    if model is None:
        model, preprocess, tokenizer = load_toy_clip(device)
    was_training = model.training
    model.eval()
    result: dict[str, Any] = {}
    w = zero_shot_weights(model, tokenizer, SHAPES, device=device)
    result.update(_typographic(model, preprocess, w, n_typographic, seed, world, device, "beside"))
    result["anywhere"] = _typographic(model, preprocess, w, n_typographic, seed, world, device, "anywhere")
    for name, ds in (
        ("background", background_spurious_set(n_per_group, seed=seed + 1, cfg=world)),
        ("colour", colour_spurious_set(n_per_group, seed=seed + 2, cfg=world)),
    ):
        w = zero_shot_weights(model, tokenizer, ds.classnames, device=device)
        pred = open_clip_zero_shot_logits(model, preprocess, ds, w, device).argmax(-1)
        correct = pred == torch.tensor([m["label"] for m in ds.labels])
        result[name] = {"classnames": list(ds.classnames), **group_accuracies(correct, ds)}
    model.train(was_training)
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [f"clean zero-shot accuracy      {result['clean_accuracy']:.1%}"]
    for label, r in (("word beside the shape", result), ("word anywhere", result["anywhere"])):
        lines += [
            f"typographic, {label}: attacked {r['attacked_accuracy']:.1%} vs clean twins "
            f"{r['clean_accuracy']:.1%} (drop {r['typographic_drop'] * 100:.1f} points; predicts the written word "
            f"{r['attack_success_rate']:.1%})",
            f"  control: a non-word of the same length in place of the class name {r['nonword_accuracy']:.1%} "
            f"(drop {(r['clean_accuracy'] - r['nonword_accuracy']) * 100:.1f} points)",
        ]
    for name in ("background", "colour"):
        r = result[name]
        groups = ", ".join(f"{g} {a:.1%}" for g, a in sorted(r["groups"].items()))
        lines.append(
            f"{name}-spurious {'/'.join(r['classnames'])}: worst group {r['worst_group']} "
            f"{r['worst_group_accuracy']:.1%} vs mean {r['mean_accuracy']:.1%} (gap {r['gap'] * 100:.1f} points)"
            f"  [{groups}]"
        )
    return "\n".join(lines)
