"""`sae-clip --help` and flag errors answer without importing torch, open_clip or transformer_lens."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "open_clip", "transformer_lens", "sae_lens", "datasets")


def _modules_loaded_by(code: str) -> set[str]:
    probe = (
        f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(out.stdout.split())


def test_help_and_every_subcommand_parser_import_nothing_heavy():
    code = (
        "from sae_clip_plugin.cli import build_parser\n"
        "p = build_parser()\n"
        "actions = [a for a in p._actions if a.dest == 'command']\n"
        "assert len(actions[0].choices) >= 9, actions[0].choices\n"
        "for name, sub in actions[0].choices.items():\n"
        "    sub.format_help()\n"
    )
    assert _modules_loaded_by(code) == set()


def test_importing_the_package_is_cheap_and_still_registers_with_sae_lens():
    assert _modules_loaded_by("import sae_clip_plugin") == set()
    code = (
        "import sae_clip_plugin\n"
        "from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory\n"
        "assert 'prisma-clip-vit-b-32-vanilla-x64' in get_pretrained_saes_directory()\n"
        "from sae_clip_plugin import HookedViT, VisionSAERunnerConfig, steer, load_sae\n"
    )
    assert "sae_lens" in _modules_loaded_by(code)


def test_every_flag_has_help_and_docs_cli_md_is_current():
    import argparse
    from pathlib import Path

    from sae_clip_plugin.cli import build_parser
    from sae_clip_plugin.cli.docs import cli_markdown

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help
    ]
    assert missing == []
    docs = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert docs.read_text(encoding="utf-8") == cli_markdown() + "\n", (
        "regenerate: python -m sae_clip_plugin.cli.docs > docs/cli.md"
    )
