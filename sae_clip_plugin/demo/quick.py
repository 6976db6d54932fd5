"""Small SAEs on the toy CLIP in seconds, for notebooks and examples (the demo's training path, tiny budgets).

from sae_clip_plugin.demo.quick import quick_toy_saes
saes = quick_toy_saes(model, layers=[3])          # {"blocks.3.hook_resid_post": sae_lens TopKSAE}
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the model class pulls in open_clip and transformers
    from sae_clip_plugin.model.hooked_vit import HookedViT


def quick_toy_saes(
    model: HookedViT,
    layers: Sequence[int] = (3,),
    architecture: str = "topk",
    *,
    hook_type: str = "hook_resid_post",
    n_images: int = 512,
    training_tokens: int = 64 * 1024,
    batch_tokens: int = 1024,
    expansion_factor: int = 4,
    k: int = 16,
    l1_coefficient: float = 5.0,
    lr: float = 1e-3,
    out: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train one SAE per layer on toy-world activations of `model`; returns {hook name: inference SAE}.

    The activations are harvested once into a disk cache under `out` (default: a temporary folder),
    so several epochs over a few hundred images cost one forward pass each; the SAEs are saved there in
    sae_lens format and loaded back with `SAE.load_from_disk`, exactly as a user would load them.
    """
    # lazy: the sae_lens trainer
    from sae_lens import SAE

    from sae_clip_plugin.training import VisionSAERunnerConfig, VisionSAETrainingRunner

    hooks = [f"blocks.{layer}.{hook_type}" for layer in layers]
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="toy_saes_"))
    common = dict(model_name=model.cfg.model_spec or "toy", hook_name=hooks, dataset_path="toy", max_images=n_images,
                  num_workers=0, expansion_factor=expansion_factor, training_tokens=training_tokens,
                  train_batch_size_tokens=batch_tokens, lr=lr, lr_warm_up_steps=max(1, training_tokens // batch_tokens // 10),
                  device=str(model.embed.W_E.device), output_path=str(root / "saes"), overwrite_output=True, checkpoint_path=None,
                  n_eval_images=32, seed=seed, prefetch_batches=0, n_batches_in_buffer=4, cached_activations_path=str(root / "cache"),
                  n_batches_for_norm_estimate=4)  # fmt: skip
    if architecture == "topk":
        cfg = VisionSAERunnerConfig.from_preset("topk", sae={"k": k}, **common)
    else:
        cfg = VisionSAERunnerConfig.from_dict({**common, "architecture": architecture,
                                               "sae": {"l1_coefficient": l1_coefficient}})  # fmt: skip
    runner = VisionSAETrainingRunner(cfg, override_model=model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exceeds the .* tokens of one pass.*")
        runner.run()
    device = str(model.embed.W_E.device)
    return {hook: SAE.load_from_disk(str(runner.output_dir(hook)), device=device).eval() for hook in hooks}
