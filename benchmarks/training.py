"""Throughput of the training pipeline against bare baselines measured in the same run.

1. SAE training tokens/s: VisionSAETrainingRunner training from the disk cache (sae_lens SAETrainer,
   mixing buffer, prefetch thread) vs a bare PyTorch loop training the same sae_lens TrainingSAE
   (same Adam, grad clipping, batch size) on the same activations held in one in-memory tensor.
   Goal: ratio >= 0.8.
2. Harvest images/s: ActivationHarvester (DataLoader workers, run_with_cache, token selection, copy to
   CPU) vs the HookedViT forward alone (`model(pixels, stop_at_layer=...)`) on already-preprocessed
   tensors in memory. Goal: ratio >= 0.9. Reported for preprocessed tensors and for PNG files
   (decoding + preprocessing in workers compete with the forward for the same CPU cores).

    python benchmarks/training.py                 # small random ViT, CPU
    python benchmarks/training.py --width 768 --layers 12 --image-size 224 --patch-size 32   # ViT-B/32 shape

Ratios are medians over adjacent (pipeline, baseline) pairs, so both sides of a pair see the same load
(the machine may be shared); best-of rates are printed too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from sae_clip_plugin import HookedViT
from sae_clip_plugin.training import (
    ActivationHarvester,
    TensorSource,
    VisionSAERunnerConfig,
    VisionSAETrainingRunner,
    image_source,
    write_activation_cache,
)


def build_model(args: argparse.Namespace) -> HookedViT:
    torch.manual_seed(0)
    vision = {
        "image_size": args.image_size,
        "patch_size": args.patch_size,
        "width": args.width,
        "layers": args.layers,
        "head_width": 64,
    }
    text = {"context_length": 8, "vocab_size": 100, "width": 64, "heads": 2, "layers": 1}
    clip = open_clip.CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text).eval()
    return HookedViT.from_open_clip(clip, model_spec="open_clip:benchmark-random").eval()


class _TimedRunner(VisionSAETrainingRunner):
    """Times only trainer.fit (no setup, cache build, evaluation or saving)."""

    fit_seconds = 0.0

    def _build_trainer(self, data_provider):
        super()._build_trainer(data_provider)
        fit = self.trainer.fit

        def timed_fit():
            start = time.perf_counter()
            out = fit()
            self.fit_seconds = time.perf_counter() - start
            return out

        self.trainer.fit = timed_fit


def bare_loop(sae_cls, sae_cfg, data: torch.Tensor, steps: int, batch: int, lr: float) -> float:
    """The same SAE trained by hand: slice, forward, backward, clip, Adam. Returns seconds."""
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    sae = sae_cls(sae_cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    coefficients = {name: getattr(c, "value", c) for name, c in sae.get_coefficients().items()}
    n_batches = data.shape[0] // batch
    start = time.perf_counter()
    for step in range(steps):
        i = step % n_batches
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=data[i * batch : (i + 1) * batch],
                coefficients=coefficients,
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def sae_training(args: argparse.Namespace, model: HookedViT, pixels: torch.Tensor, work: Path) -> dict:
    hook = f"blocks.{args.layers // 2 - 1}.hook_resid_post"
    cache_path = work / "cache"
    write_activation_cache(
        cache_path,
        model,
        TensorSource(pixels),
        [hook],
        "all",
        shard_images=256,
        batch_size=args.harvest_batch,
        progress=False,
    )
    steps, batch = args.sae_steps, args.batch_tokens
    cfg = dict(
        model_name="open_clip:benchmark-random",
        dataset_path="",  # train on the cached images alone
        hook_name=hook,
        cached_activations_path=str(cache_path),
        training_tokens=steps * batch,
        train_batch_size_tokens=batch,
        expansion_factor=args.expansion,
        lr_warm_up_steps=1,
        device="cpu",
        checkpoint_path=None,
        n_eval_images=8,
        overwrite_output=True,
        normalize_activations="none",
        output_path=str(work / "out"),
    )
    ours, bare = [], []
    for _ in range(args.repeats):  # adjacent (ours, bare) pairs share the machine's load of the moment
        runner = _TimedRunner(VisionSAERunnerConfig(**cfg))
        runner.run()
        ours.append(runner.fit_seconds)
        sae = runner.saes[hook]
        data = runner.cache.read(hook, 0, runner.cache.n_images).reshape(-1, sae.cfg.d_in)
        data = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))]
        sae_cls = type(sae)
        sae_cfg = sae.cfg
        bare.append(bare_loop(sae_cls, sae_cfg, data, steps, batch, runner.cfg.lr))
    tokens = steps * batch
    return {
        "hook": hook,
        "d_in": runner.saes[hook].cfg.d_in,
        "d_sae": runner.saes[hook].cfg.d_sae,
        "batch_tokens": batch,
        "steps": steps,
        "ours_tokens_per_s": tokens / min(ours),
        "bare_tokens_per_s": tokens / min(bare),
        "ratio_best": min(bare) / min(ours),
        "ratio": float(np.median([b / o for b, o in zip(bare, ours, strict=True)])),
    }


def write_pngs(pixels: torch.Tensor, folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(pixels.shape[0]):
        Image.fromarray(rng.integers(0, 256, (size + 16, size + 16, 3), dtype=np.uint8)).save(
            folder / f"{i:05d}.png"
        )


def harvesting(args: argparse.Namespace, model: HookedViT, pixels: torch.Tensor, work: Path) -> dict:
    hook = f"blocks.{args.layers // 2 - 1}.hook_resid_post"
    stop = args.layers // 2
    write_pngs(pixels, work / "pngs", args.image_size)
    folder = image_source(str(work / "pngs")).with_transform(model.preprocess)
    tensors = TensorSource(pixels)
    b = args.harvest_batch
    chunks = [pixels[i : i + b] for i in range(0, len(pixels), b)]

    def forward_alone() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for chunk in chunks:
                model(chunk, stop_at_layer=stop)
        return time.perf_counter() - start

    harvesters = {
        w: ActivationHarvester(model, [hook], "all", batch_size=b, num_workers=w) for w in {0, args.workers}
    }

    def harvest(source, workers: int) -> float:
        harvester = harvesters[workers]  # built (and its hooks probed) once, outside the timing
        start = time.perf_counter()
        for _ in harvester.iter_batches(source):
            pass
        return time.perf_counter() - start

    def harvest_and_cache(run: int) -> float:
        start = time.perf_counter()
        write_activation_cache(
            work / f"cache_h{run}",
            model,
            tensors,
            [hook],
            "all",
            shard_images=256,
            harvester=harvesters[0],
            progress=False,
        )
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"forward": [], "tensors": [], "pngs": [], "tensors+cache": []}
    ratios: dict[str, list[float]] = {"tensors": [], "pngs": [], "tensors+cache": []}
    forward_alone(), harvest(tensors, 0)  # warm-up: first calls pay for allocations and lazy init
    for run in range(args.harvest_repeats):  # each variant is paired with a forward run right before it
        for name, measure in (
            ("tensors", lambda: harvest(tensors, 0)),
            ("pngs", lambda: harvest(folder, args.workers)),
            ("tensors+cache", lambda run=run: harvest_and_cache(run)),
        ):
            reference = forward_alone()
            seconds = measure()
            times["forward"].append(reference)
            times[name].append(seconds)
            ratios[name].append(reference / seconds)
    n = len(pixels)
    return {
        "hook": hook,
        "images": n,
        "batch": b,
        "workers": args.workers,
        "images_per_s_best": {k: n / min(v) for k, v in times.items()},
        "images_per_s_median": {k: n / float(np.median(v)) for k, v in times.items()},
        "ratio_tensors": float(np.median(ratios["tensors"])),
        "ratio_pngs": float(np.median(ratios["pngs"])),
        "ratio_tensors_with_cache_write": float(np.median(ratios["tensors+cache"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--harvest-batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--sae-steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--harvest-repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 = steadiest on a shared machine)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    pixels = torch.randn(
        args.images, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0)
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sae = sae_training(args, model, pixels, work)
        harvest = harvesting(args, model, pixels, work)
    report = {
        "torch_threads": torch.get_num_threads(),
        "model": {
            "width": args.width,
            "layers": args.layers,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
        },
        "sae_training": sae,
        "harvest": harvest,
    }
    print(json.dumps(report, indent=2))
    print(
        f"SAE training from cache vs bare loop: {sae['ratio']:.2f} (goal >= 0.8; "
        f"{sae['ours_tokens_per_s']:.0f} vs {sae['bare_tokens_per_s']:.0f} tokens/s)"
    )
    print(
        f"harvest vs forward alone: tensors {harvest['ratio_tensors']:.2f}, PNG files {harvest['ratio_pngs']:.2f}, "
        f"tensors + cache write {harvest['ratio_tensors_with_cache_write']:.2f} (goal >= 0.9; forward "
        f"{harvest['images_per_s_median']['forward']:.1f} images/s)"
    )


if __name__ == "__main__":
    main()
