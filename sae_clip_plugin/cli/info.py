"""`sae-clip info`: build a HookedViT, list its hooks and check it against the source model."""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports torch and the model only when a command runs
    from sae_clip_plugin.model.hooked_vit import HookedViT


def summarise_hooks(names: list[str], inactive: dict[str, str] | None = None) -> list[str]:
    """Collapse `blocks.{l}.*` names into one line per suffix, with the layer range."""
    inactive = inactive or {}
    notes = {re.sub(r"blocks\.\d+\.", "blocks.{l}.", n): how for n, how in inactive.items()}
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for name in names:
        m = re.match(r"blocks\.(\d+)\.(.+)", name)
        key, layer = (f"blocks.{{l}}.{m.group(2)}", int(m.group(1))) if m else (name, -1)
        groups.setdefault(key, []).append(layer)
    lines = []
    for key, layers in groups.items():
        line = f"{key}  (l = {min(layers)}..{max(layers)})" if layers[0] >= 0 else key
        lines.append(line + (f"  [off until {notes[key]}]" if key in notes else ""))
    return lines


def check_against_open_clip(model_name: str, seed: int, batch: int) -> tuple[HookedViT, float, float]:
    """Random-weight open_clip model vs its HookedViT: max |diff| of the embedding and of every block output."""
    import open_clip
    import torch

    from sae_clip_plugin.model.hooked_vit import HookedViT

    torch.manual_seed(seed)
    clip = open_clip.create_model(model_name).eval()
    model = HookedViT.from_open_clip(clip, model_spec=f"open_clip:{model_name}")
    x = torch.randn(batch, 3, model.cfg.image_size, model.cfg.image_size)
    block_outs: list[torch.Tensor] = []
    handles = [
        b.register_forward_hook(lambda _m, _i, o: block_outs.append(o))
        for b in clip.visual.transformer.resblocks
    ]
    with torch.no_grad():
        ref = clip.encode_image(x)
        out, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_post"))
    for h in handles:
        h.remove()
    resid_diff = max(
        (cache[f"blocks.{i}.hook_resid_post"] - o).abs().max().item() for i, o in enumerate(block_outs)
    )
    return model, (out - ref).abs().max().item(), resid_diff


def pretrained_lines(rows: list[dict]) -> list[str]:
    """The registered SAEs, one line per release and sae_id pattern (layers collapsed as in summarise_hooks)."""
    groups: OrderedDict[tuple, list[int]] = OrderedDict()
    for row in rows:
        pattern = re.sub(r"blocks\.\d+\.", "blocks.{l}.", row["sae_id"])
        if row.get("k") is not None:
            sparsity = f"k {row['k']}"
        elif row.get("l1_coefficient") is not None:
            sparsity = f"l1 {row['l1_coefficient']}"
        else:
            sparsity = row.get("architecture") or "?"
        width = row.get("d_sae") or "?"
        key = (row["release"], pattern, row["model"], width, sparsity, row.get("token_selection") or "?")
        groups.setdefault(key, []).append(row.get("layer", -1))
    lines = ["release | sae_id | model | width | k / l1 | tokens"]
    for (release, pattern, model, width, sparsity, tokens), layers in groups.items():
        layer_set = ", ".join(str(n) for n in sorted(set(layers)))
        shown = pattern if "{l}" not in pattern else f"{pattern} (l = {layer_set})"
        lines.append(f"{release} | {shown} | {model} | {width} | {sparsity} | {tokens}")
    return lines


def run_info(args: argparse.Namespace) -> int:
    if args.list_pretrained:
        from sae_clip_plugin.pretrained import list_pretrained

        for line in pretrained_lines(list_pretrained()):
            print(line)
        print("\nload one with sae_lens.SAE.from_pretrained(release, sae_id) or --sae RELEASE:SAE_ID")
        return 0
    from sae_clip_plugin.model.hooked_vit import HookedViT

    if args.model.startswith("open_clip:") and "/" not in args.model:
        name = args.model.removeprefix("open_clip:")
        print(f"building a randomly initialised open_clip {name} and its HookedViT ...", flush=True)
        model, embed_diff, resid_diff = check_against_open_clip(name, args.seed, args.batch)
    else:
        model, embed_diff, resid_diff = HookedViT.from_pretrained(args.model), None, None
    cfg = model.cfg
    print(f"\nHookedViT {cfg.model_spec}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
          f"{cfg.n_tokens} tokens (CLS + {cfg.n_patches} patches), act {cfg.act_fn}, d_embed {cfg.d_embed}")  # fmt: skip
    print(f"{len(model.hook_dict)} hook points:")
    for line in summarise_hooks(list(model.hook_dict), model.inactive_hooks()):
        print("  " + line)
    if embed_diff is not None:
        ok = embed_diff <= 1e-5 and resid_diff <= 1e-5
        print(f"\nequivalence vs open_clip encode_image (float32): max |diff| embedding {embed_diff:.2e}, "
              f"block outputs {resid_diff:.2e} -> {'OK' if ok else 'MISMATCH'}")  # fmt: skip
        return 0 if ok else 1
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="build a HookedViT, print its hooks and an equivalence check")
    p.add_argument(
        "--model",
        default="open_clip:ViT-B-32",
        help="model spec; open_clip:<name> without a tag = random weights",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default %(default)s)")
    p.add_argument(
        "--batch", type=int, default=2, help="random images in the equivalence check (default %(default)s)"
    )
    p.add_argument(
        "--list-pretrained",
        action="store_true",
        help="list the registered pretrained SAEs (release, sae_id, model, width, k / l1, tokens) and exit",
    )
    p.set_defaults(func=run_info)
