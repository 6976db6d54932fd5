"""Reading a user's YAML config: one-line errors for syntax, depth and alias bombs instead of tracebacks.

Why: `yaml.safe_load` turns a typo into a 10-line ParserError, a deeply nested file into RecursionError, and a
554-byte "billion laughs" file (aliases of aliases) into a MemoryError after minutes. Configs are small, flat
mappings: aliases are bounded, nesting is bounded, and every failure names the file, the line and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_ALIASES = 100  # a config has no use for more (anchors are rare in configs)
MAX_NESTING = 50
MAX_NODES = 100_000  # nodes once aliases unfold


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and nesting while composing the node graph (before any value is built)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name): not a config file")
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise yaml.YAMLError(f"nested more than {MAX_NESTING} levels deep: not a config file")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _unfolded_nodes(node: yaml.Node, seen: dict[int, int]) -> int:
    if id(node) in seen:
        return seen[id(node)]
    count = 1
    if isinstance(node, yaml.SequenceNode):
        count += sum(_unfolded_nodes(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        count += sum(_unfolded_nodes(k, seen) + _unfolded_nodes(v, seen) for k, v in node.value)
    seen[id(node)] = min(count, MAX_NODES + 1)
    return seen[id(node)]


def load_yaml_file(path: str | Path) -> Any:
    """The YAML (or JSON) document in `path`, or a ValueError naming the file, the place and the problem."""
    return load_yaml_text(Path(path).read_text(encoding="utf-8"), str(path))


def load_yaml_text(text: str, source: str) -> Any:
    """The YAML document `text` (from `source`, named in errors), bounded as described above."""
    path = source
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _unfolded_nodes(node, {}) > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} values once aliases unfold: not a config file")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path} is not valid YAML{where}: {problem}; fix it") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a config file") from None
    finally:
        loader.dispose()
