"""Our monosemanticity score ("full" variant) against sae-for-vlm's own metric.py on the same inputs.

sae-for-vlm (Pach et al. 2025, arXiv 2504.02821) ships its score as a script, not a package, and it moves tensors
to CUDA. This script writes random activations (ReLU'd, so that features have zeros, as an SAE's do) and
embeddings in the layout metric.py reads (`<dir>/acts_part0.pt`, one embeddings file), runs metric.py's `main` in a
separate Python process from the checkout (with `.cuda()` mapped to the CPU there, nothing else changed), and
prints the largest absolute difference per feature and the time of each.

    python docs/diagnostics/ms_vs_sae_for_vlm.py --checkout PATH/TO/sae-for-vlm [--python PY] [--images 400]

--python: an interpreter with torch and tqdm for the reference (default: this one); the checkout goes first on its
path, so its local `datasets` package shadows Hugging Face's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sae_clip_plugin.analysis.metrics.monosemanticity import monosemanticity_scores

RUNNER = """
import sys, torch
torch.Tensor.cuda = lambda self, *a, **k: self  # CPU-only machine: metric.py calls .cuda() on every chunk
sys.path.insert(0, {checkout!r})
import metric
args = metric.get_args_parser().parse_args(["--embeddings_path", {emb!r}, "--activations_dir", {acts!r},
                                            "--output_subdir", "ms", "--device", "cpu"])
metric.main(args)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="a clone of github.com/ExplainableML/sae-for-vlm")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    if not (Path(args.checkout) / "metric.py").is_file():
        raise SystemExit(f"{args.checkout} has no metric.py; pass --checkout of a sae-for-vlm clone")

    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(args.images, args.features, generator=g) - 1.0)
    emb = torch.randn(args.images, args.dim, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        acts_dir = Path(tmp) / "acts"
        acts_dir.mkdir()
        torch.save(acts, acts_dir / "acts_part0.pt")
        torch.save(emb, Path(tmp) / "emb.pt")
        code = RUNNER.format(checkout=str(Path(args.checkout).resolve()), emb=str(Path(tmp) / "emb.pt"),
                             acts=str(acts_dir))  # fmt: skip
        start = time.perf_counter()
        subprocess.run([args.python, "-c", code], check=True, capture_output=True, text=True)
        ref_seconds = time.perf_counter() - start
        ref = torch.load(acts_dir / "ms" / "all_neurons_scores.pth").double()
    start = time.perf_counter()
    ours = monosemanticity_scores(acts, emb, "full")
    our_seconds = time.perf_counter() - start
    same_nan = bool(torch.equal(ours.isnan(), ref.isnan()))
    diff = float((ours - ref).nan_to_num(0).abs().max())
    print(f"{args.images} images x {args.features} features, embeddings of {args.dim}")
    print(f"features scored: ours {int((~ours.isnan()).sum())}, metric.py {int((~ref.isnan()).sum())}, "
          f"same undefined ones: {same_nan}")  # fmt: skip
    print(f"max |ours - metric.py| = {diff:.3g}")
    print(f"time: metric.py {ref_seconds:.2f} s (its process, imports included), ours {our_seconds:.3f} s")


if __name__ == "__main__":
    main()
