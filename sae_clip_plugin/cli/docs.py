"""docs/cli.md, generated from the `sae-clip` parser itself, so the table of commands and flags cannot drift.

python -m sae_clip_plugin.cli.docs > docs/cli.md
"""

from __future__ import annotations

import argparse

from sae_clip_plugin.cli import build_parser
from sae_clip_plugin.cli.options import REMOVED_IN, DeprecatedAlias


def _flags(action: argparse.Action) -> str:
    return ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default is None or action.default is argparse.SUPPRESS or action.default is False:
        return ""
    return f"`{action.default}`"


def cli_markdown() -> str:
    """One section per subcommand: its help line, then a table of its flags (default, help)."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in commands._choices_actions}
    lines = [
        "# `sae-clip` commands and flags",
        "",
        "Generated from the parser (`python -m sae_clip_plugin.cli.docs > docs/cli.md`); `sae-clip COMMAND --help`",
        "says the same. `sae-clip --debug COMMAND ...` shows Python tracebacks; errors exit 2 (bad input) or 1.",
        "",
    ]
    deprecated: list[list[str]] = []
    for name, sub in commands.choices.items():
        lines += [
            f"## `sae-clip {name}`",
            "",
            helps.get(name) or "",
            "",
            "| flag | default | meaning |",
            "|---|---|---|",
        ]
        for action in sub._actions:
            if isinstance(action, DeprecatedAlias):
                deprecated.append([f"`sae-clip {name}`", _flags(action), f"`{action.new}`"])
                continue
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            meaning = (action.help or "").replace("%(default)s", str(action.default))
            meaning = meaning.removesuffix(f" (default: {action.default})").replace(
                "|", "\\|"
            )  # the column says it
            lines.append(f"| {_flags(action)} | {_default(action)} | {meaning} |")
        lines.append("")
    lines += [
        "## Older spellings",
        "",
        f"Accepted until {REMOVED_IN}, with a line on stderr naming the flag to use instead.",
        "",
        "| command | old flag | use |",
        "|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in deprecated],
        "| `sae-clip eval` | positional SAE folder | `--sae FOLDER` |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(cli_markdown())
