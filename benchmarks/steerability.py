"""Steerability: the fast path vs the naive per-feature full forward, same features and images (CPU, float32).

A random 12-layer open_clip ViT (patch 32, 224 px: 50 tokens, like ViT-B/32, but of modest width),
a random x64 SAE at blocks.6.hook_resid_post (as the paper's SAEs), the ImageNet class names as
vocabulary. All methods run in this process on the same inputs, one after the other:
- fast: `steerability(method="fast")` (prefix cached once, features x images batched, suffix only);
- naive: `steerability(method="naive")`, one full `run_with_hooks` forward per feature with our hook;
- naive (sae_lens splice): one full forward per feature with the SAE spliced by
  `HookedSAEViT.run_with_hooks_with_saes` and the feature clamped at `hook_sae_acts_post`, the way a
  sae_lens user writes it (its error term costs a second encode).
It checks that they give the same S / P / flags and prints the time ratios (goal >= 10x).

    python benchmarks/steerability.py [--width 256] [--layers 12] [--layer 6] [--features 24] [--images 32]
"""

from __future__ import annotations

import argparse
import os
import time

import open_clip
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from sae_clip_plugin import HookedSAEViT, HookedViT
from sae_clip_plugin.analysis.steerability.metric import metrics_from_shift, select_features, steerability
from sae_clip_plugin.analysis.vocabulary import load_vocabulary, readout_probabilities, text_embeddings

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}


def build(width: int, layers: int, expansion: int, layer: int) -> tuple[HookedViT, StandardSAE]:
    torch.manual_seed(0)
    vision = {"image_size": 224, "patch_size": 32, "width": width, "layers": layers, "head_width": 64}
    clip = open_clip.CLIP(embed_dim=width // 2, vision_cfg=vision, text_cfg=TEXT).eval()
    model = HookedViT.from_open_clip(clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"))
    sae = StandardSAE(StandardSAEConfig(d_in=width, d_sae=expansion * width))
    with torch.no_grad():  # features that fire on some tokens, as a trained SAE's do
        sae.b_enc.fill_(-0.5)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    return model, sae


def splice_naive(model: HookedViT, sae: StandardSAE, images, text, features, strength, batch: int = 64):
    """delta_bar per feature, the sae_lens way: splice with the error term, clamp at hook_sae_acts_post."""
    spliced = HookedSAEViT.from_hooked_vit(model)
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    clean = [readout_probabilities(spliced(b), text) for b in batches]
    rows = []
    for j in features:

        def clamp(acts, hook, j=j):
            acts[..., j] = strength
            return acts

        hook = (f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post", clamp)
        total = 0
        for b, p_clean in zip(batches, clean, strict=True):
            out = spliced.run_with_hooks_with_saes(b, saes=[sae], use_error_term=True, fwd_hooks=[hook])
            total = total + (readout_probabilities(out, text) - p_clean).double().sum(0)
        rows.append(total / len(images))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--layer", type=int, default=6, help="steer at blocks.<layer>.hook_resid_post")
    parser.add_argument("--expansion", type=int, default=64)
    parser.add_argument("--features", type=int, default=24)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument(
        "--batch-size", type=int, default=256, help="rows (features x images) per fast forward"
    )
    args = parser.parse_args()

    model, sae = build(args.width, args.layers, args.expansion, args.layer)
    images = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    words = load_vocabulary("imagenet")
    with torch.inference_mode():
        text = text_embeddings(model, words)  # once, shared by both methods (not timed)
        common = dict(features=args.features, strength=150.0, text=text, image_batch_size=64, seed=0)
        start = time.perf_counter()
        fast = steerability(model, sae, images, words, method="fast", batch_size=args.batch_size, **common)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        naive = steerability(model, sae, images, words, method="naive", **common)
        t_naive = time.perf_counter() - start
        features = select_features(sae.cfg.d_sae, args.features, seed=0)
        start = time.perf_counter()
        splice = metrics_from_shift(
            splice_naive(model, sae, images, text, features, 150.0), text, words, 0.10
        )
        t_splice = time.perf_counter() - start

    diff_s = max((fast.table["S"] - other["S"]).abs().max() for other in (naive.table, splice))
    diff_p = max((fast.table["P"] - other["P"]).abs().max() for other in (naive.table, splice))
    same_flags = all(bool((fast.table["steerable"] == o["steerable"]).all()) for o in (naive.table, splice))
    print(
        f"model: random {args.layers}-layer ViT, width {args.width}, 50 tokens; SAE x{args.expansion} "
        f"(d_sae {sae.cfg.d_sae}) at {sae.cfg.metadata.hook_name}; threads {torch.get_num_threads()}, cpu, float32"
    )
    print(
        f"{args.features} features x {args.images} images, vocabulary {len(words)} words, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"max |S fast - S naive*| = {diff_s:.2e}, max |P fast - P naive*| = {diff_p:.2e}, same flags: {same_flags}"
    )
    print(f"naive, our hook, one full forward per feature : {t_naive:8.2f} s")
    print(f"naive, sae_lens splice, per feature           : {t_splice:8.2f} s")
    print(f"fast, cached prefix + batched suffix          : {t_fast:8.2f} s")
    print(f"ratio naive (our hook) / fast        : {t_naive / t_fast:5.1f}x  (goal >= 10x)")
    print(f"ratio naive (sae_lens splice) / fast : {t_splice / t_fast:5.1f}x")


if __name__ == "__main__":
    main()
