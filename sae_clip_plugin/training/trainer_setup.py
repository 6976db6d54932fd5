"""sae_lens' trainer as a vision run uses it: its config from ours, one SAETrainer or a MultiSAETrainer, a stop at the
first non-finite batch or loss, and a progress bar in training tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from sae_clip_plugin.training.config import VisionSAERunnerConfig


class NonFiniteTrainingError(RuntimeError):
    """Training met NaN/inf activations or loss; nothing was saved as a result."""


def run_name(cfg: VisionSAERunnerConfig) -> str:
    hooks = "+".join(cfg.hook_names) if len(cfg.hook_names) <= 2 else f"{len(cfg.hook_names)}hooks"
    return f"{cfg.architecture}-{hooks}-{cfg.token_selection}-lr{cfg.lr}"


def trainer_config(cfg: VisionSAERunnerConfig, device: str) -> Any:
    """sae_lens' SAETrainerConfig for our run config (wandb's run name defaults to `run_name`)."""
    from sae_lens.config import SAETrainerConfig  # lazy: sae_lens' trainer stack

    return SAETrainerConfig(
        total_training_samples=cfg.training_tokens,
        train_batch_size_samples=cfg.train_batch_size_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr_end,
        lr_scheduler_name=cfg.lr_scheduler_name,
        lr_warm_up_steps=cfg.lr_warm_up_steps,
        lr_decay_steps=cfg.lr_decay_steps,
        n_restart_cycles=cfg.n_restart_cycles,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        device=device,
        autocast=cfg.autocast_sae,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.feature_sampling_window,
        n_checkpoints=cfg.n_checkpoints,
        checkpoint_path=cfg.checkpoint_path,
        save_final_checkpoint=cfg.save_final_checkpoint,
        logger=dataclasses.replace(cfg.logger, run_name=cfg.logger.run_name or run_name(cfg)),
        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
    )


def build_trainer(
    cfg: VisionSAERunnerConfig,
    device: str,
    saes: dict[str, Any],
    data_provider: Any,
    evaluator: Callable[..., dict[str, Any]],
    save_checkpoint_fn: Callable[..., None],
) -> Any:
    """A SAETrainer for one SAE, a MultiSAETrainer (one data pass) for several; checkpoints every
    `checkpoint_every_tokens` when set."""
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer  # lazy: sae_lens' trainer stack
    from sae_lens.training.sae_trainer import SAETrainer  # lazy: as above

    common = dict(cfg=trainer_config(cfg, device), data_provider=data_provider, evaluator=evaluator,
                  save_checkpoint_fn=save_checkpoint_fn)  # fmt: skip
    if len(saes) > 1:
        trainer = MultiSAETrainer(saes=saes, hook_names={n: n for n in saes}, **common)
    else:
        trainer = SAETrainer(sae=next(iter(saes.values())), **common)
    if cfg.checkpoint_every_tokens:
        every = cfg.checkpoint_every_tokens
        trainer.checkpoint_thresholds = list(range(every, cfg.training_tokens, every))
    return trainer


def guard_steps(trainers: dict[str, Any], cache_path: str | None = None) -> None:
    """Make each per-hook trainer stop at the first non-finite batch or loss (sae_lens would train on and save a
    NaN SAE); `cache_path`: the activation cache the batches come from, named in the message."""
    for name, trainer in trainers.items():
        step = trainer.step

        def guarded(
            batch: torch.Tensor, _step: Any = step, _name: str = name, _trainer: Any = trainer
        ) -> Any:
            if not torch.isfinite(batch).all():
                raise NonFiniteTrainingError(
                    f"non-finite activations at {_name} after {_trainer.n_training_samples} training tokens"
                    + (f" (read from the activation cache {cache_path}: rebuild it)" if cache_path else "")
                    + "; nothing was saved"
                )
            out = _step(batch)
            if not torch.isfinite(out.loss):
                raise NonFiniteTrainingError(
                    f"the training loss of the SAE at {_name} became {out.loss.item()} after "
                    f"{_trainer.n_training_samples} tokens; nothing was saved. Lower lr, or check the activations"
                )
            return out

        trainer.step = guarded


def show_progress_by_tokens(trainer: Any) -> None:
    """sae_lens' bar moves in jumps of 100 steps and stops short of 100% when the run is not a multiple of
    them; ours shows the training tokens done after every step, labelled, and ends at 100%."""

    def update(step_output: Any, pbar: Any, update_interval: int = 100) -> None:
        pbar.unit, pbar.unit_scale = "tok", True
        pbar.n = min(trainer.n_training_samples, pbar.total)
        if trainer.n_training_steps % 10 == 0 or pbar.n >= pbar.total:
            outputs = step_output if isinstance(step_output, dict) else {"": step_output}
            losses = ", ".join(f"{name} loss {out.loss.item():.4g}".strip() for name, out in outputs.items())
            pbar.set_description(f"training SAE, step {trainer.n_training_steps} ({losses})", refresh=False)
        pbar.refresh()

    trainer._update_pbar = update
