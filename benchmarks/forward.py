"""HookedViT forward vs open_clip encode_image on the same random ViT-B-32 and batch (CPU, float32).

Prints ratios measured in this run: HookedViT / open_clip (goal <= 1.10), and
run_with_cache(stop_at_layer=6) / full HookedViT forward.

    python benchmarks/forward.py [--model ViT-B-32] [--batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics

import open_clip
import torch
from timing import median_seconds  # benchmarks/timing.py (scripts run from their folder)

from sae_clip_plugin import HookedViT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    clip = open_clip.create_model(args.model).eval()
    model = HookedViT.from_open_clip(clip)
    x = torch.randn(args.batch, 3, model.cfg.image_size, model.cfg.image_size)
    mid = model.cfg.n_layers // 2
    with torch.inference_mode():
        assert (model(x) - clip.encode_image(x)).abs().max() <= 1e-5
        # interleave the two so machine load drifts affect both alike
        t_ref, t_ours = [], []
        for _ in range(args.repeats):
            t_ref.append(median_seconds(lambda: clip.encode_image(x), 1))
            t_ours.append(median_seconds(lambda: model(x), 1))
        ref, ours = statistics.median(t_ref), statistics.median(t_ours)
        cache_time = median_seconds(
            lambda: model.run_with_cache(
                x, names_filter=f"blocks.{mid - 1}.hook_resid_post", stop_at_layer=mid
            ),
            args.repeats,
        )
    print(f"model {args.model}, batch {args.batch}, threads {torch.get_num_threads()}, device cpu, float32")
    print(f"open_clip encode_image      : {ref * 1e3:8.1f} ms")
    print(f"HookedViT forward           : {ours * 1e3:8.1f} ms")
    print(f"run_with_cache(stop_at={mid:>2})  : {cache_time * 1e3:8.1f} ms")
    print(f"ratio HookedViT / open_clip : {ours / ref:.3f}  (goal <= 1.10)")
    print(
        f"ratio stop_at_layer={mid} / full: {cache_time / ours:.3f}  (ideal ~{mid / model.cfg.n_layers:.2f})"
    )


if __name__ == "__main__":
    main()
