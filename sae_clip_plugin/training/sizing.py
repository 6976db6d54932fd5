"""Size a run to the data it trains on: budget, batch, width, k, learning rate from the images and the model.

The paper's recipe (2.6M ImageNet images x 50 tokens, 4096-token batches, x64 width) run on a folder of 50 PNGs
means 40,000 passes over the images and 8,192 features for 3,250 tokens: hours, for an SAE that is mostly dead.
The `topk` preset sizes what the user did not set instead (`size_to_data` names those fields):

- training_tokens: 50 passes over the images, at most the paper's budget;
- train_batch_size_tokens: 4096, or for small sets the power of two below an eighth of a pass (at least 256);
- expansion_factor: the power of two below tokens-per-pass / (25 x d_in), between 4 and 64;
- sae.k: d_sae / 32, between 8 and 64;
- lr 3e-3 for runs under 5,000 steps (the paper's 4e-4 otherwise), warm-up a twentieth of the run (at most 200).

Measured on 50 PNGs of the toy world (d_in 128, 65 tokens): 162,500 tokens, batch 256, x4 (512 features), k 16,
EV 0.97 with 1.6% dead features in about 25 s on 2 CPU cores.
"""

from __future__ import annotations

import math
from typing import Any

PAPER_TRAINING_TOKENS = 2_600_000 * 50
SIZED_FIELDS = ("training_tokens", "train_batch_size_tokens", "expansion_factor", "sae.k", "lr", "lr_warm_up_steps",
                "lr_end", "dead_feature_window")  # fmt: skip


def _pow2_floor(x: float) -> int:
    return 2 ** math.floor(math.log2(max(x, 1)))


def sized_values(n_images: int, tokens_per_image: int, d_in: int, d_sae: int | None = None) -> dict[str, Any]:
    """What the rules above give for this many images, tokens per image and activation width (`d_sae`: the width
    when the user set it, which k then follows)."""
    per_pass = n_images * tokens_per_image
    tokens = min(PAPER_TRAINING_TOKENS, 50 * per_pass)
    batch = 4096 if per_pass >= 4096 * 64 else min(4096, max(256, _pow2_floor(per_pass / 8)))
    expansion = min(64, max(4, _pow2_floor(per_pass / (25 * d_in))))
    steps = tokens // batch
    return {
        "training_tokens": tokens,
        "train_batch_size_tokens": batch,
        "expansion_factor": expansion,
        "sae.k": min(64, max(8, (d_sae or expansion * d_in) // 32)),
        "lr": 4e-4 if steps >= 5000 else 3e-3,
        "lr_warm_up_steps": min(200, max(1, steps // 20)),
        "lr_end": None,  # derived again from lr
        "dead_feature_window": None,  # derived again from the number of steps
    }


def describe(values: dict[str, Any], n_images: int, tokens_per_image: int, streamed: bool = False) -> str:
    """One line for the user: what was chosen from their data (`streamed`: a stream of unknown length, sized to
    the images its budget reads once)."""
    shown = {k: v for k, v in values.items() if v is not None}
    parts = [f"{k}={v:,}" if isinstance(v, int) else f"{k}={v:g}" for k, v in shown.items()]
    what = f"{n_images} images" + (
        " (the budget's, read once: the stream's length is unknown)" if streamed else ""
    )
    return f"sized to {what} x {tokens_per_image} tokens: " + ", ".join(parts)
