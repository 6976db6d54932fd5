"""DecomposeConfig: the settings of `sae-clip decompose` (torch-free; `decompose_task(cfg)` runs them)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_clip_plugin.command_config import CommandConfig, option


@dataclass
class DecomposeConfig(CommandConfig):
    """Which model and image set to decompose into per-head direct effects, and how many TextSpan texts."""

    model: str = option("toy", "model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, a registered name "
                        "such as toy, or random:<spec>")  # fmt: skip
    task: str = option("toy-typographic", "image set, as in `sae-clip disentangle --task`")
    out: str | None = option(None, "output folder", required=True)
    texts: str | None = option(None, "TextSpan texts: a registered text bank (toy) | imagenet | a word-per-line file "
                               "(default: the model's registered text bank, else imagenet)")  # fmt: skip
    n_texts: int = option(3, "TextSpan texts per head")
    n_select: int | None = option(None, "selection split size: toy pairs / images per group (default: the "
                                  "task's)")  # fmt: skip
    word_placement: str | None = option(None, "toy-typographic: where the word is written (default: beside)",
                                        choices=["beside", "anywhere"])  # fmt: skip
    seed: int = option(0, "seed of the image sets")
    batch_size: int = option(16, "images per forward")
    device: str = option("auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, ...")
