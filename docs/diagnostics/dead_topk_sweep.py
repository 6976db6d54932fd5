"""Dead TopK features on the demo's budget (docs/toy_results.md, "Dead TopK features on the demo's budget").

The demo's TopK training (3 layers of the toy CLIP, 2,000 toy images, 409,600 tokens in batches of 2,048, k = 16,
expansion 4, seed 0) with four settings varied; prints the explained variance and the dead fraction on 64 held-out
images per layer. Not run by the tests.

    python docs/diagnostics/dead_topk_sweep.py --window 20 --aux 4 --decoder-init-norm 1 --lr 3e-3
    python docs/diagnostics/dead_topk_sweep.py --window 1000 --aux 1 --decoder-init-norm 0.1 --lr 1e-3   # sae_lens' defaults
"""

from __future__ import annotations

import argparse
import json

from sae_clip_plugin.training.config import VisionSAERunnerConfig
from sae_clip_plugin.training.runner import VisionSAETrainingRunner

HOOKS = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post", "blocks.5.hook_resid_post"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--window", type=int, default=None, help="dead_feature_window (default: the runner's)"
    )
    parser.add_argument("--aux", type=float, default=1.0, help="aux_loss_coefficient")
    parser.add_argument("--decoder-init-norm", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--out", default="out/dead_topk_sweep")
    args = parser.parse_args()
    extra = {} if args.window is None else {"dead_feature_window": args.window}
    name = f"w{args.window}_a{args.aux}_d{args.decoder_init_norm}_lr{args.lr}"
    cfg = VisionSAERunnerConfig.from_preset(
        "topk", sae={"k": 16, "aux_loss_coefficient": args.aux}, model_name="toy", hook_name=HOOKS,
        token_selection="all", dataset_path="toy", max_images=2000, harvest_batch_size=64, num_workers=0,
        cached_activations_path=f"{args.out}/cache", cache_dtype="float16", cache_shard_images=500, expansion_factor=4,
        training_tokens=409_600, train_batch_size_tokens=2048, lr=args.lr, lr_warm_up_steps=20, device="cpu",
        output_path=f"{args.out}/{name}", overwrite_output=True, checkpoint_path=None,
        n_eval_images=args.eval_images, seed=0, prefetch_batches=0, n_batches_in_buffer=4,
        decoder_init_norm=args.decoder_init_norm, **extra,
    )  # fmt: skip
    runner = VisionSAETrainingRunner(cfg)
    runner.run()
    final = runner.eval_log[-1]["metrics"]
    keep = ("explained_variance", "dead_fraction_eval")
    print(name, json.dumps({h: {k: round(v, 4) for k, v in m.items() if k in keep} for h, m in final.items()
                            if isinstance(m, dict)}))  # fmt: skip


if __name__ == "__main__":
    main()
