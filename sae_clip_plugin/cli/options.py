"""The flags every `sae-clip` command shares, spelled one way: --model, --hook, --sae, --images, --out, --device.

Older spellings (--model-spec, --hook-name, --saes, --pretrained, --dataset, --output-path, --toy, --sae-id)
still work for one release and print a deprecation line naming the new flag. Importing this module costs no
torch, so `sae-clip --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sae_clip_plugin.command_config import positive_int

REMOVED_IN = "0.3"

__all__ = ["positive_int"]  # re-exported: the value parsers live with the command configs


def deprecation_message(old: str, new: str) -> str:
    return f"sae-clip: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}"


class DeprecatedAlias(argparse.Action):
    """An old flag spelling: stores into the new flag's destination and says which flag to use instead."""

    def __init__(
        self, option_strings: list[str], dest: str, new: str, append: bool = False, **kwargs: Any
    ) -> None:
        self.new, self.append = new, append
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: str | None = None
    ):
        print(deprecation_message(str(option_string), self.new), file=sys.stderr)
        if self.nargs == 0:
            values = self.const
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)


def add_deprecated(parser: Any, old: str, new: str, dest: str, append: bool = False, **kwargs: Any) -> None:
    """Accept `old` as a hidden spelling of `new` (same destination; `append` for repeatable flags)."""
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, append=append, **kwargs)


def add_model(
    parser: Any, default: str | None = None, help_default: str = "the SAEs' metadata model_name"
) -> None:
    parser.add_argument(
        "--model",
        default=default,
        help="model spec: open_clip:<name>/<pretrained tag>, hf:<repo id>, or a registered name such as toy "
        f"(default: {default or help_default})",
    )


def add_sae(parser: Any, several: bool = True) -> None:
    """--sae: an SAE folder, a folder of SAE folders, a Prisma .pt file, or RELEASE:SAE_ID (`load_sae`)."""
    what = "; repeatable (one SAE per hook)" if several else ""
    parser.add_argument(
        "--sae",
        action="append" if several else "store",
        help=f"SAE: a sae_lens folder, a folder of them, a Prisma .pt file, or RELEASE:SAE_ID{what}",
    )


def add_hook(parser: Any, help_text: str) -> None:
    parser.add_argument("--hook", help=help_text)


def add_images(parser: Any, help_default: str, default: str | None = None) -> None:
    parser.add_argument(
        "--images",
        default=default,
        help="images: a folder (one subfolder per class where labels are needed), a datasets save_to_disk "
        f"folder, hf:<hub name>, or a registered name such as toy (default: {help_default})",
    )


def add_out(parser: Any, default: str | None = None, help_text: str = "output folder") -> None:
    parser.add_argument(
        "--out",
        default=default,
        required=default is None,
        help=help_text + (f" (default: {default})" if default else ""),
    )


def add_device(parser: Any) -> None:
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (cuda when available, else cpu), cpu, cuda, ..."
    )


def sae_specs(args: argparse.Namespace) -> list[str]:
    """Every SAE the command was given (--sae, and the deprecated spellings folded into it)."""
    value = getattr(args, "sae", None)
    specs = value if isinstance(value, list) else ([value] if value else [])
    return [str(s) for s in specs]


def add_config(parser: Any) -> None:
    """--config FILE: this command's settings from YAML / JSON (keys are the flag names); command-line flags win."""
    parser.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help="YAML or JSON file of this command's settings: its config's fields, i.e. the flag names (e.g. `images: "
        "toy`, `n_suppressed: [4, 8]`); flags on the command line override it (repeatable ones add to it)",
    )


def config_file_argv(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The settings in `path` as command-line tokens for `parser` (placed before the typed ones, which then win)."""
    from sae_clip_plugin.yaml_files import load_yaml_file

    data = load_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    flags = {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and a.dest not in ("help", "config_file")
    }
    # the previous release's spellings, still read (each says its new name once, as on the command line)
    old = {o.lstrip("-").replace("-", "_"): (a, o) for a in parser._actions if isinstance(a, DeprecatedAlias)
           for o in a.option_strings}  # fmt: skip
    argv: list[str] = []
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest in flags:
            action, flag = flags[dest], flags[dest].option_strings[-1]
        elif dest in old:
            action, flag = old[dest]
        else:
            raise ValueError(f"{path}: {key!r} is not a setting of this command; use one of {sorted(flags)}")
        if action.nargs == 0:  # a switch
            argv += [flag] if value else []
        elif isinstance(action, argparse._AppendAction) or getattr(action, "append", False):
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, str(item)]
        elif (
            isinstance(value, list) and action.nargs is None
        ):  # one value typed as a comma list (--tokens 0,3)
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, list) and not value and action.default:
            raise ValueError(f"{path}: {key!r} cannot be empty here (its default is {action.default!r})")
        elif isinstance(value, list):
            argv += [flag, *map(str, value)] if value else []  # empty: the default, itself empty
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _annotation_parser(annotation: Any) -> Any:
    """int / float / str from a field annotation such as `int | None` or `list[int]` (text, under
    `from __future__ import annotations`): the type of one typed value."""
    first = str(annotation).split("|")[0].strip()
    first = first.removeprefix("list[").removesuffix("]")
    return {"int": int, "float": float}.get(first, str)


def add_config_flags(parser: Any, config_cls: type, groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """One flag per field of the command config `config_cls` (see sae_clip_plugin.command_config.option): the
    name, default, help, parser and choices all come from the field. Returns the argument groups by name."""
    import dataclasses

    from sae_clip_plugin.command_config import field_default

    groups = {} if groups is None else groups
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        group_name = meta.get("group", "options")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        target = groups[group_name]
        default = field_default(f)
        help_text = meta.get("help", "")
        shown = default if not isinstance(default, list) else ",".join(map(str, default)) or None
        if shown is not None and shown is not False and "(default" not in help_text:
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if meta.get("required"):
            kwargs["required"] = True
        if isinstance(default, bool):
            target.add_argument("--" + f.name.replace("_", "-"), action="store_true", **kwargs)
            continue
        kwargs["type"] = meta.get("parse") or _annotation_parser(f.type)
        for key in ("choices", "nargs", "metavar"):
            if meta.get(key) is not None:
                kwargs[key] = meta[key]
        if meta.get("repeat"):
            kwargs.update(action="append", default=None)
        target.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return groups
