"""Large exports read in parts give the rows the whole file gives."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sources.parts import PartsAbandoned, jsonl_parts, line_count
from sources.sdk import discover

SAMPLES = Path(__file__).parent
FILES = [("web", "web/samples/users.jsonl"), ("web", "web/samples/orders.jsonl"), ("web", "web/samples/events.jsonl"),
         ("store", "store/samples/members.csv"), ("store", "store/samples/pos_transactions.csv"),
         ("marketplace", "marketplace/samples/orders_20261022.csv"),
         ("zoho_crm", "zoho_crm/samples/Contacts_export.csv"), ("zoho_crm", "zoho_crm/samples/Cases_export.csv")]


def _read(connector_name: str, path: Path, part_bytes: int) -> tuple[int, dict[str, pa.Table]]:
    connector = discover()[connector_name]
    parts = list(connector.read_in_parts(path, connector.context("Asia/Shanghai"), part_bytes))
    entities = {e for tables in parts for e in tables}
    return len(parts), {e: pa.concat_tables([t[e] for t in parts if e in t]).sort_by("_row") for e in entities}


def _latest_per_buyer(table: pa.Table) -> list:
    """A marketplace buyer's record from a file: the latest of their rows (a buyer whose orders
    fall in two parts gets a record from each; staging keeps the latest)."""
    latest = table.group_by("source_customer_id").aggregate([("updated_at", "max")])
    return sorted(latest.to_pylist(), key=lambda r: r["source_customer_id"])


@pytest.mark.parametrize("connector_name,name", FILES, ids=[n for _, n in FILES])
def test_a_file_read_in_parts_gives_the_rows_of_the_whole_file(connector_name, name):
    path = SAMPLES / name
    _, whole = _read(connector_name, path, path.stat().st_size)
    n_parts, parts = _read(connector_name, path, 300)
    assert n_parts > 1
    assert parts.keys() == whole.keys()
    for entity in whole:
        if connector_name == "marketplace" and entity == "customer_record":
            assert _latest_per_buyer(parts[entity]) == _latest_per_buyer(whole[entity])
        else:
            assert parts[entity].equals(whole[entity]), entity


@pytest.mark.parametrize("ending", ["\n", ""], ids=["newline at the end", "no newline at the end"])
def test_json_lines_parts_are_whole_lines_that_add_up_to_the_file(tmp_path, ending):
    lines = [f'{{"n": {i}, "pad": "{"x" * (i % 7)}"}}' for i in range(40)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(("\n".join(lines) + ending).encode())
    data = path.read_bytes()
    for part_bytes in [1, 5, len(lines[0]), len(lines[0]) + 1, 100, len(data) - 1, len(data), len(data) + 5]:
        parts = list(jsonl_parts(path, part_bytes))
        assert b"".join(p.data for p in parts) == data, part_bytes
        assert all(p.data.endswith(b"\n") for p in parts[:-1])
        assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
        assert [p.offset for p in parts] == [sum(len(q.data) for q in parts[:k]) for k in range(len(parts))]
        assert [p.first_line for p in parts] == [1 + sum(q.rows for q in parts[:k]) for k in range(len(parts))]
        assert [p.rows for p in parts] == [line_count(p.data) for p in parts]
        assert sum(p.rows for p in parts) == len(lines)


def test_a_receipt_is_never_cut_between_parts(tmp_path):
    connector = discover()["store"]
    path = SAMPLES / "store/samples/pos_transactions.csv"
    for tables in connector.read_in_parts(path, connector.context("Asia/Shanghai"), 300):
        lines = tables["order_line"]
        orders = tables["order"]
        assert set(lines.column("order_id").to_pylist()) == set(orders.column("order_id").to_pylist())
        assert pc.count_distinct(orders.column("order_id")).as_py() == orders.num_rows


def _pos_file(tmp_path: Path, body: list[str], ending: str = "\n") -> Path:
    header = (SAMPLES / "store/samples/pos_transactions.csv").read_bytes().decode("gbk").splitlines()[0]
    path = tmp_path / "pos_transactions.csv"
    path.write_bytes((header + "\n" + "\n".join(body) + ending).encode("gbk"))
    return path


LINE = "R{receipt},{line},M001,13800000000,2026/11/20 10:00,S01,SKU1,服饰,1,10.00,10.00,销售"


def test_parts_of_a_file_whose_receipts_are_not_adjacent_are_abandoned(tmp_path):
    receipts = [1, 2, 1, 3, 2] * 20  # a receipt's lines apart from each other
    path = _pos_file(tmp_path, [LINE.format(receipt=r, line=i) for i, r in enumerate(receipts)])
    with pytest.raises(PartsAbandoned, match="小票号 'R[12]' are not all together"):
        _read("store", path, 200)


def test_a_short_last_row_is_flagged_in_the_last_part(tmp_path):
    body = [LINE.format(receipt=i, line=1) for i in range(60)]
    path = _pos_file(tmp_path, [*body, "R99,1,M001,13800000000,2026/11/20 10:00,S01,SKU1,服饰,1,10.00,10.00,"], ending="")
    n_parts, tables = _read("store", path, 300)
    assert n_parts > 3
    errors = tables["order_line"].column("_errors").to_pylist()
    assert errors[:-1] == [None] * 60 and "truncated" in errors[-1]


def test_parts_of_a_file_pyarrow_refuses_are_abandoned(tmp_path):
    body = [LINE.format(receipt=i, line=1) for i in range(60)]
    body[30] = "R30,1,M001"  # a short row: pyarrow refuses it, pandas reads it whole (tests/warehouse/test_land.py)
    path = _pos_file(tmp_path, body)
    with pytest.raises(PartsAbandoned, match="pyarrow cannot read it in parts"):
        _read("store", path, 300)


def test_parts_of_a_file_with_a_row_longer_than_a_part_are_abandoned(tmp_path):
    connector = discover()["zoho_crm"]
    path = SAMPLES / "zoho_crm/samples/Contacts_export.csv"
    with pytest.raises(PartsAbandoned, match="pyarrow cannot read it in parts"):
        list(connector.read_in_parts(path, connector.context("Asia/Shanghai"), 40))
