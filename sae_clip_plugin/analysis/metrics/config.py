"""EvalConfig: the settings of `sae-clip eval` (torch-free; `run_eval(cfg)` evaluates them)."""

from __future__ import annotations

from dataclasses import dataclass

from sae_clip_plugin.command_config import CommandConfig, option


@dataclass
class EvalConfig(CommandConfig):
    """Which SAEs to evaluate on which labelled images, and how."""

    sae: list[str] = option([], "SAE: a sae_lens folder, a folder of them, a Prisma .pt file, or RELEASE:SAE_ID; "
                            "repeatable", repeat=True)  # fmt: skip
    images: str | None = option(None, "images: a folder with one subfolder per class (labels = sorted folders), a "
                                "flat folder (no labels: reconstruction and sparsity only), or a registered evaluation "
                                "set such as toy (shape images of the toy world)")  # fmt: skip
    model: str | None = option(None, "model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, a registered name "
                               "such as toy, or random:<spec> (default: the SAEs' metadata model_name, else the "
                               "--images world's model)")  # fmt: skip
    out: str = option("out/eval", "output folder")
    max_images: int | None = option(None, "images to evaluate on (toy default: 512)")
    batch_size: int = option(32, "images per forward")
    templates: list[str] | None = option(
        None, "zero-shot templates with '{}' (default: the data set's)", nargs="+"
    )
    no_downstream: bool = option(False, "skip zero-shot / ablation passes")
    no_check_model: bool = option(False, "splice SAEs trained on another model spec")
    preload_gb: float = option(2.0, "read the images into memory once when their pixels fit in this many GiB "
                               "(0: always stream)")  # fmt: skip
    measures: list[str] = option([], "the field's vision-SAE measures to add: monosemanticity (Pach et al., arXiv "
                                 "2504.02821), localisation (Moran's I of patch maps), sparse_probing (AUC over k); "
                                 "as in ViSAEBench", nargs="+",
                                 choices=["monosemanticity", "localisation", "sparse_probing"])  # fmt: skip
    ms_variant: str = option("top16", "monosemanticity over each feature's top-n images (top16: ViSAEBench) or "
                             "over every pair of images (full: sae-for-vlm's metric.py)")  # fmt: skip
    ms_encoder: str = option("pixels", "the second image encoder of the monosemanticity score: pixels (a colour "
                             "histogram, model-free), self (the evaluated model: circular), or a model spec such as "
                             "open_clip:ViT-B-32/openai (the paper's choice)")  # fmt: skip
    device: str = option("auto", "torch device: auto (cuda when available, else cpu), cpu, cuda, ...")
    seed: int = option(4321, "seed of the toy images")
    replot: bool = option(False, "only redraw the figures of an existing --out folder")
