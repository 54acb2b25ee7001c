"""YAML loading that remembers where every value came from, for file:line:column errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Position:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Mapping(dict):
    """A dict whose ``positions[key]`` is where the key's value starts; ``position`` is the map's own."""

    positions: dict[str, Position]
    position: Position


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.positions = {}
    result.position = Position(loader.name, node.start_mark.line + 1, node.start_mark.column + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.positions[key] = Position(loader.name, value_node.start_mark.line + 1,
                                         value_node.start_mark.column + 1)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: Path, display_name: str | None = None, error: type | None = None) -> Mapping:
    """Parse one YAML file into Mappings; syntax errors become ``error`` (default RuleError),
    built as ``error(file, line, column, problem, fix)``."""
    from rules.errors import RuleError

    error = error or RuleError
    name = display_name or str(path)
    loader = _Loader(path.read_text(encoding="utf-8"))
    loader.name = name
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise error(name, mark.line + 1 if mark else 1, mark.column + 1 if mark else 1,
                    f"YAML cannot be read: {exc.problem or exc}", "fix the YAML syntax at that spot") from exc
    finally:
        loader.dispose()
    if not isinstance(data, Mapping):
        raise error(name, 1, 1, "the file must hold a mapping (key: value) at the top level",
                    "compare it with a working file of the same kind")
    return data
