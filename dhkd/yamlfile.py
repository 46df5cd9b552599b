"""YAML as the kit reads it: one reader for every file a person writes (profiles, data-set files,
``--set`` values), with the same rules and the same messages everywhere.

PyYAML's defaults suit machines more than people: ``on``/``no`` become booleans, ``1e-3`` stays
text and a key given twice silently wins. The reader here makes only ``true``/``false``
booleans, reads ``1e-3`` as a number, refuses a repeated key, and turns every syntax error into
a :class:`DhkdError` that names the file, the line and the column. It sits below the data
layer so that the data layer's files are read as the profiles are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dhkd.errors import DhkdError


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when there: 10x faster
    """YAML as people write it in settings: only ``true``/``false`` are booleans (a bare ``on``
    or ``no`` stays text, so ``output_projection: on`` means "on"), ``1e-3`` is a number (PyYAML
    alone reads it as text), and a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not None and key != "<<":
                raise yaml.constructor.ConstructorError(
                    f"while reading the mapping that starts at line {node.start_mark.line + 1}", node.start_mark,
                    f"the key {key!r} appears twice (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))

YAML_HELP = ("YAML is `key: value` with a space after the colon, sections indented with spaces (never tabs), "
             "lists as [a, b]; quote text that holds ':' or '#'")


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed by the settings' YAML rules; a syntax error names ``where``, the line and the column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a safe loader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        if mark is None:
            raise DhkdError(f"{where} is not valid YAML: {problem}", YAML_HELP) from None
        lines = text.splitlines() or [""]
        line, column = mark.line, mark.column
        if line >= len(lines):  # the text ended too early: point at its end
            line, column = len(lines) - 1, len(lines[-1])
        shown = lines[line]
        context = getattr(error, "context", None)
        fix = "indent with spaces: YAML does not allow tabs" if "\t" in shown or "'\\t'" in problem else YAML_HELP
        if "appears twice" in problem:
            fix = "keep one of the two (the second would silently replace the first)"
        raise DhkdError(f"{where} is not valid YAML at line {line + 1}, column {column + 1}: "
                        f"{problem}{f' ({context})' if context else ''}\n    {shown}\n    {' ' * column}^", fix) from None


def read_yaml(path: str | Path, what: str = "profile") -> Any:
    """A user's YAML file (a profile, a data-set file): a missing file, one that is not text and
    one that is not valid YAML each end in a :class:`DhkdError` that says so."""
    path = Path(path)
    if not path.exists():
        raise DhkdError(f"{what} file {path} does not exist", "check the path (relative paths start in the current folder)")
    if path.is_dir():
        raise DhkdError(f"{what} {path} is a folder, not a YAML file", f"give the path of the {what}'s .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DhkdError(f"{what} file {path} is not a text file (not UTF-8)", "give a YAML file saved as UTF-8 text") from None
    except OSError as error:
        raise DhkdError(f"cannot read {what} file {path}: {error.strerror}", "check the file's permissions") from None
    return parse_yaml(text, f"{what} file {path}")
