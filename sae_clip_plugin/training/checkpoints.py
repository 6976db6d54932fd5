"""Training checkpoints: which exist, which one a resume starts from, and the data position saved beside sae_lens'.

sae_lens writes the SAE and its trainer state (optimiser, schedulers, counters); this module adds the data position
(image order, the tokens waiting in the mixing buffer, the shuffle's RNG: `provider_buffer.safetensors`, then
`provider_state.json` last, whose presence marks a complete checkpoint) and restores all of it, so a resumed run
trains on the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from sae_clip_plugin.atomic import atomic_write, atomic_write_json

logger = logging.getLogger(__name__)

PROVIDER_STATE_FILENAME = "provider_state.json"  # written last: its presence marks a complete checkpoint
PROVIDER_BUFFER_FILENAME = "provider_buffer.safetensors"  # the tokens waiting in the mixing buffer


def existing_checkpoints(checkpoint_path: str | Path | None) -> list[Path]:
    """Checkpoint folders this package wrote under `checkpoint_path`, oldest (fewest tokens) first."""
    if checkpoint_path is None or not Path(checkpoint_path).is_dir():
        return []
    found = [p for p in Path(checkpoint_path).iterdir() if (p / PROVIDER_STATE_FILENAME).is_file()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def resolve_resume(checkpoint_path: str | None, resume_from: str | None) -> str | None:
    """The checkpoint folder a run resumes from ('latest' resolved), or None; never start over on top of an
    earlier run's checkpoints, nor resume from one that later ones would be overwritten by."""
    found = existing_checkpoints(checkpoint_path)
    if resume_from == "latest":
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint='latest' but {checkpoint_path} holds no checkpoint; drop the option "
                "to start a new run"
            )
        resume_from = str(found[-1])
    elif resume_from is not None and found:
        chosen = Path(resume_from).resolve()
        order = [p.resolve() for p in found]
        later = [p.name for p in order[order.index(chosen) + 1 :]] if chosen in order else []
        if later:
            raise FileExistsError(
                f"resuming from {chosen.name} would overwrite the later checkpoint(s) {later} in "
                f"{checkpoint_path} as the run passes them again; resume from the latest "
                "(--resume-from-checkpoint latest), move the later ones away, or set another checkpoint_path"
            )
    elif found and resume_from is None:
        raise FileExistsError(
            f"checkpoint_path {checkpoint_path} holds checkpoints of an earlier run (latest: {found[-1]}); "
            "resume it with --resume-from-checkpoint latest (resume_from_checkpoint='latest'), or choose another "
            "checkpoint_path; they are never overwritten"
        )
    if resume_from is not None and not Path(resume_from).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={resume_from} is not a checkpoint folder")
    return resume_from


def write_data_position(checkpoint: Path, provider: Any, consumed: int) -> None:
    """The provider's state after `consumed` batches (the ones trained on): buffer first, the JSON marker last."""
    tensors = provider.state_tensors(after_batches=consumed)
    atomic_write(checkpoint / PROVIDER_BUFFER_FILENAME, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(
        checkpoint / PROVIDER_STATE_FILENAME, {"provider": provider.state_dict(after_batches=consumed)}
    )


def restore(checkpoint: Path, trainer: Any, per_sae: dict[str, Any], provider: Any, batch_tokens: int) -> int:
    """Load sae_lens' trainer state and weights and our data position into `trainer` (a SAETrainer, or a
    MultiSAETrainer with `per_sae` its per-hook trainers) and `provider`; returns the training tokens done."""
    if len(per_sae) > 1:
        trainer.load_checkpoint(checkpoint)
    else:
        trainer.load_trainer_state(checkpoint)
        trainer.sae.load_weights_from_checkpoint(checkpoint)
    state_file = checkpoint / PROVIDER_STATE_FILENAME
    if state_file.is_file():
        buffer_file = checkpoint / PROVIDER_BUFFER_FILENAME
        tensors = load_file(buffer_file) if buffer_file.is_file() else None
        if tensors is None:
            logger.warning(
                "%s was written by an earlier release: the tokens then in the mixing buffer are skipped, so the "
                "resumed SAE will differ slightly from an uninterrupted run's",
                checkpoint,
            )
        provider.load_state_dict(json.loads(state_file.read_text())["provider"], tensors)
    # sae_lens saves a periodic checkpoint before counting the step it follows: count it, so the steps
    # (sparsity windows, step-dependent schedules) line up with the uninterrupted run's
    for each in {id(t): t for t in [trainer, *per_sae.values()]}.values():
        each.n_training_steps = each.n_training_samples // batch_tokens
    done = trainer.n_training_samples
    # sae_lens keeps thresholds already passed, which would re-checkpoint on the next steps
    trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= done]
    return done
