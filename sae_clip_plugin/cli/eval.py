"""`sae-clip eval`: metrics of one SAE folder or a folder of SAE folders -> CSV, markdown table, figures.

sae-clip eval --sae out/saes/toy --images toy --out out/eval/toy
sae-clip eval --sae path/to/sae --images /data/imagenet-val-subset --max-images 2000 --out out/eval/b32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sae_clip_plugin.cli.options import (
    add_config,
    add_deprecated,
    add_device,
    add_model,
    add_out,
    add_sae,
    deprecation_message,
    sae_specs,
)


def _fits_in_memory(images: Any, max_images: int | None, cfg: Any, budget_gb: float) -> bool:
    """Whether the decoded pixels of the evaluated images fit in `budget_gb` (float32)."""
    try:
        n = len(images)
    except TypeError:
        return False
    n = min(n, max_images) if max_images else n
    return n * cfg.n_channels * cfg.image_size**2 * 4 <= budget_gb * 2**30


def run_eval(args: argparse.Namespace) -> int:
    """The `eval` subcommand."""

    from sae_clip_plugin.analysis.metrics.evaluate import evaluate_saes
    from sae_clip_plugin.data import load_labelled_images
    from sae_clip_plugin.pretrained.loading import (
        SAE_CONFIG_FILE,
        find_sae_folders,
        model_spec_from_metadata,
        sae_metadata,
    )
    from sae_clip_plugin.viz.metrics_report import load_metrics_results, write_metrics_results

    out = Path(args.out)
    if args.replot:
        title = (out / "metrics.md").read_text().splitlines()[0][2:]
        figures = write_metrics_results(load_metrics_results(out), out, title)
        print(f"redrew {len(figures)} figures in {out / 'figures'}")
        return 0
    if args.sae_positional:
        print(deprecation_message("the positional SAE argument", "--sae FOLDER"), file=sys.stderr)
    specs = sae_specs(args) + ([args.sae_positional] if args.sae_positional else [])
    if not specs:
        raise SystemExit("sae-clip eval: pass --sae FOLDER (an SAE or a folder of them), or --replot")
    if not args.images:
        raise SystemExit(
            "sae-clip eval: pass --images <folder with one subfolder per class> or a registered name (toy)"
        )
    from sae_clip_plugin import registry
    from sae_clip_plugin.model.device import resolve_device
    from sae_clip_plugin.model.hooked_sae_vit import HookedSAEViT

    device = resolve_device(args.device)
    # SAE folders are passed as folders: evaluate_saes loads them one at a time and reads their training settings
    saes: dict[str, Any] = {}
    for given in specs:
        root = Path(given)
        if root.is_dir() and any(root.rglob(SAE_CONFIG_FILE)):
            for folder in find_sae_folders(root):
                saes[str(folder.relative_to(root)) if folder != root else folder.name] = folder
        else:  # a Prisma .pt (or its folder) or RELEASE:SAE_ID
            saes[given] = given
    own = registry.world_model("eval_images", [args.images])
    if args.model:
        spec = args.model
    else:
        spec = model_spec_from_metadata((sae_metadata(s, device) for s in saes.values()), default=own)
    model = HookedSAEViT.from_pretrained(spec, device=device).eval()
    images, classnames, templates = load_labelled_images(args.images, args.max_images, seed=args.seed)
    if args.templates:
        templates = args.templates
    if _fits_in_memory(images, args.max_images, model.cfg, args.preload_gb):
        from sae_clip_plugin.analysis.zero_shot import materialize_images

        print("reading the images once into memory")
        images = materialize_images(images, model.preprocess, args.max_images, args.batch_size)
    source = args.images
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
    figures = write_metrics_results(df, out, title)
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
        "sae_positional", nargs="?", metavar="SAE", help=argparse.SUPPRESS
    )  # deprecated: use --sae
    add_sae(p)
    p.add_argument(
        "--images",
        help="labelled images: a folder with one subfolder per class (labels = sorted folders), or a registered "
        "evaluation set such as toy (shape images of the toy world)",
    )
    add_deprecated(p, "--toy", "--images toy", dest="images", nargs=0, const="toy")
    add_model(p, help_default="the SAEs' metadata model_name, else the --images world's model")
    add_out(p, default="out/eval")
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
    add_device(p)
    add_config(p)
    p.add_argument("--seed", type=int, default=4321, help="seed of the toy images")
    p.add_argument(
        "--replot", action="store_true", help="only redraw the figures of an existing --out folder"
    )
    p.set_defaults(func=run_eval)
