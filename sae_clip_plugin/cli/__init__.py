"""The `sae-clip` command: one entry point; each subcommand lives in its own module of this package."""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import sys
import warnings
from collections.abc import Sequence

# one module per command (or family of commands), each exposing register_commands(subparsers); they import the
# library only inside the functions that run a command, so `sae-clip --help` imports no torch
COMMAND_MODULES = (
    "sae_clip_plugin.cli.info",
    "sae_clip_plugin.cli.toy",
    "sae_clip_plugin.cli.train",
    "sae_clip_plugin.cli.eval",
    "sae_clip_plugin.cli.steerability",
    "sae_clip_plugin.cli.disentangle",
    "sae_clip_plugin.cli.decompose",
    "sae_clip_plugin.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sae-clip", description="CLIP vision SAEs on transformer_lens / sae_lens"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the package is not installed in this version
            raise
        module.register_commands(subparsers)
    return parser


# errors that mean "this input is wrong": exit 2 with the message; runtime failures exit 1
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
)
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, pickle.UnpicklingError)
# an error class may set `exit_code` (a demo folder written with other settings is fixed by a flag: 2)


def with_config_file(parser: argparse.ArgumentParser, raw: list[str]) -> list[str]:
    """`raw` with a command's `--config FILE` (train excepted: its --config is a runner config) expanded in place
    into the flags it holds, put before the typed flags so that those win."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    at = next((i for i, token in enumerate(raw) if token in commands.choices), None)
    if at is None or raw[at] in ("train", "harvest") or "--config" not in raw[at:]:
        return raw
    from sae_clip_plugin.cli.options import config_file_argv

    rest = raw[at + 1 :]
    i = rest.index("--config")
    if i + 1 >= len(rest):
        return raw  # argparse says what is missing
    from_file = config_file_argv(rest[i + 1], commands.choices[raw[at]])
    return [*raw[: at + 1], *from_file, *rest[:i], *rest[i + 2 :]]


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each (Python's default adds the source line that raised it, which users do not need)."""
    print(f"sae-clip: {category.__name__}: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; the project's own errors and warnings print one line (tracebacks only with --debug)."""
    previous = warnings.showwarning
    if "--debug" not in (sys.argv[1:] if argv is None else argv):
        warnings.showwarning = _one_line_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = previous


def _main(argv: Sequence[str] | None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show the full Python traceback on errors")
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = with_config_file(parser, raw)
    except (OSError, ValueError) as err:
        print(f"sae-clip: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.command_line = "sae-clip " + " ".join(raw)  # as typed: written into reports so a run can be repeated
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        # a bare Ctrl-C carries no text: say what happened and what a rerun does
        reason = (
            str(err) or "interrupted (Ctrl-C); files already written are complete, a rerun redoes the rest"
        )
        print(f"sae-clip {args.command}: {reason}", file=sys.stderr)
        return int(getattr(err, "exit_code", 130))
    except USAGE_ERRORS + RUNTIME_ERRORS as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(
            f"sae-clip {args.command}: error: {message} (run with --debug for the traceback)", file=sys.stderr
        )
        return int(getattr(err, "exit_code", 2 if isinstance(err, USAGE_ERRORS) else 1))


if __name__ == "__main__":
    sys.exit(main())
