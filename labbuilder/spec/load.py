"""Load a lab file: YAML with the line and column of every key kept, checked against the JSON Schema.

The result, `Spec`, is the raw data plus a position map so that any later stage can point the
user at `lab.yaml:17:5`.

No input may crash or exhaust the loader, so a lab file is a small, plain subset of YAML:
UTF-8 text without NUL or control characters, at most 1 MiB; collections nested at most 64
deep; aliases that expand to at most 10,000 values in all and never contain themselves;
strings, 64-bit integers, floats, booleans, null, lists and mappings only (no other tags; YAML
1.1 timestamps stay strings); keys are plain names. Every violation is a located Problem.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from labbuilder.errors import LabError, Problem, SpecError
from labbuilder.resources import labs_dir, schemas_dir
from labbuilder.spec import manifests

Path_ = tuple[str | int, ...]

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ALIASED = 10_000  # values reachable through aliases, counted as if expanded
MAX_PROBLEMS = 100  # listed one per line; past that, one line says how many more
MAX_NUMBER_CHARS = 100  # longer "numbers" are not numbers a lab needs, and int() on them is slow
INT64 = 2**63  # Kubernetes API integers are int32/int64

# libyaml's event parser (when PyYAML has it) is ~25 times faster than the pure Python one and
# gives the same line/column marks; the positions and values are built from its events below.
_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What YAML calls printable (YAML 1.1 §5.1); anything else would be a reader error without a mark.
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # "\ud800" escapes: not encodable, so not printable later

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}
_COLLECTION_TAGS = {yaml.SequenceStartEvent: _TAG + "seq", yaml.MappingStartEvent: _TAG + "map"}
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


@dataclass
class Spec:
    data: dict[str, Any]
    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    origins: dict[Path_, str] = field(default_factory=dict)  # items read from another file (manifests)

    def problem(self, path: Path_, message: str, hint: str = "", warning: bool = False) -> Problem:
        """A problem located at `path`, or at its nearest ancestor that has a position."""
        line, col = 0, 0
        for end in range(len(path), -1, -1):
            if path[:end] in self.positions:
                line, col = self.positions[path[:end]]
                break
        return Problem(message, self.origin(path), line, col, hint, warning)

    def where(self, path: Path_) -> str:
        """`path` for a message: in a manifest's own words (`spec.ingress.0`) when it came from one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.origins:
                return _where(manifests.manifest_path(path[end:])) if path[end:] else "the manifest"
        return _where(path)

    def origin(self, path: Path_) -> str:
        """The file the value at `path` was written in: the lab file, or a manifest it names."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.origins:
                return self.origins[path[:end]]
        return self.file


class _Stop(Exception):
    """The rest of the file cannot be read sensibly after this problem."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


class _BadScalar(ValueError):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass
class _Open:
    """A list or mapping whose items are still arriving."""

    value: dict[str, Any] | list[Any]
    path: Path_
    anchor: str | None
    size: int = 1  # values inside it, aliases counted as expanded
    key: str | None = None  # a mapping's key waiting for its value


class _Builder:
    """Turns YAML events into plain Python data, recording the position of every key and item."""

    def __init__(self, file: str, documents: bool = False):
        self.file = file
        self.multi = documents  # a manifest file: several documents, each under its index
        self.roots: list[Any] = []
        self.base: Path_ = ()
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.bad_paths: list[Path_] = []  # where a problem was found: schema errors there would repeat it
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.aliased = 0
        self.stack: list[_Open] = []
        self.documents = 0
        self.root: Any = None

    def at(self, mark: Any) -> tuple[int, int]:
        return mark.line + 1, mark.column + 1

    def fail(self, mark: Any, message: str, hint: str = "") -> Problem:
        return Problem(message, self.file, *self.at(mark), hint)

    def build(self, events: Iterable[yaml.Event]) -> Any:
        for event in events:
            self.event(event)
        return self.root

    def event(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.multi:
                self.base, self.anchors, self.root = (self.documents - 1,), {}, None
            elif self.documents > 1:
                raise _Stop(self.fail(event.start_mark, "a lab file holds one YAML document", "remove the `---`"))
        elif isinstance(event, yaml.DocumentEndEvent) and self.multi:
            self.roots.append(self.root)
        elif isinstance(event, yaml.CollectionEndEvent):
            done = self.stack.pop()
            self.complete(done.value, done.size, done.anchor)
        elif isinstance(event, yaml.NodeEvent):
            top = self.stack[-1] if self.stack else None
            if top is not None and isinstance(top.value, dict) and top.key is None:
                self.key(top, event)
            else:
                self.node(event, self.path_of(top, event))

    def path_of(self, top: _Open | None, event: yaml.NodeEvent) -> Path_:
        if top is None:
            self.positions[self.base] = self.at(event.start_mark)
            return self.base
        if isinstance(top.value, dict):
            assert top.key is not None
            return (*top.path, top.key)
        path = (*top.path, len(top.value))
        self.positions[path] = self.at(event.start_mark)
        return path

    def key(self, top: _Open, event: yaml.NodeEvent) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            what = "an alias" if isinstance(event, yaml.AliasEvent) else "a list or mapping"
            raise _Stop(self.fail(event.start_mark, f"a key must be a plain name, not {what}", "write `name: value`"))
        # Keys are names, never YAML 1.1 booleans or numbers: `on:` stays "on", not True.
        key = event.value
        if event.tag not in (None, "!", _STR):
            self.report(
                (*top.path, key), event.start_mark, f"{_where(top.path)}: a tag on a key", "keys are plain names"
            )
        elif _SURROGATE.search(key):
            raise _Stop(self.fail(event.start_mark, "a key holds an invalid \\u escape (a lone surrogate)"))
        assert isinstance(top.value, dict)
        if key in top.value:
            self.report(
                (*top.path, key),
                event.start_mark,
                f"duplicate key {_shorten(key)}",
                "each key may appear once per mapping",
            )
        if event.anchor is not None:
            self.anchors[event.anchor] = (key, 1)
        self.positions[(*top.path, key)] = self.at(event.start_mark)
        top.key = key

    def node(self, event: yaml.NodeEvent, path: Path_) -> None:
        if isinstance(event, yaml.AliasEvent):
            self.alias(event)
        elif isinstance(event, yaml.ScalarEvent):
            self.complete(self.scalar(event, path), 1, event.anchor)
        else:
            assert isinstance(event, yaml.CollectionStartEvent)
            if len(self.stack) >= MAX_DEPTH:
                raise _Stop(
                    self.fail(event.start_mark, f"lists and mappings nested more than {MAX_DEPTH} deep", "flatten it")
                )
            tag = _COLLECTION_TAGS[type(event)]
            if event.tag not in (None, "!", tag):
                self.report(
                    path, event.start_mark, f"{_where(path)}: tag {_short_tag(event.tag)} is not allowed", _TAGS_HINT
                )
            value: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
            self.stack.append(_Open(value, path, event.anchor))

    def alias(self, event: yaml.AliasEvent) -> None:
        name = event.anchor or ""
        shown = _clip(name, 60)
        if any(frame.anchor == name for frame in self.stack):
            raise _Stop(
                self.fail(event.start_mark, f"alias *{shown} is inside its own anchor &{shown}", "it never ends")
            )
        if name not in self.anchors:
            raise _Stop(self.fail(event.start_mark, f"alias *{shown} has no anchor &{shown} before it"))
        value, size = self.anchors[name]
        self.aliased += size
        if self.aliased > MAX_ALIASED:
            raise _Stop(
                self.fail(
                    event.start_mark,
                    f"aliases expand to more than {MAX_ALIASED:,} values",
                    "a lab file needs few aliases; write the values out",
                )
            )
        self.complete(value, size, None)  # shared, not copied: the data is only read

    def complete(self, value: Any, size: int, anchor: str | None) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, dict):
            assert top.key is not None
            top.value[top.key] = value
            top.key = None
        else:
            top.value.append(value)

    def scalar(self, event: yaml.ScalarEvent, path: Path_) -> Any:
        try:
            return _scalar(event)
        except _BadScalar as err:
            self.report(path, event.start_mark, f"{_where(path)}: {err.message}", err.hint)
            return None

    def report(self, path: Path_, mark: Any, message: str, hint: str = "") -> None:
        self.problems.append(self.fail(mark, message, hint))
        self.bad_paths.append(path)


_TAGS_HINT = "a lab file holds strings, numbers, booleans, lists and mappings; quote the value to keep it a string"


def _short_tag(tag: str) -> str:
    short = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag if tag.startswith("!") else f"!<{tag}>"
    return _clip(short, 60)


def _scalar(event: yaml.ScalarEvent) -> Any:
    """The value of a scalar under YAML 1.1's safe types, with explicit tags checked, not trusted."""
    text: str = event.value
    plain = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    if event.tag in (None, "!"):
        tag = plain if event.implicit[0] else _STR
    elif event.tag in _SCALAR_TAGS:
        tag = event.tag
        if tag not in (_STR, plain) and not (tag == _FLOAT and plain == _INT):
            raise _BadScalar(f"{_shorten(text)} is not a valid {_short_tag(tag)}", "remove the tag")
    else:
        raise _BadScalar(f"tag {_short_tag(event.tag)} is not allowed", _TAGS_HINT)
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return _CONSTRUCTOR.bool_values[text.lower()]
    if tag in (_INT, _FLOAT):
        return _number(text, tag)
    if _SURROGATE.search(text):
        raise _BadScalar("invalid \\u escape: a lone surrogate is not a character", "remove the escape")
    return text  # strings, and YAML 1.1 timestamps, merge keys and `=`, which a lab reads as text


def _number(text: str, tag: str) -> int | float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadScalar(f"a number of {len(text):,} characters", "no value in a lab file needs that many digits")
    node = yaml.ScalarNode(tag, text)
    try:  # the YAML 1.1 patterns let `0b_` and `._` through, which int() and float() refuse
        value: int | float = (_CONSTRUCTOR.construct_yaml_int if tag == _INT else _CONSTRUCTOR.construct_yaml_float)(
            node
        )
    except ValueError:
        raise _BadScalar(f"{text!r} is not a number", "write digits, such as 80") from None
    if isinstance(value, int) and not -INT64 <= value < INT64:
        raise _BadScalar(f"{text} is out of range", "integers in Kubernetes objects are 64-bit at most")
    return value


def _shorten(value: Any, limit: int = 60) -> str:
    """repr() kept short: messages quote what the user wrote, which may be huge."""
    return _clip(repr(value), limit)


def _clip(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters: line breaks and controls (from "\\n"-style escapes) escaped."""
    text = _BREAKS.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# -- text -----------------------------------------------------------------------------------------


def resolve_path(name: str) -> Path:
    """A lab file path, or the name of a lab shipped with labbuilder (`kthw`)."""
    path = Path(name)
    try:
        if path.exists():
            return path
    except ValueError:  # a NUL in the name: no such file
        pass
    shipped = labs_dir() / f"{name}.yaml"
    if "/" not in name and "\0" not in name and shipped.exists():
        return shipped
    raise LabError(f"{_clip(name)}: no such lab file", hint="give a path to a .yaml lab file, or a shipped lab name")


def _text_problem(text: str, file: str) -> Problem | None:
    """A located problem if `text` is not something YAML can read: too large, NUL or control characters."""
    if len(text) > MAX_BYTES:
        return Problem(f"the file is larger than {MAX_BYTES >> 20} MiB", file, 1, 1, "a lab file is a few kilobytes")
    bad = _NOT_PRINTABLE.search(text) or _SURROGATE.search(text)
    if bad is None:
        return None
    at = bad.start()
    line, col = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    char = bad.group()
    if char == "\0":
        return Problem("a NUL byte: this is not a text file", file, line, col, "a lab file is UTF-8 text")
    return Problem(
        f"control character U+{ord(char):04X} is not allowed",
        file,
        line,
        col,
        "remove it, or write it as an escape in a double-quoted string",
    )


def load_bytes(data: bytes, file: str, schema: dict[str, Any] | None = None, base: Path | None = None) -> Spec:
    """`load_text` for the raw bytes of a file: they must be UTF-8 text of at most 1 MiB."""
    if len(data) > MAX_BYTES:
        raise SpecError([Problem(f"the file is larger than {MAX_BYTES >> 20} MiB", file, 1, 1)])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line_start = data.rfind(b"\n", 0, bad) + 1
        line = data.count(b"\n", 0, bad) + 1
        col = len(data[line_start:bad].decode("utf-8", "replace")) + 1
        raise SpecError(
            [Problem(f"not UTF-8 text: byte 0x{data[bad]:02x}", file, line, col, "save the file as UTF-8")]
        ) from None
    return load_text(text, file, schema, base)


def _parse(text: str, file: str, documents: bool = False) -> _Builder:
    """The builder after reading `text`: its data (or documents), positions and problems."""
    bad = _text_problem(text, file)
    if bad is not None:
        raise SpecError([bad])
    builder = _Builder(file, documents)
    try:
        builder.build(yaml.parse(text, Loader=_Loader))
    except _Stop as stop:
        raise SpecError([*builder.problems, stop.problem]) from None
    except yaml.YAMLError as err:
        raise SpecError([*builder.problems, _syntax_problem(err, text, file)]) from None
    return builder


def load_text(text: str, file: str, schema: dict[str, Any] | None = None, base: Path | None = None) -> Spec:
    """Parse and schema-check (the lab schema unless another is given); SpecError lists every problem.

    A lab file's `networkPolicies: [{file: PATH}]` are read from PATH (relative to `base`, the
    lab file's folder by default) and stand in its place, located in their own file."""
    builder = _parse(text, file)
    data = builder.root
    if not isinstance(data, dict):
        raise SpecError(builder.problems or [_not_a_mapping(data, file, builder.positions.get((), (1, 1)))])
    spec = Spec(data, file, builder.positions)
    if schema is None or schema is lab_schema():
        _read_manifests(spec, Path(file).parent if base is None else base, builder)
    located = schema_problems(spec, data, schema or lab_schema())
    found = [p for path, p in located if not any(path[: len(bad)] == bad for bad in builder.bad_paths)]
    problems = sorted(builder.problems + found, key=lambda p: (p.file != file, p.file, p.line, p.col))
    if problems:
        raise SpecError(capped(problems))
    return spec


# -- manifests ------------------------------------------------------------------------------------

POLICIES = "networkPolicies"


def _read_manifests(spec: Spec, base: Path, builder: _Builder) -> None:
    """Replace each `{file: PATH}` of networkPolicies by the NetworkPolicies of that manifest.

    The items are renumbered, their positions moved with them; a manifest's items keep its own
    lines and its name (Spec.origins). A file that cannot be used is a problem at its `file:` key.
    """
    items = spec.data.get(POLICIES)
    if not isinstance(items, list) or not any(isinstance(i, dict) and "file" in i for i in items):
        return
    expanded: list[Any] = []
    positions = {p: v for p, v in spec.positions.items() if p[:1] != (POLICIES,) or len(p) == 1}
    for index, item in enumerate(items):
        path: Path_ = (POLICIES, index)
        read = None
        if isinstance(item, dict) and isinstance(item.get("file"), str):
            read = _manifest(spec, path, base / item["file"], builder)
        if read is None:  # an inline policy, or a file that could not be used (its problem is told)
            if isinstance(item, dict) and "file" in item:
                builder.bad_paths.append((POLICIES, len(expanded)))
            _move(spec.positions, path, {(): (POLICIES, len(expanded))}, positions)
            expanded.append(item)
            continue
        for policy, at, moves, file in read:
            where = (POLICIES, len(expanded))
            _move(at, (), {old: (*where, *new) for old, new in moves.items()}, positions)
            spec.origins[where] = file
            expanded.append(policy)
    spec.data[POLICIES] = expanded
    spec.positions = positions


def _move(
    source: dict[Path_, tuple[int, int]], prefix: Path_, moves: dict[Path_, Path_], into: dict[Path_, tuple[int, int]]
) -> None:
    """Copy the positions under `prefix` into `into`, each under the longest of `moves` it starts with."""
    for path, at in source.items():
        if path[: len(prefix)] != prefix:
            continue
        rest = path[len(prefix) :]
        for end in range(len(rest), -1, -1):
            if rest[:end] in moves:
                into[(*moves[rest[:end]], *rest[end:])] = at
                break


Manifest = tuple[dict[str, Any], dict[Path_, tuple[int, int]], dict[Path_, Path_], str]


def _manifest(spec: Spec, path: Path_, file: Path, builder: _Builder) -> list[Manifest] | None:
    """The NetworkPolicies of a manifest file — (item, its positions, path moves, file name) each —
    or None when the file cannot be used (the problems are added to the builder's)."""
    here = spec.problem((*path, "file"), "")
    where = _where(path)

    def problem(message: str, hint: str = "") -> None:
        builder.problems.append(Problem(f"{where}: {message}", here.file, here.line, here.col, hint))

    if len(spec.data[POLICIES][path[1]]) > 1:
        others = ", ".join(_clip(str(k), 40) for k in spec.data[POLICIES][path[1]] if k != "file")
        problem(
            f"`file:` stands alone, not with {others}", "a policy is written here or read from a manifest, not both"
        )
        return None
    try:
        if not file.is_file():  # a FIFO or a device would block or never end
            problem(
                f"{_clip(str(file))}: {'not a regular file' if file.exists() else 'no such file'}",
                "the path is relative to the lab file",
            )
            return None
        with file.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except (OSError, ValueError) as err:
        problem(f"{_clip(str(file))}: cannot read: {getattr(err, 'strerror', None) or err}")
        return None
    name = str(file)
    try:
        parsed = _parse(_decoded(raw, name), name, documents=True)
    except SpecError as err:
        builder.problems.extend(err.problems)
        return None
    if parsed.problems:
        builder.problems.extend(parsed.problems)
        return None
    found: list[Manifest] = []
    rejected = False
    for index, document in enumerate(parsed.roots):
        if document is None:  # an empty document: a trailing `---`
            continue
        at = {p[1:]: v for p, v in parsed.positions.items() if p[:1] == (index,) and p[1:] not in manifests.DROPPED}
        converted = manifests.policy_item(document)
        if isinstance(converted, manifests.Rejected):
            line, col = at.get(converted.path, at.get((), (1, 1)))
            builder.problems.append(Problem(converted.message, name, line, col, converted.hint))
            rejected = True
            continue
        found.append((converted.item, at, converted.moves, name))
    if rejected:
        return None
    if not found:
        problem(f"{_clip(name)} holds no NetworkPolicy", "a manifest of kind: NetworkPolicy")
        return None
    return found


def _decoded(raw: bytes, file: str) -> str:
    if len(raw) > MAX_BYTES:
        raise SpecError([Problem(f"the file is larger than {MAX_BYTES >> 20} MiB", file, 1, 1)])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise SpecError(
            [Problem(f"not UTF-8 text: byte 0x{raw[err.start]:02x}", file, line, 1, "save the file as UTF-8")]
        ) from None


def capped(problems: list[Problem]) -> list[Problem]:
    """The first MAX_PROBLEMS problems, then one located line for the rest: a screenful, not 100,000 lines."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = problems[MAX_PROBLEMS]
    more = Problem(
        f"and {len(problems) - MAX_PROBLEMS:,} more problems", rest.file, rest.line, rest.col, "fix these first"
    )
    return [*problems[:MAX_PROBLEMS], more]


def _not_a_mapping(data: Any, file: str, where: tuple[int, int]) -> Problem:
    if data is None:
        return Problem("the file is empty", file, 1, 1, "start with `name: mylab`")
    kind = "a list" if isinstance(data, list) else f"the value {_shorten(data)}"
    return Problem(f"the file holds {kind}, not a mapping of keys", file, *where, "start with `name: mylab`")


def _syntax_problem(err: yaml.YAMLError, text: str, file: str) -> Problem:
    if "maximum nesting depth" in str(err):  # libyaml's own limit, met while it scans ahead of the events
        mark = err.problem_mark if isinstance(err, yaml.MarkedYAMLError) else None
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return Problem(f"lists and mappings nested more than {MAX_DEPTH} deep", file, line, col, "flatten it")
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        what = " ".join(part for part in (err.context, err.problem) if part)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    else:  # a reader error: the text checks above make it unlikely, but it carries an offset only
        at = min(getattr(err, "position", 0) or 0, len(text))
        what, line, col = str(getattr(err, "reason", err)), text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    return Problem(f"YAML syntax: {_clip(what)}", file, line, col, "check indentation and quoting")


def load(name: str) -> Spec:
    path = resolve_path(name)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise LabError(f"{path}: cannot read: {err.strerror}") from None
    return load_bytes(data, str(path))


# -- schema ---------------------------------------------------------------------------------------


@cache
def lab_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((schemas_dir() / "lab.schema.json").read_text())
    return schema


def _is_integer(checker: Any, instance: Any) -> bool:
    """As the Kubernetes API server decodes them: 80 is an integer, 80.0 and true are not."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _ecma(pattern: str) -> re.Pattern[str]:
    """The pattern with JSON Schema's (ECMA 262) `$`: the end of the text, not also before a final newline."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def matches(pattern: str, text: str) -> bool:
    """Whether `text` matches a schema pattern, read as JSON Schema reads it."""
    return _ecma(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if isinstance(instance, str) and not matches(pattern, instance):
        yield jsonschema.ValidationError(f"{_shorten(instance)} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@cache
def _lab_validator() -> Any:
    return _Validator(_inline_refs(lab_schema()))


def _inline_refs(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """The schema with each local `$ref` replaced by its definition (siblings such as a description win).

    jsonschema looks a reference up again for every item it checks: half the time of a big lab.
    The lab schema's references do not recurse, so inlining ends.
    """
    defs = schema.get("$defs", {}) if defs is None else defs
    if isinstance(schema, list):
        return [_inline_refs(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs:
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {**target, **{k: _inline_refs(v, defs) for k, v in schema.items() if k != "$ref"}}
    return {k: _inline_refs(v, defs) if k != "$defs" else v for k, v in schema.items()}


def schema_problems(spec: Spec, data: Any, schema: dict[str, Any]) -> list[tuple[Path_, Problem]]:
    """One problem per cause, each at the key it is about, with the path it concerns."""
    validator = _lab_validator() if schema is lab_schema() else _Validator(_inline_refs(schema))
    by_path: dict[Path_, list[jsonschema.ValidationError]] = {}
    for error in validator.iter_errors(data):
        by_path.setdefault(tuple(error.absolute_path), []).append(error)
    found: list[tuple[Path_, Problem]] = []
    for path, errors in by_path.items():
        found += _object_problems(spec, path, errors)
        rest = [e for e in errors if e.validator not in ("additionalProperties", "required")]
        if rest:  # one message per value: `replicas: 2.5` is not an integer, and that says it all
            error = min(rest, key=lambda e: (e.validator != "type", _depth(e)))
            found.append(_value_problem(spec, path, error))
    return found


def _depth(error: jsonschema.ValidationError) -> int:
    return len(error.schema_path)


def _where(path: Path_) -> str:
    return _clip(".".join(str(p) for p in path), 120) or "lab"


def _object_problems(spec: Spec, path: Path_, errors: list[jsonschema.ValidationError]) -> list[tuple[Path_, Problem]]:
    """Unknown keys, each at its own line, and missing keys — except one a typo of an unknown key explains."""
    unknown: dict[str, None] = {}  # dicts as ordered sets: a file may hold thousands of unknown keys
    missing: dict[str, None] = {}
    known: list[str] = []
    for error in errors:
        if not isinstance(error.instance, dict) or not isinstance(error.schema, dict):
            continue
        properties = error.schema.get("properties", {})
        if error.validator == "additionalProperties":
            known = list(properties)
            unknown.update((k, None) for k in error.instance if k not in properties)
        elif error.validator == "required":
            missing.update((k, None) for k in error.schema.get("required", []) if k not in error.instance)
    found: list[tuple[Path_, Problem]] = []
    for n, key in enumerate(unknown):
        close = difflib.get_close_matches(key, known, n=1) if n < MAX_PROBLEMS else []
        hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(known)
        if close:
            missing.pop(close[0], None)
        found.append(
            ((*path, key), spec.problem((*path, key), f"{spec.where(path)}: unknown key {_shorten(key)}", hint))
        )
    for key in missing:
        found.append((path, spec.problem(path, f"{spec.where(path)}: missing key {key!r}", _describe_key(errors, key))))
    return found


def _describe_key(errors: list[jsonschema.ValidationError], key: str) -> str:
    for error in errors:
        described = error.schema.get("properties", {}).get(key) if isinstance(error.schema, dict) else None
        if isinstance(described, dict) and "description" in described:
            return str(described["description"])
    return ""


def _value_problem(spec: Spec, path: Path_, error: jsonschema.ValidationError) -> tuple[Path_, Problem]:
    hint = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    message = error.message
    if error.validator == "type" and error.validator_value == "integer" and isinstance(error.instance, float):
        hint = "a whole number, as Kubernetes reads it: 80, not 80.0"
    if error.validator in ("anyOf", "oneOf"):
        message = "matches none of the accepted forms"
    elif "propertyNames" in error.schema_path and isinstance(error.instance, str):
        path = (*path, error.instance)  # the key itself is wrong: point at it
        message = f"key {message}"
    elif repr(error.instance) and message.startswith(repr(error.instance)):
        message = _shorten(error.instance) + message[len(repr(error.instance)) :]
    where = spec.where(path[:-1] if "propertyNames" in error.schema_path else path)
    return path, spec.problem(path, f"{where}: {_clip(message)}", hint)


def spec_text(spec: Spec) -> str:
    """The spec as YAML: what a lab keeps in its router, and what `render` writes there."""
    return yaml.safe_dump(spec.data, sort_keys=False)
