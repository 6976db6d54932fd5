"""Harvest throughput with 1 and 2 processes (torchrun, gloo on CPU / NCCL on GPUs) against a bare forward pass.

For each process count P the script launches `torchrun --standalone --nproc-per-node P` on itself; inside, rank 0
first times the bare forward (`model(pixels, stop_at_layer=...)` on preprocessed pixels in memory, one process,
the same images and batch size), then all ranks write the activation cache together (write_activation_cache:
image rendering/decoding, run_with_cache, token selection, Arrow shards, manifest) and rank 0 times it between
two barriers. Printed: images/s and tokens/s of the harvest, and its ratio to the bare forward of the same run.

    python benchmarks/harvest.py                                  # toy model, 512 images, CPU, 1 and 2 processes
    python benchmarks/harvest.py --device cuda --processes 1,8 --model open_clip:ViT-B-32/datacomp_xl_s13b_b90k \
        --images /data/imagenet/train --max-images 50000 --batch-size 256 --num-workers 8   # a GPU node

On CPU each process gets one thread (OMP_NUM_THREADS=1 unless set; torchrun's default for 2+), so the 2-process figure shows what a second core adds;
on a GPU node each process drives its own GPU (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One rank: (rank 0) the bare forward, then this rank's share of the harvest; rank 0 writes the timings."""
    import torch

    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.training import ActivationHarvester, image_source, write_activation_cache
    from sae_clip_plugin.training import distributed as dist_

    ranks = dist_.init_from_env(args.device)
    device = f"cuda:{ranks.local_rank}" if args.device == "cuda" else args.device
    model = HookedViT.from_pretrained(args.model, device=device).eval()
    hooks = args.hooks.split(",")
    source = image_source(args.images, max_images=args.max_images).with_transform(model.preprocess)
    harvester = ActivationHarvester(
        model, hooks, "all", batch_size=args.batch_size, num_workers=args.num_workers
    )
    bare = None
    if ranks.is_main:
        pixels = torch.stack([source[i] for i in range(len(source))])
        stop = harvester.stop_at_layer
        with torch.no_grad():
            model(pixels[: args.batch_size].to(device), stop_at_layer=stop)  # warm-up
            start = time.perf_counter()
            for i in range(0, len(pixels), args.batch_size):
                model(pixels[i : i + args.batch_size].to(device), stop_at_layer=stop)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            bare = time.perf_counter() - start
    dist_.barrier()
    start = time.perf_counter()
    cache = write_activation_cache(
        Path(args.cache), model, source, hooks, "all",
        shard_images=args.shard_images, harvester=harvester, progress=False, ranks=ranks,
    )  # fmt: skip
    dist_.barrier()
    seconds = time.perf_counter() - start
    if ranks.is_main:
        result = {
            "processes": ranks.world_size,
            "images": cache.n_images,
            "tokens": cache.n_images * cache.context_size,
            "seconds": seconds,
            "bare_seconds": bare,
        }
        Path(args.result).write_text(json.dumps(result))


def launch(args: argparse.Namespace, processes: int, folder: Path) -> dict:
    result = folder / f"result-{processes}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        __file__, "--worker", "--cache", str(folder / f"cache-{processes}"), "--result", str(result),
        "--model", args.model, "--images", args.images, "--max-images", str(args.max_images),
        "--hooks", args.hooks, "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
        "--shard-images", str(args.shard_images), "--device", args.device,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # torchrun sets one thread per process only for 2 or more; the same for 1, or the counts are not comparable
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {processes} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", default="toy")
    parser.add_argument("--max-images", type=int, default=512)
    parser.add_argument("--hooks", default="blocks.1.hook_resid_post,blocks.3.hook_resid_post")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--shard-images", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
        for processes in [int(p) for p in args.processes.split(",")]:
            rows.append(launch(args, processes, Path(tmp)))
    print(f"harvest of {args.max_images} images at {args.hooks} ({args.model}, {args.device}):")
    print("| processes | images/s | tokens/s | bare forward images/s (1 process) | harvest / bare |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        rate, bare = r["images"] / r["seconds"], r["images"] / r["bare_seconds"]
        print(
            f"| {r['processes']} | {rate:.1f} | {r['tokens'] / r['seconds']:.0f} | {bare:.1f} | {rate / bare:.2f} |"
        )
    print(
        "harvest / bare: the whole harvest (images rendered or decoded, run_with_cache, token selection, Arrow "
        "shards, manifest) against the model's forward alone on pixels in memory, one process; above 1 with 2 "
        "processes means the second process pays for itself. On a shared CPU the processes compete for cores."
    )


if __name__ == "__main__":
    main()
