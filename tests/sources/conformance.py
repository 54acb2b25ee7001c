"""The conformance suite every connector passes on its sample files (tests/sources/<name>/samples/).

Each check is a plain function taking the connector, its samples folder and a scratch folder,
so a connector's own test module can call them too (the scaffold's does).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from sources.errors import SourceError
from sources.sdk import Connector, FileReader, discover
from warehouse.land import land
from warehouse.settings import Settings
from warehouse.workdb import open_work_db

TESTS = Path(__file__).resolve().parent


def samples_of(connector: Connector) -> Path:
    return TESTS / connector.name / "samples"


def sample_files(connector: Connector) -> list[tuple[Path, FileReader]]:
    files = []
    for path in sorted(samples_of(connector).iterdir()):
        specs = connector.readers_for(path.name)
        if specs:
            files.append((path, specs[0]))
    return files


def read(connector: Connector, path: Path, contract: str | None = None) -> dict:
    ctx = replace(connector.context("Asia/Shanghai"), contract=contract or connector.contract)
    return connector.read(path, ctx)


def _load_rows(path: Path, spec: FileReader, encoding: str) -> pd.DataFrame:
    if spec.format == "jsonl":
        return pd.DataFrame([json.loads(line) for line in path.read_text(encoding=encoding).splitlines() if line])
    if spec.format == "xlsx":
        return pd.read_excel(path, dtype=str, engine="openpyxl")
    return pd.read_csv(path, dtype=str, encoding=encoding, keep_default_na=False)


def _save_rows(frame: pd.DataFrame, path: Path, spec: FileReader, encoding: str) -> None:
    if spec.format == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records")),
                        encoding=encoding)
    elif spec.format == "xlsx":
        frame.to_excel(path, index=False, engine="openpyxl")
    else:
        frame.to_csv(path, index=False, encoding=encoding)


def drifted(connector: Connector, path: Path, spec: FileReader, scratch: Path, change) -> Path:
    """A copy of a sample file with ``change(frame) -> frame`` applied to its rows."""
    out = scratch / path.name
    _save_rows(change(_load_rows(path, spec, connector.encoding)), out, spec, connector.encoding)
    return out


# --- the checks -------------------------------------------------------------------------------

def check_declaration(connector: Connector) -> None:
    """The connector has a README and sample files; a bad declaration is rejected clearly."""
    assert connector.folder and (connector.folder / "README.md").exists(), f"{connector.name}: no README.md"
    assert sample_files(connector), f"{connector.name}: no sample files in {samples_of(connector)}"
    with pytest.raises(ValueError, match="contract 'sometimes' is not one of"):
        replace(connector, contract="sometimes")


def check_entities_and_keys(connector: Connector) -> None:
    """Every declared entity comes out of the samples; keys exist, are non-null and unique after dedup."""
    produced: dict[str, list[pd.DataFrame]] = {}
    for path, _ in sample_files(connector):
        for entity, table in read(connector, path).items():
            assert entity in {s.entity for s in connector.streams}, f"{path.name} produced undeclared {entity}"
            produced.setdefault(entity, []).append(table.to_pandas())
    for stream in connector.streams:
        assert stream.entity in produced, f"{connector.name}: no sample produces {stream.entity}"
        frame = pd.concat(produced[stream.entity], ignore_index=True)
        clean = frame[frame["_errors"].isna()]
        for key in stream.key:
            assert key in frame.columns and clean[key].notna().all(), f"{stream.entity}.{key} has NULLs"
        deduplicated = clean.drop_duplicates(subset=list(stream.key), keep="last")
        assert not deduplicated.duplicated(subset=list(stream.key)).any()


def check_deterministic(connector: Connector) -> None:
    """Two reads of the same file give identical tables."""
    for path, _ in sample_files(connector):
        first, second = read(connector, path), read(connector, path)
        assert {k: v.to_pylist() for k, v in first.items()} == {k: v.to_pylist() for k, v in second.items()}


def check_incremental(connector: Connector, scratch: Path) -> None:
    """Landing the same files again lands nothing new."""
    inbox = scratch / "inbox"
    shutil.copytree(samples_of(connector), inbox / connector.name)
    settings = Settings.from_env(data_dir=scratch / "data", inbox=inbox)
    con = open_work_db(settings)
    try:
        first = land(con, settings, "first", {connector.name: connector})
        second = land(con, settings, "second", {connector.name: connector})
    finally:
        con.close()
    assert first.rows_landed > 0 and not first.failures
    assert second.rows_landed == 0 and second.files_landed == 0
    assert len(second.duplicates) == second.files_seen


def check_schema_drift(connector: Connector, scratch: Path) -> None:
    """Added, removed and retyped columns behave as the contract mode says."""
    path, spec = sample_files(connector)[0]
    added = drifted(connector, path, spec, scratch, lambda f: f.assign(loyalty_note="vip"))
    evolved = read(connector, added, "evolve")
    assert all(t.num_rows for t in evolved.values())
    assert any("loyalty_note" in (a or "") for t in evolved.values() for a in t.column("attributes").to_pylist())
    with pytest.raises(SourceError, match="loyalty_note"):
        read(connector, added, "freeze")
    discarded = read(connector, added, "discard_row")
    assert all(e and "not in the contract" in e for t in discarded.values() for e in t.column("_errors").to_pylist())

    optional = [c for c in spec.columns if c not in spec.required]
    if optional:
        removed = drifted(connector, path, spec, scratch, lambda f: f.drop(columns=[optional[-1]]))
        assert all(t.num_rows for t in read(connector, removed, "evolve").values())
        with pytest.raises(SourceError, match="missing"):
            read(connector, removed, "freeze")
    without_key = drifted(connector, path, spec, scratch, lambda f: f.drop(columns=[spec.required[0]]))
    with pytest.raises(SourceError, match="missing required column"):
        read(connector, without_key, "evolve")

    if spec.typed:
        retyped = drifted(connector, path, spec, scratch, lambda f: f.assign(**{spec.typed[0]: "not-a-value"}))
        tables = read(connector, retyped, "evolve")
        assert any(e and spec.typed[0] in e for t in tables.values() for e in t.column("_errors").to_pylist())


def check_bad_files(connector: Connector, scratch: Path) -> None:
    """Empty file, wrong encoding, a byte the encoding cannot hold and a truncated last line fail
    or quarantine, naming the file."""
    path, spec = sample_files(connector)[0]
    empty = scratch / path.name
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as err:
        read(connector, empty)
    assert path.name in str(err.value) and "Fix:" in str(err.value)

    wrong = scratch / path.name
    if spec.format == "xlsx":
        wrong.write_bytes(b"PK\x03\x04 this is not a workbook")
    else:
        wrong.write_bytes(path.read_bytes().decode(connector.encoding).encode("utf-16"))
    with pytest.raises(SourceError) as err:
        read(connector, wrong)
    assert path.name in str(err.value)

    data = path.read_bytes()
    if spec.format != "xlsx":  # a byte the encoding cannot hold, inside a value of the last line
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        at = data.index(b'": "', last) + 4 if spec.format == "jsonl" else last + 1
        stray = scratch / path.name
        stray.write_bytes(data[:at] + b"\xff" + data[at:])
        with pytest.raises(SourceError) as err:
            read(connector, stray)
        assert path.name in str(err.value) and f"not valid {connector.encoding}" in str(err.value)

    truncated = scratch / path.name
    truncated.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 12])
    try:
        tables = read(connector, truncated)
    except SourceError as exc:
        assert path.name in str(exc)
    else:
        errors = [e for t in tables.values() for e in t.column("_errors").to_pylist() if e]
        assert errors, "a truncated last line must not load silently"


CHECKS = ["declaration", "entities_and_keys", "deterministic", "incremental", "schema_drift", "bad_files"]


def run_check(name: str, connector: Connector, scratch: Path) -> None:
    check = globals()[f"check_{name}"]
    if "scratch" in check.__code__.co_varnames[: check.__code__.co_argcount]:
        check(connector, scratch)
    else:
        check(connector)


def registered() -> list[str]:
    return list(discover())
