"""Is this run worth it, and is its SAE usable? The budget check before training and the verdict after it.

Before: a budget that passes over the images hundreds of times (the paper's ImageNet budget on a folder of 50
PNGs) is refused with the numbers and the flags that fix it. After: one line that says whether the SAE is usable
(explained variance >= 0.8 and fewer than 10% dead features, the bars of a newcomer's first SAE) and, when it is
not, what to change.
"""

from __future__ import annotations

import warnings
from typing import Any

GOOD_EV, MAX_DEAD = 0.8, 0.10


def check_epochs(
    training_tokens: int, n_images: int, tokens_per_image: int, max_epochs: float, warn: bool = True
) -> float:
    """The epochs the budget means; above `max_epochs` a ValueError naming the fixes, above one a warning (unless
    `warn` is off: a budget sized to the data passes over it on purpose)."""
    per_pass = n_images * tokens_per_image
    epochs = training_tokens / per_pass
    if epochs > max_epochs:
        suggested = int(min(max_epochs, 50) * per_pass)
        raise ValueError(
            f"training_tokens={training_tokens:,} is {epochs:,.0f} passes over your {n_images} images "
            f"({per_pass:,} tokens each pass), more than max_epochs={max_epochs:g}: lower --training-tokens (e.g. "
            f"{suggested:,}), add images, or raise --max-epochs to train anyway"
        )
    if epochs > 1 and warn:
        warnings.warn(
            f"training_tokens ({training_tokens}) exceeds the {per_pass} tokens of one pass over {n_images} images; "
            f"images will be reused for {epochs:.1f} epochs",
            stacklevel=3,
        )
    return epochs


def verdict(metrics: dict[str, Any], architecture: str) -> str:
    """One line on an SAE's final evaluation: usable, or what to change (explained variance, dead features)."""
    ev = metrics.get("explained_variance")
    dead = metrics.get("dead_fraction_eval", metrics.get("dead_fraction_train"))
    said = []
    if ev is not None:
        said.append(f"EV {ev:.3f}")
    if dead is not None:
        said.append(f"dead {100 * dead:.1f}%")
    fixes = []
    if ev is not None and ev < GOOD_EV:
        fixes.append(f"EV below {GOOD_EV}: train longer (--training-tokens), widen the SAE (--expansion-factor) or, "
                     "for TopK, raise k (--set sae.k=...)")  # fmt: skip
    if dead is not None and dead > MAX_DEAD:
        topk = architecture in ("topk", "batchtopk", "matryoshka_batchtopk")
        fix = (
            "use --preset topk (unit decoder rows at init, a 4x auxiliary loss) or lower the width"
            if topk
            else "lower the L1 coefficient (--set sae.l1_coefficient=...) or the width"
        )
        fixes.append(f"over {100 * MAX_DEAD:.0f}% dead: {fix}")
    head = ", ".join(said) or "no evaluation"
    if not fixes:
        return f"{head}: usable (EV >= {GOOD_EV}, dead <= {100 * MAX_DEAD:.0f}%)"
    return f"{head}: " + "; ".join(fixes)
