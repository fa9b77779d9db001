"""spec/ and nvfs_tools/format.py describe the same format: keep them in step.

Every ``### Structure: KEY`` table in spec/*.md must list exactly the fields of
``format.STRUCTURES[KEY]`` (names, offsets, sizes, types, in order, padding
included), every structure must have a table, and every tabulated constant must
equal the value in format.py.  A failure names the structure and the field that
drifted, so whoever changed one side knows what to change on the other.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from construct import Array, Bytes, Const, FormatField, Padded, Renamed, Struct

from nvfs_tools import format as fmt
from nvfs_tools.namehash import siphash24_pure

SPEC_DIR = Path(__file__).resolve().parent.parent / "spec"
STRUCT_COLUMNS = ["Offset", "Size", "Type", "Name", "Meaning", "Valid values"]
CONST_COLUMNS = ["Name", "Value", "Meaning"]
HEADING = re.compile(r"^#{1,6}\s+(Structure|Constants):\s*(.+?)\s*$")

#: Constant families that must be documented completely: a new name in
#: format.py matching one of these patterns fails until spec/ lists it.
COMPLETE_FAMILIES = [
    r"FEATURE_\w+",
    r"STATE_\w+",
    r"DT_\w+",
    r"S_IF\w+",
    r"INODE_FLAG\w*",
    r"XATTR_INDEX_\w+",
    r"\w+_INO",
    r"\w+_MAGIC",
    r"MAGIC",
    r"RADIX_\w+",
]

TYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s8": 1, "s16": 2, "s32": 4, "s64": 8}


@dataclass(frozen=True)
class Row:
    """One row of a structure table, as written in spec/."""

    offset: int
    size: int
    type: str
    name: str
    source: str


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row; ``\\|`` is a literal bar inside a cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def spec_tables() -> dict[tuple[str, str], tuple[list[str], list[list[str]], str]]:
    """Every (kind, key) heading in spec/*.md with the table that follows it."""
    tables: dict[tuple[str, str], tuple[list[str], list[list[str]], str]] = {}
    for path in sorted(SPEC_DIR.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = HEADING.match(line)
            if not match:
                continue
            key = (match.group(1), match.group(2))
            where = f"{path.name}:{number + 1}"
            assert key not in tables, f"{where}: second table for {key[0]} {key[1]!r}"
            tables[key] = read_table(lines, number + 1, where)
    return tables


def read_table(lines: list[str], start: int, where: str) -> tuple[list[str], list[list[str]], str]:
    """The first markdown table after line ``start`` (blank lines may precede it)."""
    index = start
    while index < len(lines) and not lines[index].strip():
        index += 1
    table = []
    while index < len(lines) and lines[index].lstrip().startswith("|"):
        table.append(lines[index])
        index += 1
    assert len(table) >= 2, f"{where}: heading not followed by a table"
    header = split_row(table[0])
    assert re.fullmatch(r"[\s|:-]+", table[1]), f"{where}: second table line is not a separator"
    return header, [split_row(row) for row in table[2:]], where


TABLES = spec_tables()


def structure_rows(key: str) -> list[Row]:
    assert ("Structure", key) in TABLES, f"no '### Structure: {key}' table in spec/"
    header, rows, where = TABLES[("Structure", key)]
    assert header == STRUCT_COLUMNS, f"{where}: columns {header} != {STRUCT_COLUMNS}"
    parsed = []
    for cells in rows:
        assert len(cells) == len(STRUCT_COLUMNS), f"{where}: row {cells} has {len(cells)} cells"
        offset, size, type_, name = cells[:4]
        assert offset.isdigit() and size.isdigit(), f"{where}: field {name!r}: offset/size must be decimal"
        parsed.append(Row(int(offset), int(size), type_, name.strip("`"), where))
    return parsed


def construct_type(sub) -> str:
    """The spec's type name for one field of a construct Struct."""
    while isinstance(sub, Renamed):
        sub = sub.subcon
    if isinstance(sub, Padded):
        return "pad"
    if isinstance(sub, FormatField):
        code = sub.fmtstr[-1]
        assert code in "bBhHiIlLqQ", f"non-integer field {sub!r}"
        return f"{'s' if code.islower() else 'u'}{8 * sub.sizeof()}"
    if isinstance(sub, Const):
        return construct_type(sub.subcon)
    if isinstance(sub, Bytes):
        return f"u8[{sub.sizeof()}]"
    if isinstance(sub, Array):
        return f"{construct_type(sub.subcon)}[{sub.count}]"
    if isinstance(sub, Struct):
        for key, struct in fmt.STRUCTURES.items():
            if struct is sub:
                return key
    raise AssertionError(f"no spec type name for {sub!r}")


def type_size(type_: str) -> int | None:
    """Size implied by a spec type name, None for ``pad``."""
    match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", type_)
    assert match, f"unparseable type {type_!r}"
    base, count = match.group(1), int(match.group(2) or 1)
    if base == "pad":
        return None
    if base in TYPE_SIZES:
        return TYPE_SIZES[base] * count
    assert base in fmt.STRUCTURES, f"type {type_!r} is neither scalar nor a structure key"
    return fmt.STRUCTURES[base].sizeof() * count


@pytest.mark.parametrize("key", sorted(fmt.STRUCTURES))
def test_every_structure_has_a_table(key):
    assert ("Structure", key) in TABLES, (
        f"format.STRUCTURES[{key!r}] has no '### Structure: {key}' table in spec/ (document it)"
    )


def test_no_table_for_unknown_structure():
    documented = {key for kind, key in TABLES if kind == "Structure"}
    stale = documented - set(fmt.STRUCTURES)
    assert not stale, f"spec/ documents structures format.STRUCTURES does not have: {sorted(stale)}"


@pytest.mark.parametrize("key", sorted(fmt.STRUCTURES))
def test_structure_table_matches_schema(key):
    struct = fmt.STRUCTURES[key]
    rows = structure_rows(key)
    layout = list(fmt.field_layout(struct).values())
    spec_names = [row.name for row in rows]
    code_names = [field.name for field in layout]
    assert spec_names == code_names, (
        f"{key}: spec fields {spec_names}\n  != format.py fields {code_names}\n"
        f"  missing in spec: {[n for n in code_names if n not in spec_names]}, "
        f"extra in spec: {[n for n in spec_names if n not in code_names]}"
    )
    for row, field in zip(rows, layout, strict=True):
        assert (row.offset, row.size) == (field.offset, field.size), (
            f"{row.source}: {key}.{row.name}: spec says offset {row.offset} size {row.size}, "
            f"format.py says offset {field.offset} size {field.size}"
        )
    assert rows[-1].offset + rows[-1].size == struct.sizeof(), f"{key}: table does not cover {struct.sizeof()} bytes"


@pytest.mark.parametrize("key", sorted(fmt.STRUCTURES))
def test_structure_types_match_schema(key):
    struct = fmt.STRUCTURES[key]
    for row, sub in zip(structure_rows(key), struct.subcons, strict=True):
        expected = construct_type(sub)
        assert row.type == expected, f"{row.source}: {key}.{row.name}: spec type {row.type!r}, format.py {expected!r}"
        implied = type_size(row.type)
        assert implied in (None, row.size), f"{row.source}: {key}.{row.name}: type {row.type} is not {row.size} bytes"


def constant_rows() -> list[tuple[str, str, str, str]]:
    """(table, name, value text, where) for every row of every constants table."""
    found = []
    for (kind, key), (header, rows, where) in TABLES.items():
        if kind != "Constants":
            continue
        assert header == CONST_COLUMNS, f"{where}: columns {header} != {CONST_COLUMNS}"
        for cells in rows:
            assert len(cells) == 3, f"{where}: row {cells} has {len(cells)} cells"
            found.append((key, cells[0].strip("`"), cells[1].strip("`"), where))
    return found


def test_format_constants_match():
    checked = 0
    for table, name, value_text, where in constant_rows():
        if table in ("siphash vectors", "xattr prefixes"):
            continue
        assert hasattr(fmt, name), f"{where}: spec documents {name}, which format.py does not define"
        value = ast.literal_eval(value_text)
        actual = getattr(fmt, name)
        assert actual == value, f"{where}: {name} is {value_text} in spec/ but {actual!r} in format.py"
        checked += 1
    assert checked >= 50, f"only {checked} constants tabulated; tables not found?"


def test_constant_families_fully_documented():
    documented = {name for _, name, _, _ in constant_rows()}
    for attr in dir(fmt):
        if not attr.isupper():
            continue
        if any(re.fullmatch(pattern, attr) for pattern in COMPLETE_FAMILIES):
            assert attr in documented, f"format.{attr} is not documented in a '### Constants:' table of spec/"


def test_xattr_prefixes_match():
    rows = [(name, value, where) for table, name, value, where in constant_rows() if table == "xattr prefixes"]
    spec = {int(name): ast.literal_eval(value) for name, value, _ in rows}
    assert spec == fmt.XATTR_PREFIXES, f"spec/ xattr prefixes {spec} != format.XATTR_PREFIXES"


def test_siphash_vectors_match():
    rows = [(name, value, where) for table, name, value, where in constant_rows() if table == "siphash vectors"]
    assert rows, "spec/ has no siphash test vectors"
    key = bytes(range(16))
    for name, value, where in rows:
        message = ast.literal_eval(name)
        assert siphash24_pure(key, message) == int(value, 16), f"{where}: hash of {message!r} drifted"


UNJUDGED_COLUMNS = ["Structure", "Field", "When", "Change", "Why"]
CHANGE_KINDS = re.compile(
    r"any|increase|non-NUL|bits (0x[0-9A-Fa-f]+|0o[0-7]+|\d+)|below (\d+)|valid device number"
    r"|decrease within the last mapped block|another name index of the same kind|longer within the entry's padding"
)


def field_paths(struct, prefix: str = "") -> dict[str, int]:
    """Every addressable path of a structure (leaves, arrays, nested structs) -> size in bytes."""
    paths: dict[str, int] = {}
    for sub in struct.subcons:
        if sub.name is None:
            continue
        path = prefix + sub.name
        paths[path] = sub.sizeof()
        inner = sub.subcon if isinstance(sub, Renamed) else sub
        if isinstance(inner, Struct):
            paths.update(field_paths(inner, path + "."))
        elif isinstance(inner, Array):
            for index in range(inner.count):
                paths[f"{path}[{index}]"] = inner.subcon.sizeof()
                if isinstance(inner.subcon, Struct):
                    paths.update(field_paths(inner.subcon, f"{path}[{index}]."))
    return paths


def test_unjudged_fields_exist():
    """The fuzz campaign's list of undetectable changes names real fields (spec/checking.md 13)."""
    assert ("Unjudged", "fields") in UNJUDGED_TABLE, "no '### Unjudged fields' table in spec/"
    header, rows, where = UNJUDGED_TABLE[("Unjudged", "fields")]
    assert header == UNJUDGED_COLUMNS, f"{where}: columns {header} != {UNJUDGED_COLUMNS}"
    assert rows, f"{where}: empty table"
    for cells in rows:
        assert len(cells) == len(UNJUDGED_COLUMNS), f"{where}: row {cells}"
        key, field, _when, change = (cell.strip("`") for cell in cells[:4])
        assert key in fmt.STRUCTURES, f"{where}: unjudged field of unknown structure {key!r}"
        paths = field_paths(fmt.STRUCTURES[key])
        pattern = re.compile(re.escape(field).replace(r"\*", ".*"))
        matched = [path for path in paths if pattern.fullmatch(path)]
        assert matched, f"{where}: {key}.{field} (listed as unjudged) is not a field of format.STRUCTURES[{key!r}]"
        kind = CHANGE_KINDS.fullmatch(change)
        assert kind, f"{where}: {key}.{field}: unknown change kind {change!r}"
        if kind.group(1):
            mask = ast.literal_eval(kind.group(1))
            for path in matched:
                assert mask < 1 << (8 * paths[path]), f"{where}: mask {change} wider than {key}.{path}"


def spec_unjudged() -> dict:
    tables = {}
    for path in sorted(SPEC_DIR.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if re.match(r"^#{1,6}\s+Unjudged fields\s*$", line):
                tables[("Unjudged", "fields")] = read_table(lines, number + 1, f"{path.name}:{number + 1}")
    return tables


UNJUDGED_TABLE = spec_unjudged()


def test_layout_helpers_cover_whole_structures():
    """field_layout is contiguous and sums to the construct size (no hidden field)."""
    for key, struct in fmt.STRUCTURES.items():
        offset = 0
        for field in fmt.field_layout(struct).values():
            assert field.offset == offset, f"{key}.{field.name} starts at {field.offset}, expected {offset}"
            offset += field.size
        assert offset == struct.sizeof(), f"{key}: fields cover {offset} of {struct.sizeof()} bytes"
