"""The VisionSAERunnerConfig fields that `sae-clip train` has a flag for, declared with their flag and help.

Torch-free (`sae-clip --help` reads them without loading torch); VisionSAERunnerConfig (config.py) inherits them.
The flags keep the vocabulary shared by every command (--model, --images, --out, --device, --max-images, --n-eval),
the fields keep sae_lens' runner names (model_name, dataset_path, output_path, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_clip_plugin.command_config import option


@dataclass
class TrainingFlags:
    """The flagged fields of a training run (defaults: the paper's vanilla recipe; see VisionSAERunnerConfig)."""

    model_name: str = option(
        "open_clip:ViT-B-32/datacomp_xl_s13b_b90k",
        "model spec, e.g. open_clip:ViT-B-32/datacomp_xl_s13b_b90k or toy (docs/conventions.md)",
        flag="--model",
    )
    token_selection: str = option(
        "all", "tokens the SAE trains on: all | cls | patches (CLS is token 0)", flag="--token-selection"
    )
    dataset_path: str = option(
        "",
        "images: a folder, a datasets save_to_disk folder, hf:<hub name>, a registered name such as toy, or "
        "WebDataset shards streamed: wds:/data/shard-{000..099}.tar (docs/distributed.md)",
        flag="--images",
    )
    streaming: bool = option(
        False,
        "read --images hf:<name> as a stream (datasets' streaming=True): decoded on the fly, never stored; "
        "WebDataset shards (wds:<pattern> or a .tar glob / brace range) always stream (docs/distributed.md)",
        flag="--streaming",
    )
    max_images: int | None = option(None, "keep the first N images", flag="--max-images")
    harvest_batch_size: int = option(64, "images per ViT forward", flag="--harvest-batch-size")
    num_workers: int = option(
        2, "DataLoader processes decoding and preprocessing images", flag="--num-workers"
    )
    cached_activations_path: str | None = option(
        None,
        "activation cache folder (sae_lens layout), built or resumed first, then read",
        flag="--cache-path",
    )
    ignore_free_space: bool = option(
        False,
        "start the harvest even when the plan printed before it (bytes per hook) exceeds the cache disk's free space",
        flag="--ignore-free-space",
    )
    cache_dtype: str = option(
        "float32",
        "float32 | float16 | bfloat16 (bfloat16: readable by this package only)",
        flag="--cache-dtype",
    )
    architecture: str = option(
        "standard",
        "standard | topk | batchtopk | matryoshka_batchtopk | jumprelu | gated",
        flag="--architecture",
    )
    expansion_factor: int = option(64, "d_sae = expansion_factor * d_in", flag="--expansion-factor")
    d_sae: int | None = option(None, "SAE width (overrides --expansion-factor)", flag="--d-sae")
    normalize_activations: str | None = option(
        None,
        "none | layer_norm | expected_average_only_in | ... (unset: layer_norm for the vanilla family, expected_average_only_in for TopK)",
        flag="--normalize-activations",
    )
    training_tokens: int = option(
        2_600_000 * 50,
        "training budget in tokens (the paper: ~2.6M images x 50 tokens)",
        flag="--training-tokens",
    )
    train_batch_size_tokens: int = option(4096, "tokens per training batch", flag="--train-batch-size-tokens")
    lr: float = option(4e-4, "learning rate", flag="--lr")
    lr_warm_up_steps: int = option(200, "linear warm-up steps", flag="--lr-warm-up-steps")
    device: str = option("auto", "auto (cuda when available) | cpu | cuda", flag="--device")
    seed: int = option(42, "random seed", flag="--seed")
    output_path: str = option("sae_output", "where the SAE folder(s) go", flag="--out")
    overwrite_output: bool = option(False, "replace an existing output folder", flag="--overwrite-output")
    checkpoint_path: str | None = option(
        "auto",
        "where checkpoints and eval_log.json go (auto: <out>/checkpoints; null: none)",
        flag="--checkpoint-path",
    )
    n_checkpoints: int = option(0, "evenly spaced checkpoints, as sae_lens", flag="--n-checkpoints")
    checkpoint_every_tokens: int | None = option(
        None, "a checkpoint every N training tokens", flag="--checkpoint-every-tokens"
    )
    resume_from_checkpoint: str | None = option(
        None, "checkpoint folder to resume from, or latest", flag="--resume-from-checkpoint"
    )
    n_eval_images: int = option(
        64,
        "images for the vision evaluation: the source's first ones (in-sample), or its last ones with eval_holdout",
        flag="--n-eval",
    )
    max_epochs: float = option(
        100.0,
        "refuse a budget that passes over the images more often than this (a 130M-token budget on 50 images is "
        "40,000 epochs: hours for an overfit SAE); raise it to train anyway",
        flag="--max-epochs",
    )
