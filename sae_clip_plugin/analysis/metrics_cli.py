"""`sae-clip eval`: metrics of one SAE folder or a folder of SAE folders -> CSV, markdown table, figures.

sae-clip eval out/saes/toy --toy --out out/eval/toy
sae-clip eval path/to/sae --images /data/imagenet-val-subset --max-images 2000 --out out/eval/b32
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sae_clip_plugin.atomic import atomic_write_text

# columns of the markdown summary (the CSV has every scalar)
SUMMARY_COLUMNS = (
    "name",
    "layer",
    "hook_type",
    "token_selection",
    "d_sae",
    "n_images",
    "explained_variance_all",
    "explained_variance_cls",
    "explained_variance_patches",
    "cos_sim_all",
    "l0_all",
    "l0_cls",
    "l0_patches",
    "dead_fraction",
    "dense_fraction_10",
    "top1_clean",
    "top1_spliced",
    "top1_spliced_err",
    "top1_mean_abl",
    "ce_clean",
    "ce_spliced",
    "ce_mean_abl",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "top1_recovered_mean",
    "embed_cos_spliced",
    "kl_spliced",
)


def toy_eval_images(n: int, seed: int = 4321) -> Any:
    """`n` labelled shape images of the toy world (the clean half of its typographic set), PIL items."""
    from sae_clip_plugin.toy import ToyDataset, toy_classnames, typographic_set

    typo = typographic_set(n, seed=seed)
    return ToyDataset(typo.samples[0::2], typo.labels[0::2], classnames=toy_classnames())


def _load_images(args: argparse.Namespace) -> tuple[Any, list[str] | None, list[str] | None]:
    """(image source, class names, templates) from --toy or --images."""
    if args.toy:
        from sae_clip_plugin.toy import toy_classnames, toy_templates

        n = args.max_images or 512
        return toy_eval_images(n, seed=args.seed), toy_classnames(), toy_templates()
    if not args.images:
        raise SystemExit("sae-clip eval: pass --images <folder with one subfolder per class> or --toy")
    from sae_clip_plugin.data import load_image_folder

    dataset = load_image_folder(args.images)
    return dataset, dataset.classnames, list(dataset.templates)


def _model_spec(args: argparse.Namespace, folders: list[Path]) -> str:
    if args.model:
        return args.model
    if args.toy:
        return "toy"
    specs = set()
    for folder in folders:
        meta = json.loads((folder / "cfg.json").read_text()).get("metadata") or {}
        if meta.get("model_name"):
            specs.add(meta["model_name"])
    if len(specs) != 1:
        raise SystemExit(
            f"sae-clip eval: cannot tell which model to load (SAE metadata model_name: {sorted(specs) or 'none'}); "
            "pass --model <spec>"
        )
    return specs.pop()


def _fits_in_memory(images: Any, max_images: int | None, cfg: Any, budget_gb: float) -> bool:
    """Whether the decoded pixels of the evaluated images fit in `budget_gb` (float32)."""
    try:
        n = len(images)
    except TypeError:
        return False
    n = min(n, max_images) if max_images else n
    return n * cfg.n_channels * cfg.image_size**2 * 4 <= budget_gb * 2**30


def write_results(df: Any, out: Path, title: str) -> list[Path]:
    """metrics.csv (every scalar), metrics.md (the summary columns), arrays.npz and the figures."""
    import numpy as np

    from sae_clip_plugin.analysis.metrics import ARRAY_KEYS, metrics_table, to_markdown
    from sae_clip_plugin.viz.metrics_figures import write_metrics_figures

    table = metrics_table(df)
    atomic_write_text(out / "metrics.csv", table.to_csv(index=False))
    atomic_write_text(out / "metrics.md", f"# {title}\n\n{to_markdown(table, SUMMARY_COLUMNS)}")
    arrays = {
        f"{row['name']}/{key}": np.asarray(row[key], dtype=float)
        for _, row in df.iterrows()
        for key in ARRAY_KEYS
        if key in row and row[key] is not None
    }
    with tempfile.NamedTemporaryFile(dir=out, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, out / "arrays.npz")
    return write_metrics_figures(df, out / "figures")


def load_results(out: str | os.PathLike) -> Any:
    """The DataFrame `write_results` wrote (metrics.csv with its arrays.npz entries put back)."""
    import numpy as np
    import pandas as pd

    out = Path(out)
    if not (out / "metrics.csv").is_file():
        raise FileNotFoundError(f"{out} has no metrics.csv; run `sae-clip eval ... --out {out}` first")
    df = pd.read_csv(out / "metrics.csv")
    with np.load(out / "arrays.npz") as arrays:
        for key in ("l0_by_position", "l0_patch_grid", "feature_density"):
            df[key] = [arrays.get(f"{n}/{key}") for n in df["name"]]
    return df


def run_eval(args: argparse.Namespace) -> int:
    """The `eval` subcommand."""
    import torch

    from sae_clip_plugin.analysis.metrics import evaluate_saes
    from sae_clip_plugin.pretrained.loading import find_sae_folders

    out = Path(args.out)
    if args.replot:
        figures = write_results(load_results(out), out, (out / "metrics.md").read_text().splitlines()[0][2:])
        print(f"redrew {len(figures)} figures in {out / 'figures'}")
        return 0
    if not args.sae:
        raise SystemExit("sae-clip eval: pass an SAE folder (or a folder of them), or --replot")
    from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT

    folders = find_sae_folders(args.sae)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = _model_spec(args, folders)
    model = HookedSAEViT.from_pretrained(spec, device=device).eval()
    images, classnames, templates = _load_images(args)
    if args.templates:
        templates = args.templates
    if _fits_in_memory(images, args.max_images, model.cfg, args.preload_gb):
        from sae_clip_plugin.analysis.zero_shot import materialize_images

        print("reading the images once into memory")
        images = materialize_images(images, model.preprocess, args.max_images, args.batch_size)
    root = Path(args.sae)
    saes = {str(f.relative_to(root)) if f != root else f.name: f for f in folders}
    source = "toy world" if args.toy else args.images
    print(f"evaluating {len(saes)} SAE(s) on {spec} ({device}), images: {source}")
    df = evaluate_saes(
        model,
        saes,
        images,
        classnames=classnames,
        templates=templates,
        batch_size=args.batch_size,
        max_images=args.max_images,
        downstream=not args.no_downstream,
        check_model=not args.no_check_model,
        progress=True,
    )
    title = f"SAE metrics ({spec}, {int(df['n_images'].iloc[0])} images of {source})"
    figures = write_results(df, out, title)
    print((out / "metrics.md").read_text())
    print(f"wrote {out}/metrics.csv, metrics.md, arrays.npz and {len(figures)} figures in {out / 'figures'}")
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval` to the main `sae-clip` parser."""
    p = subparsers.add_parser(
        "eval",
        help="metrics of SAEs (reconstruction, sparsity by token type, zero-shot) -> CSV, markdown, figures",
        description="Evaluate one SAE folder (sae_lens format) or every SAE folder under a folder.",
    )
    p.add_argument(
        "sae", nargs="?", help="an SAE folder (cfg.json + sae_weights.safetensors) or a folder of them"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="image folder with one subfolder per class (labels = sorted folders)")
    src.add_argument("--toy", action="store_true", help="labelled shape images of the toy world (model: toy)")
    p.add_argument("--model", help="model spec (default: the SAEs' metadata model_name; 'toy' with --toy)")
    p.add_argument("--out", default="out/eval", help="output folder (default: out/eval)")
    p.add_argument("--max-images", type=int, default=None, help="images to evaluate on (toy default: 512)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward (default %(default)s)")
    p.add_argument("--templates", nargs="+", help="zero-shot templates with '{}' (default: the data set's)")
    p.add_argument("--no-downstream", action="store_true", help="skip zero-shot / ablation passes")
    p.add_argument("--no-check-model", action="store_true", help="splice SAEs trained on another model spec")
    p.add_argument(
        "--preload-gb",
        type=float,
        default=2.0,
        help="read the images into memory once when their pixels fit in this many GiB (0: always stream)",
    )
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=4321, help="seed of the toy images")
    p.add_argument(
        "--replot", action="store_true", help="only redraw the figures of an existing --out folder"
    )
    p.set_defaults(func=run_eval)
