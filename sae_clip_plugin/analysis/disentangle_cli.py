"""`sae-clip disentangle`: suppress spurious SAE features across layers -> CSV, markdown, PNG per task.

    sae-clip disentangle --saes out/saes/toy --task toy-typographic --task toy-background --out out/dis/toy
    sae-clip disentangle --saes b32-saes --task celeba=/data/celeba --task waterbirds=/data/wb --out out/dis/b32

Tasks: toy-typographic | toy-background | toy-colour (the toy world), celeba=ROOT (select on train,
evaluate on val, both group-balanced), waterbirds=ROOT (select on val, evaluate on test, balanced),
typo-folder=DIR (RTA-100 / PAINT naming, split in halves), typo-generate=IMAGE_FOLDER (writes wrong
class names on a class-per-subfolder image set, keeps the clean twins, split in halves).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_clip_plugin.analysis.disentangle_text import INTERVAL_NOTE, TABLE_KEYS
from sae_clip_plugin.atomic import atomic_write_json, atomic_write_text

# ------------------------------------------------------------------------------------------------
# inputs


def load_saes(paths: Sequence[str], pretrained: Sequence[str], device: str) -> dict[str, Any]:
    """hook name -> SAE from SAE folders (or folders of them) and `release:sae_id` pretrained names."""
    from sae_clip_plugin.pretrained.loading import load_saes as resolve

    saes: dict[str, Any] = {}
    loaded = [found for root in paths for found in resolve(root, device)]
    for name in pretrained:
        if ":" not in name:
            raise ValueError(f"--pretrained expects RELEASE:SAE_ID, got {name!r}")
        loaded += resolve(name, device)
    for where, sae in loaded:
        hook = sae.cfg.metadata.hook_name
        if not hook:
            raise ValueError(
                f"the SAE at {where} has no metadata.hook_name; cannot tell where to suppress features"
            )
        if hook in saes:
            raise ValueError(f"two SAEs for {hook} ({where} and another); pass one SAE per hook")
        saes[hook] = sae.eval()
    if not saes:
        raise ValueError(
            "no SAEs given: pass --saes FOLDER (one SAE per layer) or --pretrained RELEASE:SAE_ID"
        )
    return saes


def check_saes(model: Any, saes: dict[str, Any], check_model: bool) -> None:
    """Refuse SAEs made for another model or hook width (as HookedSAEViT.add_sae does)."""
    from sae_clip_plugin.model.sae_splice import check_sae_metadata

    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ValueError(f"the SAE for {hook!r} names a hook this model does not have")
        check_sae_metadata(sae, model.cfg, hook, check_model)


def _model_spec(args: argparse.Namespace, saes: dict[str, Any]) -> str:
    if args.model:
        return args.model
    specs = {s.cfg.metadata.get("model_name") for s in saes.values()} - {None}
    if len(specs) == 1:
        return specs.pop()
    if all(t.startswith("toy-") for t in args.task):
        return "toy"
    raise ValueError(
        f"cannot tell which model to load (SAE model_name: {sorted(specs) or 'none'}); pass --model SPEC"
    )


def build_task(model: Any, spec: str, args: argparse.Namespace) -> Any:
    """A SpuriousTask from a --task value."""
    from sae_clip_plugin.analysis import disentangle_tasks as T

    name, _, root = spec.partition("=")
    common = {"spurious_by": args.spurious_by, "batch_size": args.batch_size}
    if name in T.TOY_TASKS:
        return T.toy_task(model, name, n_select=args.n_select or 300, n_eval=args.n_eval or 300, seed=args.seed,
                          spurious_by=args.spurious_by, placement=args.word_placement)  # fmt: skip
    if not root:
        raise ValueError(f"task {spec!r}: expected one of {T.TOY_TASKS} or NAME=PATH (celeba, waterbirds, "
                         "typo-folder, typo-generate)")  # fmt: skip
    if name == "celeba":
        from sae_clip_plugin.data import load_celeba

        sel = load_celeba(root, "train", balanced=True, n_per_group=args.n_select, seed=args.seed)
        ev = load_celeba(root, "val", balanced=True, n_per_group=args.n_eval, seed=args.seed)
        return T.task_from_datasets(model, sel, ev, kind="groups", name="celeba", **common)
    if name == "waterbirds":
        from sae_clip_plugin.data import load_waterbirds

        sel = load_waterbirds(root, "val", balanced=True, n_per_group=args.n_select, seed=args.seed)
        ev = load_waterbirds(root, "test", balanced=True, n_per_group=args.n_eval, seed=args.seed)
        return T.task_from_datasets(model, sel, ev, kind="groups", name="waterbirds", **common)
    if name == "typo-folder":
        from sae_clip_plugin.data import load_typographic_folder

        ds = load_typographic_folder(root)
        return T.task_from_dataset(model, ds, kind="typographic", seed=args.seed, name=name, **common)
    if name == "typo-generate":
        from sae_clip_plugin.data import TypographicConfig, load_image_folder, make_typographic_dataset

        base = load_image_folder(root)
        ds = make_typographic_dataset(base, TypographicConfig(size=model.cfg.image_size, seed=args.seed))
        return T.task_from_dataset(model, ds, kind="typographic", seed=args.seed, name=name, **common)
    raise ValueError(
        f"unknown task {name!r}; use {T.TOY_TASKS}, celeba=, waterbirds=, typo-folder= or typo-generate="
    )


# ------------------------------------------------------------------------------------------------
# outputs


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    from sae_clip_plugin.viz.report import markdown_table

    return markdown_table(header, rows)


def task_markdown(result: Any, task: Any, command: str) -> str:
    """The markdown section of one task: chosen settings against baselines, then accuracy by layer."""
    kind = result.kind
    keys = TABLE_KEYS[kind]
    s = result.summary
    out = [
        f"## {result.task} ({kind})",
        "",
        f"Selection split: {len(task.select)} images; evaluation split: {len(task.evaluate)} images (disjoint). "
        "Features, k, the layer and the head count are chosen on the selection split; numbers are on the "
        "evaluation split.",
        "",
    ]

    from sae_clip_plugin.analysis.disentangle_text import summary_cells, verdict_text

    def cells(row: dict[str, Any]) -> list[str]:
        return summary_cells(row, keys)

    rows = [["none", "", "", *cells(s["none"])]]
    if "sae" in s:
        rows.append(["SAE features suppressed", s["sae"]["layer"], f"k={s['sae']['k']}", *cells(s["sae"])])
    if "random" in s:
        rows.append(["random features (same layer, k)", s["random"]["layer"], f"k={s['random']['k']}",
                     *cells(s["random"])])  # fmt: skip
    if "heads" in s:
        rows.append(["head ablation (CLS)", "", s["heads"]["heads"], *cells(s["heads"])])
    out += [_md_table(["condition", "layer", "setting", *keys], rows), ""]
    out += [INTERVAL_NOTE, ""]
    if "sae" in s:
        out += [verdict_text(s, kind), ""]
        out += [
            f"Best layer: {s['sae']['layer']} (`{s['sae']['hook']}`), features {s['sae']['features']}.",
            "",
        ]
    by_layer = []
    k_per_layer = result.best.get("k_per_layer", {})
    ev = result.eval_rows()
    for layer, k in sorted(k_per_layer.items()):
        sae_row = next((r for r in ev if r["condition"] == "sae" and r["layer"] == layer and r["k"] == k), {})
        rnd = next((r for r in ev if r["condition"] == "random" and r["layer"] == layer and r["k"] == k), {})
        by_layer.append([layer, k, *[sae_row.get(x) for x in keys[:2]], *[rnd.get(x) for x in keys[:2]]])
    if by_layer:
        out += ["### By layer (k chosen per layer on the selection split)", ""]
        out += [
            _md_table(
                ["layer", "k", *[f"SAE {x}" for x in keys[:2]], *[f"random {x}" for x in keys[:2]]], by_layer
            ),
            "",
        ]
    out += [f"Command: `{command}`", ""]
    return "\n".join(out)


def write_outputs(results: Sequence[tuple[Any, Any]], out: Path, command: str) -> list[Path]:
    """disentangle.csv (every row), disentangle.md, summary.json and accuracy_by_layer_<task>.png."""
    import pandas as pd

    from sae_clip_plugin.viz.disentangle_figures import plot_accuracy_by_layer

    written = []
    rows = [r for result, _ in results for r in result.rows]
    atomic_write_text(out / "disentangle.csv", pd.DataFrame(rows).to_csv(index=False))
    md = ["# Disentanglement: suppressing spurious SAE features", ""]
    md += [task_markdown(result, task, command) for result, task in results]
    atomic_write_text(out / "disentangle.md", "\n".join(md))
    summary = {result.task: {"summary": result.summary, "best": result.best} for result, _ in results}
    atomic_write_json(out / "summary.json", summary, indent=1, default=str)
    written += [out / "disentangle.csv", out / "disentangle.md", out / "summary.json"]
    for result, _ in results:
        png = out / f"accuracy_by_layer_{result.task.replace('/', '_')}.png"
        heads = result.best.get("heads", {}).get("heads")
        plot_accuracy_by_layer(result.rows, result.kind, result.best.get("k_per_layer"), heads=heads,
                               title=result.task, path=png)  # fmt: skip
        written.append(png)
    return written


# ------------------------------------------------------------------------------------------------
# command


def config_from_args(args: argparse.Namespace) -> Any:
    from sae_clip_plugin.analysis.disentangle_eval import DisentangleConfig

    return DisentangleConfig(
        ks=tuple(args.k), method=args.method, select_tokens=args.select_tokens, pool=args.pool,
        suppress_tokens=args.suppress_tokens, n_random=args.n_random, n_heads=tuple(args.n_heads),
        head_layers=tuple(args.head_layers) if args.head_layers else None, max_clean_drop=args.max_clean_drop,
        batch_size=args.batch_size,
    )  # fmt: skip


def run_disentangle_command(args: argparse.Namespace) -> int:
    import torch

    from sae_clip_plugin.analysis.disentangle_eval import run_disentangle
    from sae_clip_plugin.model.hooked_vit import HookedViT

    torch.manual_seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        cfg = config_from_args(args)
        saes = load_saes(args.saes or [], args.pretrained or [], device)
        spec = _model_spec(args, saes)
        model = HookedViT.from_pretrained(spec, device=device).eval()
        check_saes(model, saes, not args.no_check_model)
    except (ValueError, FileNotFoundError) as err:
        print(f"sae-clip disentangle: {err}", file=sys.stderr)
        return 2
    command = getattr(args, "command_line", "sae-clip disentangle")
    print(f"model {spec} on {device}; {len(saes)} SAE(s): {', '.join(saes)}")
    results = []
    for task_spec in args.task:
        task = build_task(model, task_spec, args)
        result = run_disentangle(model, saes, task, cfg, progress=not args.no_progress)
        results.append((result, task))
        print(json.dumps(result.summary, indent=1, default=str) if args.json else summary_line(result))
    out = Path(args.out)
    for path in write_outputs(results, out, command):
        print(f"wrote {path}")
    return 0


def summary_line(result: Any) -> str:
    """One human line per task: each condition's main accuracies (percent), as in the markdown table."""
    keys = TABLE_KEYS[result.kind][:2]
    parts = []
    for condition in ("none", "sae", "random", "heads"):
        row = result.summary.get(condition)
        if not row:
            continue
        where = f" L{row['layer']} k={row['k']}" if "k" in row and "layer" in row else ""
        values = " / ".join(f"{100 * row[k]:.1f}" for k in keys if k in row)
        parts.append(f"{condition}{where}: {values}")
    return f"{result.task} ({' / '.join(keys)}, %): " + "; ".join(parts)


def register_commands(subparsers: Any) -> None:
    """Add `disentangle` to the top-level `sae-clip` parser."""
    p = subparsers.add_parser(
        "disentangle",
        help="suppress spurious SAE features layer by layer; CSV + markdown + PNG of accuracy by layer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--saes", action="append", help="SAE folder or folder of SAE folders (one per layer); repeatable"
    )
    p.add_argument("--pretrained", action="append", help="RELEASE:SAE_ID of a pretrained SAE; repeatable")
    p.add_argument("--model", help="model spec (default: the SAEs' metadata model_name)")
    p.add_argument("--task", action="append", required=True,
                   help="toy-typographic | toy-background | toy-colour | celeba=ROOT | waterbirds=ROOT | "
                        "typo-folder=DIR | typo-generate=IMAGE_FOLDER; repeatable")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--json", action="store_true", help="print each task's summary as JSON instead of one line"
    )
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16], help="numbers of features to suppress")
    p.add_argument(
        "--method", default="auroc", choices=["auroc", "mean_diff", "steering"], help="feature ranking"
    )
    p.add_argument("--select-tokens", default="sae", choices=["sae", "all", "cls", "patches"],
                   help="tokens pooled into one activation per image for ranking (sae: those the SAE was "
                        "trained on)")  # fmt: skip
    p.add_argument("--pool", default="mean", choices=["mean", "max"], help="pooling over --select-tokens")
    p.add_argument("--suppress-tokens", default="sae", choices=["sae", "all", "cls", "patches"],
                   help="where to clamp to 0 (sae: the tokens the SAE was trained on)")  # fmt: skip
    p.add_argument("--spurious-by", default="word", choices=["word", "attack"],
                   help="typographic: rank against each written word, or attacked vs clean")  # fmt: skip
    p.add_argument("--word-placement", default="beside", choices=["beside", "anywhere"],
                   help="toy-typographic: write the word beside the shape (reading only) or anywhere, as in "
                        "training (reading plus occlusion)")  # fmt: skip
    p.add_argument("--n-random", type=int, default=3, help="seeds of the random-feature baseline")
    p.add_argument(
        "--n-heads", type=int, nargs="*", default=[1, 2, 4], help="head-ablation sizes (typographic)"
    )
    p.add_argument("--head-layers", type=int, nargs="*", help="only ablate heads in these layers")
    p.add_argument(
        "--max-clean-drop", type=float, default=0.03, help="typographic: clean loss allowed when choosing"
    )
    p.add_argument("--n-select", type=int, default=None,
                   help="selection split size: toy pairs / images per group (default 300); images per group for "
                        "celeba / waterbirds (default: the smallest group)")  # fmt: skip
    p.add_argument("--n-eval", type=int, default=None, help="evaluation split size (as --n-select)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the image sets and the random baseline (default %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per forward (default %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument(
        "--no-check-model", action="store_true", help="allow SAEs whose metadata names another model"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_disentangle_command)
