"""Connectors without Python: a ``mapping.yaml`` maps an export's columns to canonical ones.

    name: zoho_crm
    description: Zoho CRM contacts export (CSV)
    encoding: utf-8-sig
    contract: evolve            # evolve | freeze | discard_row
    files:
      - pattern: "Contacts*.csv"
        format: csv             # csv | xlsx | jsonl
        entity: customer_record
        key: [source_customer_id]
        cursor: updated_at
        columns:
          source_customer_id: Record Id                      # copy the text
          name: {from: [First Name, Last Name], join: " "}   # several columns joined
          registered_at: {from: Created Time, parse: timestamp, format: "%Y-%m-%d %H:%M:%S", timezone: local}
          email_opt_in: {from: Email Opt Out, parse: flag, "true": ["false"], "false": ["true"]}
          gender: {from: 性别, map: {男: M, 女: F}}
          amount: {from: 金额（分）, parse: number, multiply: 0.01}
          city: {from: 收货地址, split: {separator: " ", part: 1}}  # one part of a field
          channel: {value: store}                            # a constant

Transforms run in this order: from/join, split, map, parse (text, timestamp, date, number,
flag), multiply.  ``timezone: local`` reads naive times in the business time zone.  Columns
of the export that no rule uses go to the record's ``attributes`` JSON.  Every problem in the
file is reported at file:line:column with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rules.yaml_positions import Mapping, Position, load
from sources.entities import ENTITIES
from sources.errors import MappingError
from sources.sdk import (CONTRACT_MODES, Connector, FileReader, ReadContext, RowErrors, Stream, clean_text,
                         enforce_contract, parse_date, parse_flag, parse_number, parse_timestamp, read_export,
                         relabel, to_entity_table)

MAPPING_FILE = "mapping.yaml"
FORMATS = ("csv", "xlsx", "jsonl")
PARSERS = ("text", "timestamp", "date", "number", "flag")
SETTINGS = ("from", "value", "join", "split", "map", "parse", "format", "timezone", "multiply", "true", "false")


@dataclass(frozen=True)
class ColumnRule:
    target: str
    sources: tuple[str, ...] = ()
    value: str | None = None
    join: str = ""
    split: tuple[str, int] | None = None
    map: dict | None = None
    parse: str = "text"
    format: str | tuple[str, ...] | None = None
    timezone: str = "UTC"
    multiply: float | None = None
    true: tuple[str, ...] = ("true", "1", "yes", "是")
    false: tuple[str, ...] = ("false", "0", "no", "否")

    def apply(self, raw: pd.DataFrame, errors: RowErrors, ctx: ReadContext) -> pd.Series:
        if self.value is not None:
            return pd.Series([self.value] * len(raw), index=raw.index, dtype="object")
        text = clean_text(raw[self.sources[0]])
        for other in self.sources[1:]:
            more = clean_text(raw[other])
            text = text.where(more.isna(), text.fillna("") + self.join + more.fillna("")).where(
                text.notna() | more.notna())
        if self.split:
            text = _part(text, *self.split)
        if self.map:
            text = relabel(text, self.map)
        label = "+".join(self.sources)
        if self.parse == "timestamp":
            zone = ctx.timezone if self.timezone == "local" else self.timezone
            return parse_timestamp(text, label, errors, fmt=self.format, tz=zone)
        if self.parse == "date":
            return parse_date(text, label, errors, fmt=self.format)
        if self.parse == "flag":
            return parse_flag(text, label, errors, self.true, self.false)
        if self.parse == "number":
            number = parse_number(text, label, errors)
            return number * self.multiply if self.multiply is not None else number
        return text


def _part(text: pd.Series, separator: str, part: int) -> pd.Series:
    """Each value's piece number ``part`` (counted from the end when negative) of those
    ``separator`` cuts it into, stripped; NULL where it has no such piece."""
    if text.isna().all():  # pandas gives the pieces of only NULLs as numbers, without .str
        return text
    return text.str.split(separator, regex=False).str.get(part).astype("str").str.strip()


@dataclass(frozen=True)
class FileMapping:
    pattern: str
    format: str
    entity: str
    key: tuple[str, ...]
    cursor: str | None
    columns: tuple[ColumnRule, ...]
    required: tuple[str, ...]

    @property
    def export_columns(self) -> list[str]:
        return list(dict.fromkeys(s for rule in self.columns for s in rule.sources))


def _fail(where: Position, problem: str, fix: str) -> MappingError:
    return MappingError(where.file, where.line, where.column, problem, fix)


def _rule(target: str, spec, where: Position) -> ColumnRule:
    if isinstance(spec, str):
        return ColumnRule(target, sources=(spec,))
    if not isinstance(spec, Mapping):
        raise _fail(where, f"column {target!r} must be an export column name or a mapping",
                    "write 'target: Export Column' or 'target: {from: Export Column, parse: ...}'")
    unknown = set(spec) - set(SETTINGS)
    if unknown:
        raise _fail(spec.position, f"column {target!r} has unknown setting(s) {sorted(unknown)}",
                    f"use {', '.join(SETTINGS)}")
    if ("from" in spec) == ("value" in spec):
        raise _fail(spec.position, f"column {target!r} needs exactly one of 'from' or 'value'",
                    "name the export column(s) with from:, or a constant with value:")
    sources = spec.get("from", ())
    sources = (sources,) if isinstance(sources, str) else tuple(str(s) for s in sources)
    parse = spec.get("parse", "text")
    if parse not in PARSERS:
        raise _fail(spec.positions["parse"], f"column {target!r}: parse {parse!r} is not known",
                    f"use one of {', '.join(PARSERS)}")
    split = spec.get("split")
    if split is not None and not (isinstance(split, Mapping) and "separator" in split):
        raise _fail(spec.positions["split"], f"column {target!r}: split needs a separator",
                    "write split: {separator: ' ', part: 0}")
    flags = {k: tuple(str(v) for v in spec[k]) for k in ("true", "false") if k in spec}
    return ColumnRule(target, sources=sources, value=None if "value" not in spec else str(spec["value"]),
                      join=str(spec.get("join", "")),
                      split=(str(split["separator"]), int(split.get("part", 0))) if split else None,
                      map={str(k): str(v) for k, v in spec["map"].items()} if "map" in spec else None,
                      parse=parse, format=_format(spec.get("format")), timezone=str(spec.get("timezone", "UTC")),
                      multiply=float(spec["multiply"]) if "multiply" in spec else None, **flags)


def _format(value) -> str | tuple[str, ...] | None:
    """One format, or a list tried in order (exports that mix 2026/11/21, 2026-11-21, 20261121)."""
    return tuple(str(v) for v in value) if isinstance(value, list) else value


def _file_mapping(spec: Mapping) -> FileMapping:
    for required in ("pattern", "entity", "key", "columns"):
        if required not in spec:
            raise _fail(spec.position, f"a file entry has no {required!r}", f"add '{required}:' to it")
    entity = spec["entity"]
    if entity not in ENTITIES:
        raise _fail(spec.positions["entity"], f"entity {entity!r} is not a canonical entity",
                    f"use one of {', '.join(ENTITIES)}")
    fmt = spec.get("format", "csv")
    if fmt not in FORMATS:
        raise _fail(spec.positions["format"], f"format {fmt!r} is not supported", f"use one of {', '.join(FORMATS)}")
    allowed = set(ENTITIES[entity].names) - {"_row", "_errors", "attributes", "source_record_id"}
    columns = spec["columns"]
    if not isinstance(columns, Mapping):
        raise _fail(spec.positions["columns"], "columns must map canonical names to export columns",
                    "write 'columns:' with one 'canonical_name: Export Column' per line")
    rules = []
    for target, rule_spec in columns.items():
        if target not in allowed:
            raise _fail(columns.positions[target], f"{target!r} is not a column of {entity}",
                        f"use one of {', '.join(sorted(allowed))}")
        rules.append(_rule(target, rule_spec, columns.positions[target]))
    key = tuple(spec["key"]) if isinstance(spec["key"], list) else (spec["key"],)
    targets = {r.target for r in rules}
    for k in key:
        if k not in targets:
            raise _fail(spec.positions["key"], f"key column {k!r} is not mapped", f"add '{k}:' under columns")
    key_sources = [s for r in rules if r.target in key for s in r.sources]
    return FileMapping(pattern=str(spec["pattern"]), format=fmt, entity=entity, key=key,
                       cursor=spec.get("cursor"), columns=tuple(rules),
                       required=tuple(spec.get("required", key_sources)))


def _reader(mapping: FileMapping, encoding: str, known: list[str]):
    """The reader for one file entry; ``known`` are the export's columns over every entry that
    reads the same files (the contract is about the file, not one entity of it)."""
    def read(path: Path, ctx: ReadContext) -> dict:
        raw, errors = read_export(path, mapping.format, encoding, ctx.part)
        raw = enforce_contract(path, raw, known, mapping.required, ctx.contract, errors)
        frame = pd.DataFrame({rule.target: rule.apply(raw, errors, ctx) for rule in mapping.columns})
        frame["_row"] = raw["_row"].to_numpy()
        keys = [frame[k].astype("string") for k in mapping.key]
        record_id = keys[0]
        for key in keys[1:]:
            record_id = record_id + "#" + key
        frame["source_record_id"] = record_id  # NULL when a key part is: validation quarantines the row
        extra = raw.drop(columns=[*known, "_row"], errors="ignore")
        return {mapping.entity: to_entity_table(mapping.entity, frame, errors, extra)}

    read.__doc__ = f"Read {mapping.pattern} ({mapping.format}) into {mapping.entity} as mapping.yaml says."
    return read


def connector_from_mapping(folder: Path) -> Connector:
    """Build a Connector from ``folder/mapping.yaml``; MappingError points at what is wrong."""
    path = folder / MAPPING_FILE
    spec = load(path, str(path), error=MappingError)
    for required in ("name", "description", "files"):
        if required not in spec:
            raise _fail(spec.position, f"mapping has no {required!r}", f"add '{required}:' at the top level")
    contract = spec.get("contract", "evolve")
    if contract not in CONTRACT_MODES:
        raise _fail(spec.positions["contract"], f"contract {contract!r} is not known",
                    f"use one of {', '.join(CONTRACT_MODES)}")
    if not isinstance(spec["files"], list) or not spec["files"]:
        raise _fail(spec.positions["files"], "files must be a list of file entries", "see docs/connectors.md")
    encoding = str(spec.get("encoding", "utf-8"))
    files = [_file_mapping(f) for f in spec["files"]]
    known = {f.pattern: list(dict.fromkeys(c for g in files if g.pattern == f.pattern for c in g.export_columns))
             for f in files}
    return Connector(
        name=str(spec["name"]), description=str(spec["description"]).strip(),
        streams=tuple(dict.fromkeys(Stream(f.entity, f.key, f.cursor) for f in files)),
        files=tuple(FileReader(f.pattern, _reader(f, encoding, known[f.pattern]), format=f.format,
                               columns=tuple(known[f.pattern]),
                               required=f.required,
                               typed=tuple(s for r in f.columns if r.parse != "text" for s in r.sources),
                               in_parts=f.format in ("jsonl", "csv"))  # one row per line
                    for f in files),
        encoding=encoding, contract=contract, options=tuple(spec.get("options", ())), folder=folder)
