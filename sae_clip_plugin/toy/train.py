"""The recipe that produced the bundled toy CLIP weights (contrastive training on rendered captions)."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from tqdm.auto import tqdm

from .model import MODEL_NAME, create_toy_clip, save_weights, toy_tokenizer, trained_rows
from .recipe import DEFAULTS
from .sampling import WorldConfig, train_sample
from .world import render


def images_to_tensor(images: list) -> torch.Tensor:
    """Same result as open_clip's eval transform on 64 px images (no resize needed), without PIL round trips."""
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def make_batch(
    seed: int, step: int, batch_size: int, cfg: WorldConfig, tokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the stream: a pure function of (seed, step, batch_size, cfg)."""
    pairs = [train_sample(seed, step * batch_size + i, cfg) for i in range(batch_size)]
    return images_to_tensor([render(s) for s, _ in pairs]), tokenizer([c for _, c in pairs])


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only, as open_clip's training does (not gains, biases, embeddings or logit scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exclude = (
            p.ndim < 2
            or "bn" in name
            or "ln" in name
            or "bias" in name
            or "embedding" in name
            or "logit_scale" in name
        )
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A toy-train checkpoint holds tensors, numbers and plain containers only: read it without running code.

    `weights_only=True` is torch's restricted unpickler; a file that asks for anything else (a planted
    `.ckpt` in a shared folder) is refused, never executed.
    """
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise RuntimeError(
            f"{path} is not a toy-train checkpoint that can be read safely ({str(err).splitlines()[0]}); "
            "nothing in it was run. Delete it to train from the start."
        ) from None
    if not isinstance(ckpt, dict) or not {"recipe", "model", "opt", "step"} <= ckpt.keys():
        raise RuntimeError(f"{path} is not a toy-train checkpoint; delete it to train from the start.")
    return ckpt


@dataclass
class _Training:
    """The model in training with its optimiser and recipe: what a resumable checkpoint saves and restores."""

    recipe: dict[str, Any]
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    ckpt_path: Path
    initial_embedding: torch.Tensor  # to tell the token rows training moved (see `trained_rows`)
    loss_fn: open_clip.ClipLoss

    @classmethod
    def create(cls, recipe: dict[str, Any], ckpt_path: Path) -> _Training:
        """A fresh model seeded from the recipe (the initialisation derives from its seed) and its AdamW."""
        torch.manual_seed(recipe["seed"])
        model = create_toy_clip(**recipe["model_overrides"])
        initial_embedding = model.token_embedding.weight.detach().clone()
        model.train()
        groups = _param_groups(model, recipe["weight_decay"])
        opt = torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.98), eps=1e-6)
        return cls(recipe, model, opt, ckpt_path, initial_embedding, open_clip.ClipLoss())

    def resume(self) -> tuple[int, list[float], float]:
        """(first step, losses so far, seconds so far): from a checkpoint of this very recipe when there
        is one (model, optimiser and torch RNG restored), else a fresh start."""
        if self.ckpt_path.is_file():
            ckpt = _load_checkpoint(self.ckpt_path)
            if ckpt["recipe"] == self.recipe:
                self.model.load_state_dict(ckpt["model"])
                self.opt.load_state_dict(ckpt["opt"])
                torch.set_rng_state(ckpt["torch_rng"])
                return ckpt["step"], ckpt["losses"], ckpt["seconds"]
        return 0, [], 0.0

    def step(self, images: torch.Tensor, texts: torch.Tensor, lr: float) -> float:
        """One optimiser step at learning rate `lr` (the logit scale clamped to at most 100); its loss."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        image_features, text_features, logit_scale = self.model(images, texts)[:3]
        loss = self.loss_fn(image_features, text_features, logit_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return loss.item()

    def save_checkpoint(self, done: int, losses: list[float], seconds: float) -> None:
        """The checkpoint after `done` steps, written atomically (a tmp file renamed over it)."""
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        torch.save(
            {
                "recipe": self.recipe,
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "step": done,
                "losses": losses,
                "seconds": seconds,
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, self.ckpt_path)

    def finish(self, out_path: Path, seconds: float, losses: list[float]) -> None:
        """The trained weights (float16 safetensors with the recipe in their metadata); the checkpoint goes."""
        self.model.eval()
        meta = {
            "open_clip_model": MODEL_NAME,
            "recipe": json.dumps(self.recipe),
            "seconds": f"{seconds:.0f}",
            "final_loss": f"{np.mean(losses[-20:]):.4f}" if losses else "nan",
            "format": "open_clip state_dict",
        }
        save_weights(
            self.model,
            out_path,
            metadata=meta,
            trained_token_rows=trained_rows(self.model.token_embedding.weight, self.initial_embedding),
        )
        if self.ckpt_path.is_file():
            self.ckpt_path.unlink()


def train_toy_clip(
    out_path: str | os.PathLike,
    seed: int = DEFAULTS["seed"],
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    warmup: int = DEFAULTS["warmup"],
    weight_decay: float = DEFAULTS["weight_decay"],
    world: WorldConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    threads: int | None = None,
    progress: bool = True,
    callback: Callable[[int, torch.nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Train the toy CLIP from scratch and write float16 safetensors to ``out_path`` (atomically).

    Reproducible from ``seed`` (the data stream and the initialisation both derive from it). Every
    ``checkpoint_every`` steps a resumable checkpoint ``<out_path>.ckpt`` is written; a rerun with the
    same arguments continues from it, and it is deleted once the weights are written.
    ``callback(step, model)`` runs after every optimiser step (e.g. to evaluate along the way).
    Returns ``{"losses": [...], "seconds": ..., "path": ...}``.
    """
    out_path = Path(out_path)
    world = world or WorldConfig()
    if threads:
        torch.set_num_threads(threads)
    recipe = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "world": world.to_dict(),
        "model_overrides": model_overrides or {},
    }
    run = _Training.create(recipe, out_path.with_name(out_path.name + ".ckpt"))
    model, tokenizer = run.model, toy_tokenizer()
    start, losses, seconds = run.resume() if resume else (0, [], 0.0)

    t0 = time.time() - seconds
    pool = ThreadPoolExecutor(max_workers=1)  # renders the next batch while this one trains
    pending = pool.submit(make_batch, seed, start, batch_size, world, tokenizer) if start < steps else None
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="toy CLIP", disable=not progress)
    try:
        for step in bar:
            images, texts = pending.result()
            if step + 1 < steps:
                pending = pool.submit(make_batch, seed, step + 1, batch_size, world, tokenizer)
            losses.append(run.step(images, texts, _lr_at(step, steps, lr, warmup)))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
            done = step + 1
            if callback is not None:
                callback(done, model)
            if checkpoint_every and done % checkpoint_every == 0 and done < steps:
                run.save_checkpoint(done, losses, time.time() - t0)
    finally:
        pool.shutdown(cancel_futures=True)
    seconds = time.time() - t0
    run.finish(out_path, seconds, losses)
    return {"losses": losses, "seconds": seconds, "path": str(out_path), "model": model, "recipe": recipe}
