"""What a training run on a streamed image set checks before it starts, and the plan it prints.

A stream has no image list and, unless it declares one (a sizes.json beside WebDataset shards, the hub's split
info), no length. So: no activation cache (the cache lists its images before writing), no held-out tail, no
"first N images"; the budget is what bounds the run (training_tokens), and the epoch check waits for the end of the
first pass when the length is unknown.
"""

from __future__ import annotations

import math
from typing import Any

from sae_clip_plugin.training.streaming import StreamingImages, stream_source


def check_stream_config(cfg: Any, spec: Any) -> None:
    """Refuse the settings a stream cannot honour, each with the fix."""
    name = spec if isinstance(spec, str) else getattr(spec, "name", "stream")
    if cfg.cached_activations_path is not None:
        raise ValueError(
            f"--images {name} is a stream, which the activation cache cannot hold yet (it lists its images before "
            "writing); drop --cache-path to train live from the stream (images decoded on the fly, never stored)"
        )
    if cfg.eval_holdout:
        raise ValueError(
            f"eval_holdout keeps the last images out of training, which a stream ({name}) does not know in advance; "
            "drop it (the evaluation then uses the stream's first --n-eval images)"
        )
    if cfg.max_images is not None:
        raise ValueError(
            f"--max-images keeps the first N images of a list; a stream ({name}) is bounded by the budget instead: "
            "drop --max-images and set --training-tokens"
        )


def open_stream(cfg: Any, spec: Any) -> StreamingImages:
    """The stream `--images` names (or the StreamingImages given), its shard order shuffled per pass when
    shuffle_images is on."""
    stream = (
        spec
        if isinstance(spec, StreamingImages)
        else stream_source(spec, cfg.dataset_split, cfg.image_column)
    )
    stream.shuffle_seed = cfg.seed if cfg.shuffle_images else None
    return stream


def sizing_images(cfg: Any, n_images: int | None, tokens_per_image: int, spec: Any) -> int:
    """The image count the topk preset sizes to: the declared length, else the images the budget reads once."""
    if n_images is not None:
        return n_images
    if "training_tokens" in cfg.size_to_data:
        raise ValueError(
            f"the stream {spec} does not declare its length, so the topk preset cannot size the budget to it: set "
            "--training-tokens (e.g. 50 passes: 50 x images x tokens per image), or put a sizes.json "
            "({shard file name: samples}, open_clip's convention) beside the shards"
        )
    return max(1, math.ceil(cfg.training_tokens / tokens_per_image))


def stream_plan(stream: StreamingImages, n_images: int | None, tokens_per_image: int, cfg: Any) -> str:
    """One line before any work: what the stream is, and what bounds the run."""
    what = stream.describe()
    head = f"stream plan: {what.get('spec') or stream.name}"
    if "n_shards" in what:
        head += f" ({what['n_shards']} shards)"
    budget = f"training_tokens={cfg.training_tokens:,}"
    images = math.ceil(cfg.training_tokens / tokens_per_image)
    if n_images is None:
        return (
            f"{head}: length unknown in advance; the run reads {budget} = {images:,} images x {tokens_per_image} "
            f"tokens, one pass if the stream holds that many, further passes otherwise (checked against "
            f"--max-epochs {cfg.max_epochs:g} when the first pass ends); nothing is stored"
        )
    passes = cfg.training_tokens / (n_images * tokens_per_image)
    return (
        f"{head}: {n_images:,} images declared; {budget} = {images:,} images x {tokens_per_image} tokens, "
        f"{passes:.2f} passes; nothing is stored"
    )
