"""`sae-clip steerability`: the paper's steerability metric for an SAE, the neurons at a hook, or a random model.

    sae-clip steerability --sae out/sae --images toy --n-images 192 --vocabulary toy --features 0.05 --out out/steer
    sae-clip steerability --model toy --neurons --hook blocks.3.hook_resid_post --images toy --out out/steer_neurons
    sae-clip steerability --model toy --neurons --hook ... --random-model ...  # the random-model control
    sae-clip steerability --sae out/sae_on_random_toy ...        # SAE trained on random_vision_model (random:toy)
    ... --strengths 0,25,50,100,150,200 --curve-features 8        # also steering curves (CSV + PNG)

Writes <out>/<prefix>.csv (per-feature S, P, top concept, steerable, polysemanticity),
<prefix>_summary.json and <prefix>_summary.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sae_clip_plugin.cli.options import (
    add_config,
    add_deprecated,
    add_device,
    add_hook,
    add_images,
    add_model,
    add_out,
    add_sae,
)


def register_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "steerability",
        help="steerability of SAE features / neurons (arXiv 2504.08729 metric)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to steer")
    add_model(what, help_default="the SAE's metadata model_name")
    add_sae(what, several=False)
    add_deprecated(what, "--sae-id", "--sae RELEASE:SAE_ID", dest="sae_id")
    what.add_argument("--neurons", action="store_true", help="steer the neurons at --hook instead (baseline)")
    add_hook(what, "hook name (neurons; overrides the SAE's hook)")
    what.add_argument(
        "--random-model", action="store_true", help="randomly re-initialise the image tower (control)"
    )
    what.add_argument("--random-seed", type=int, default=0, help="seed of the random image tower")
    data = p.add_argument_group("images and readout")
    add_images(data, "the model's own registered images, e.g. toy for the toy CLIP")
    data.add_argument("--split", default="validation", help="split of a hub / datasets source")
    data.add_argument("--n-images", type=int, default=192, help="images to average over (paper: 192)")
    data.add_argument(
        "--vocabulary",
        default=None,
        help="imagenet | a registered name (toy) | toy,imagenet | word-per-line file | JSON list (default: the "
        "model's registered vocabulary, else imagenet)",
    )
    data.add_argument(
        "--readout-scale", type=float, default=100.0, help="softmax scale of the readout (paper: 100)"
    )
    run = p.add_argument_group("steering")
    run.add_argument(
        "--features", default="0.05", help="fraction (0.05), count (200) or comma list (3,17,42)"
    )
    run.add_argument(
        "--strength",
        type=float,
        default=None,
        help="absolute value each feature is set to (the paper's: 150); default: --relative-strength",
    )
    run.add_argument(
        "--relative-strength",
        type=float,
        default=None,
        help="strength relative to the hook's typical activation norm (default 5.41, which is the paper's 150 on "
        "ViT-B/32 SAEs; carries over between models)",
    )
    run.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="a feature is steerable when S > this (default %(default)s, the paper's)",
    )
    run.add_argument(
        "--tokens",
        default="all",
        type=parse_tokens,
        help="all | cls | patches | comma list of positions (from 0)",
    )
    run.add_argument(
        "--mode",
        default="set",
        choices=["set", "add", "scale"],
        help="set (clamp), add to, or scale the feature (default %(default)s)",
    )
    run.add_argument("--no-error-term", action="store_true", help="drop the SAE error term when steering")
    run.add_argument(
        "--strengths", type=finite_numbers, help="comma list of strengths: also write steering curves"
    )
    run.add_argument("--curve-features", type=int, default=8, help="features for the steering curves")
    run.add_argument(
        "--method",
        default="fast",
        choices=["fast", "naive"],
        help="fast: shared cached prefix; naive: one forward per feature; same numbers (default %(default)s)",
    )
    run.add_argument("--batch-size", type=int, default=256, help="rows (features x images) per forward")
    run.add_argument("--seed", type=int, default=0, help="feature sampling seed")
    add_device(run)
    add_config(run)
    out = p.add_argument_group("output")
    add_out(out)
    out.add_argument("--json", action="store_true", help="print the summary as JSON instead of one line")
    out.add_argument(
        "--prefix", default="steerability", help="file name prefix of the outputs (default %(default)s)"
    )
    p.set_defaults(func=run_steerability)


def parse_features(text: str) -> Any:
    text = text.strip()
    if "," in text:
        return [int(x) for x in text.split(",") if x.strip()]
    if "." in text or "e" in text.lower():
        return float(text)
    return int(text)


def parse_tokens(text: str) -> Any:
    """all | cls | patches, or positions counted from 0 (the CLS token); a negative position is refused.

    Why: `--tokens -1` used to steer the last patch, which a user meaning "none" or "the default" never asked for.
    """
    if not (text[:1].isdigit() or text.startswith("-")):
        return text
    try:
        positions = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: positions are whole numbers, e.g. 0,5,9") from None
    negative = [p for p in positions if p < 0]
    if negative:
        raise argparse.ArgumentTypeError(
            f"position(s) {negative}: positions count from 0 (the CLS token); write the position itself "
            "(the last patch of a 50-token ViT-B/32 is 49), or all | cls | patches"
        )
    return positions


def finite_numbers(text: str) -> list[float]:
    """A comma list of finite numbers (checked when the flags are read, not after the main run)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma list of numbers, e.g. 0,50,150"
        ) from None
    bad = [v for v in values if v != v or v in (float("inf"), float("-inf"))]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a finite number")
    return values


def load_sae(args: argparse.Namespace) -> Any:
    from sae_clip_plugin.pretrained.loading import load_sae as resolve

    return resolve(f"{args.sae}:{args.sae_id}" if args.sae_id else args.sae, device=args.device)


def load_images(args: argparse.Namespace, model: Any) -> Any:
    from sae_clip_plugin import registry
    from sae_clip_plugin.training.sources import image_source

    own = model.cfg.model_spec if registry.find("images", model.cfg.model_spec or "") else None
    spec = args.images or own
    if spec is None:
        raise SystemExit(
            "--images is required (an image folder, hf:<name>, a datasets folder, or a registered name)"
        )
    source = image_source(spec, split=args.split, max_images=args.n_images, seed=args.seed + 1)
    return source.with_transform(model.preprocess)


def run_steerability(args: argparse.Namespace) -> int:
    import torch

    from sae_clip_plugin.analysis.steerability.controls import random_vision_model
    from sae_clip_plugin.analysis.steerability.metric import (
        as_pixels,
        steerability,
        steering_curves,
        strength_text,
    )
    from sae_clip_plugin.analysis.vocabulary import default_vocabulary, load_vocabulary, text_embeddings
    from sae_clip_plugin.model.device import resolve_device
    from sae_clip_plugin.model.hooked_vit import HookedViT
    from sae_clip_plugin.viz.steering_figures import save_steering_curves

    args.device = resolve_device(args.device)
    if not args.sae and not args.neurons:
        raise SystemExit("pass --sae PATH (SAE features) or --neurons --hook NAME (neuron baseline)")
    sae = None if args.neurons else load_sae(args)
    spec = args.model or (sae.cfg.metadata.get("model_name") if sae is not None else None)
    if not spec:
        raise SystemExit("--model is required (the SAE's metadata names no model_name)")
    if spec.startswith("random:"):  # an SAE trained on random_vision_model(<spec>, seed=--random-seed)
        spec, args.random_model = spec.removeprefix("random:"), True
    model = HookedViT.from_pretrained(spec, device=args.device)
    hook = args.hook or (sae.cfg.metadata.hook_name if sae is not None else None)
    if hook is None:
        raise SystemExit("--neurons needs --hook (e.g. blocks.6.hook_resid_post)")
    vocabulary = load_vocabulary(args.vocabulary or default_vocabulary(spec))
    pixels = as_pixels(model, load_images(args, model))
    with torch.inference_mode():
        text = text_embeddings(model, vocabulary)  # the text tower is kept by the random control
        if args.random_model:
            model = random_vision_model(model, seed=args.random_seed)
        common: dict[str, Any] = dict(
            hook_name=hook,
            tokens=args.tokens,
            mode=args.mode,
            use_error_term=not args.no_error_term,
            readout_scale=args.readout_scale,
            text=text,
            method=args.method,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        result = steerability(
            model,
            sae,
            pixels,
            vocabulary,
            parse_features(args.features),
            args.strength,
            args.threshold,
            relative_strength=args.relative_strength,
            progress=True,
            **common,
        )
        result.summary["random_model"] = bool(args.random_model)
        result.summary["images"] = str(args.images)
        paths = result.save(args.out, args.prefix)
        if args.strengths:
            strengths = args.strengths
            curves = steering_curves(
                model, sae, pixels, vocabulary, args.curve_features, strengths, args.threshold, **common
            )
            paths.update(save_steering_curves(curves, Path(args.out), args.prefix, args.threshold))
    summary = result.summary
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "top_concepts"}, default=str))
    else:
        print(
            f"steerable: {summary['n_steerable']} of {summary['n_features']} features "
            f"({100 * summary['steerable_fraction']:.1f}%; steerable means S > {summary.get('threshold')} at "
            f"{strength_text(summary)}), coverage {summary['coverage']} distinct top concepts, mean S "
            f"{summary['mean_S']:.4g}"
        )
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
