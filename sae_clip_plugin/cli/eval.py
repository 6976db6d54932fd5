"""`sae-clip eval`: metrics of one SAE folder or a folder of SAE folders -> CSV, markdown table, figures.

sae-clip eval --sae out/saes/toy --images toy --out out/eval/toy
sae-clip eval --sae path/to/sae --images /data/imagenet-val-subset --max-images 2000 --out out/eval/b32

Every flag is a field of EvalConfig; --config FILE holds the same fields as YAML / JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sae_clip_plugin.analysis.metrics.config import EvalConfig
from sae_clip_plugin.cli.options import add_config, add_config_flags, add_deprecated, deprecation_message


def run_eval_command(args: argparse.Namespace) -> int:
    """The `eval` subcommand: parse -> run_eval -> write_metrics_results -> print."""
    from sae_clip_plugin.viz.metrics_report import (
        load_metrics_results,
        terminal_summary,
        write_metrics_results,
    )

    if args.sae_positional:
        print(deprecation_message("the positional SAE argument", "--sae FOLDER"), file=sys.stderr)
        args.sae = [*(args.sae or []), args.sae_positional]
    cfg = EvalConfig.from_namespace(args)
    out = Path(cfg.out)
    if cfg.replot:
        title = (out / "metrics.md").read_text().splitlines()[0][2:]
        figures = write_metrics_results(load_metrics_results(out), out, title)
        print(f"redrew {len(figures)} figures in {out / 'figures'}")
        return 0
    from sae_clip_plugin.analysis.metrics.run import run_eval

    run = run_eval(cfg)
    figures = write_metrics_results(run.table, out, run.title)
    print(terminal_summary(run.table))
    print(f"wrote {out}/metrics.csv (every metric), metrics.md (the table), arrays.npz and {len(figures)} figures "
          f"in {out / 'figures'}")  # fmt: skip
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval` to the main `sae-clip` parser."""
    p = subparsers.add_parser(
        "eval",
        help="metrics of SAEs (reconstruction, sparsity by token type, zero-shot) -> CSV, markdown, figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sae_positional", nargs="?", metavar="SAE", help=argparse.SUPPRESS
    )  # deprecated: use --sae
    groups = add_config_flags(p, EvalConfig)
    add_deprecated(groups["options"], "--toy", "--images toy", dest="images", nargs=0, const="toy")
    add_config(groups["options"])
    p.set_defaults(func=run_eval_command)
