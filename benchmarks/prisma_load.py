"""Our restricted checkpoint reader vs torch.load(weights_only=True) on the same Prisma-sized SAE file (CPU).

Prints the ratio measured in this run: restricted_torch_load / torch.load (what safety costs: our reader copies
the weights twice, from the archive record and into fresh tensors; torch.load once).

    python benchmarks/prisma_load.py [--d-in 768] [--expansion 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sae_clip_plugin.pretrained.unpickler import restricted_torch_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=768, help="SAE input width (ViT-B/32: 768)")
    parser.add_argument("--expansion", type=int, default=16, help="d_sae / d_in (the released SAEs: 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed loads of each reader (median)")
    args = parser.parse_args()
    d_in, d_sae = args.d_in, args.d_in * args.expansion
    state = {
        "W_enc": torch.randn(d_in, d_sae),
        "W_dec": torch.randn(d_sae, d_in),
        "b_enc": torch.randn(d_sae),
        "b_dec": torch.randn(d_in),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n_images_2600058.pt"
        torch.save({"cfg": None, "state_dict": state}, path)
        size = path.stat().st_size / 2**20

        def timed(load) -> float:
            load()
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                load()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        ours = timed(lambda: restricted_torch_load(path))
        torch_s = timed(lambda: torch.load(path, weights_only=True))
    print(f"file {size:.0f} MiB (d_in {d_in}, d_sae {d_sae})")
    print(f"restricted_torch_load {ours:.3f} s, torch.load(weights_only=True) {torch_s:.3f} s")
    print(f"ratio restricted / torch.load: {ours / torch_s:.2f}")


if __name__ == "__main__":
    main()
