"""Connectors read their sources' native exports into canonical Arrow tables."""

from __future__ import annotations

import pandas as pd
import pytest

from sources.entities import ENTITIES
from sources.errors import SourceError
from sources.sdk import ReadContext, discover


def _read(connector, path):
    return connector.read(path, ReadContext())


@pytest.mark.parametrize("name", ["web", "store", "marketplace"])
def test_every_sample_file_reads_into_the_declared_entities_with_canonical_schemas(name, sample_inbox):
    connector = discover()[name]
    declared = {s.entity for s in connector.streams}
    files = sorted((sample_inbox / name).iterdir())
    assert files
    for path in files:
        tables = _read(connector, path)
        assert set(tables) <= declared
        for entity, table in tables.items():
            assert table.schema == ENTITIES[entity], f"{path.name}: {entity} schema differs"
            assert table.num_rows > 0
            keys = connector.stream(entity).key
            for key in keys:
                assert table.column(key).null_count == 0, f"{path.name}: {entity}.{key} has NULLs"


def _read_pos_row(tmp_path, row: str) -> dict:
    """Read a one-line POS export (GBK, the store's header) through the store connector."""
    path = tmp_path / "pos_transactions.csv"
    header = "小票号,行号,会员卡号,手机号,交易时间,门店编号,商品编码,品类,数量,单价,金额,交易类型\n"
    path.write_bytes((header + row + "\n").encode("gbk"))
    return _read(discover()["store"], path)


def test_store_times_are_local_and_stored_in_utc(tmp_path):
    tables = _read_pos_row(tmp_path, "R1,1,M1,13812345678,2026/11/21 09:30,S001,SKU1,服饰,1,12.00,12.00,销售")
    order = tables["order"].to_pylist()[0]
    assert order["ordered_at"].isoformat() == "2026-11-21T01:30:00+00:00"
    assert order["channel"] == "store" and order["source_customer_id"] == "M1"


def test_amounts_tolerate_currency_symbols_and_thousands_separators(tmp_path):
    tables = _read_pos_row(tmp_path, 'R1,1,M1,13812345678,2026/11/21 09:30,S001,SKU1,服饰,1,"￥1,299.00","￥1,299.00",销售')
    assert tables["order"].column("amount").to_pylist() == [1299.0]
    assert tables["order_line"].column("category").to_pylist() == ["apparel"]


def test_a_file_in_the_wrong_encoding_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "members.csv"
    path.write_bytes("会员卡号,姓名\nM1,张三\n".encode("utf-16"))
    with pytest.raises(SourceError) as err:
        _read(discover()["store"], path)
    assert "members.csv" in str(err.value) and "gbk" in str(err.value) and "Fix:" in str(err.value)


def test_a_missing_required_column_is_named(tmp_path):
    path = tmp_path / "members.csv"
    path.write_bytes("卡号,姓名,手机号\nM1,张三,13812345678\n".encode("gbk"))
    with pytest.raises(SourceError, match=r"missing required column\(s\) \['会员卡号'\]"):
        _read(discover()["store"], path)


def test_unreadable_values_and_a_truncated_line_are_kept_with_their_problem(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text('{"order_id": "W1", "user_id": "U1", "created_at": "2026-11-20T10:00:00Z", "total": "12.5",'
                    ' "currency": "CNY", "status": "paid", "items": []}\n'
                    '{"order_id": "W2", "user_id": "U1", "created_at": "yesterday", "total": 3,'
                    ' "currency": "CNY", "status": "paid", "items": []}\n'
                    '{"order_id": "W3", "user_id": "U1", "crea\n', encoding="utf-8")
    orders = _read(discover()["web"], path)["order"].to_pylist()
    assert [o["_row"] for o in orders] == [1, 2, 3]
    assert orders[0]["_errors"] is None and orders[0]["amount"] == 12.5
    assert "created_at: cannot read 'yesterday'" in orders[1]["_errors"]
    assert "not a JSON object" in orders[2]["_errors"]


@pytest.mark.parametrize("items", [
    '[{"sku": " S1 ", "category": "home", "qty": 2, "price": 9.5}, null, {"sku": "S2", "price": 1}]',
    '[{"sku": "S3", "category": "food", "qty": "3", "price": "¥1,299.00"}]',
    '[{"sku": 7, "qty": 1.5, "price": null, "colour": "red"}]',
])
def test_order_items_read_by_arrow_equal_those_read_line_by_line(tmp_path, items):
    """A clean file's items are flattened by Arrow, a file with a bad line is read line by line
    and its items flattened by pandas: the same order lines either way."""
    orders = [f'{{"order_id": "W{i}", "user_id": "U1", "created_at": "2026-11-20T10:00:00Z", "total": 1,'
              f' "currency": "CNY", "status": "paid", "items": {value}}}' for i, value in
              enumerate([items, "[]", "null", items])]
    clean, broken = tmp_path / "orders.jsonl", tmp_path / "orders_broken.jsonl"
    clean.write_text("\n".join(orders) + "\n", encoding="utf-8")
    broken.write_text("\n".join(orders) + '\n{"order_id": "W9", "crea\n', encoding="utf-8")
    by_arrow = _read(discover()["web"], clean)["order_line"].to_pylist()
    by_lines = _read(discover()["web"], broken)["order_line"].to_pylist()
    assert by_arrow == by_lines
    assert [(line["order_id"], line["line_no"], line["_row"]) for line in by_arrow] == \
        [(f"W{i}", n, i + 1) for i in (0, 3) for n in range(1, len(by_arrow) // 2 + 1)]
    if "S1" in items:
        assert [(line["sku"], line["category"], line["quantity"], line["unit_price"]) for line in by_arrow[:2]] == \
            [("S1", "home", 2, 9.5), ("S2", None, None, 1)]


def test_discovery_finds_the_built_in_connectors():
    assert {"web", "store", "marketplace"} <= set(discover())


def test_an_installed_package_adds_a_connector_through_the_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "extra_source.py").write_text(
        "from sources.sdk import Connector, FileReader, Stream\n"
        "CONNECTOR = Connector(name='extra', description='from a package',\n"
        "    streams=(Stream('event', key=('event_id',)),), files=(FileReader('*.jsonl', lambda p, c: {}),))\n",
        encoding="utf-8")
    dist = tmp_path / "extra_source-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-source\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[tagwright.sources]\nextra = extra_source:CONNECTOR\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover()["extra"].description == "from a package"


def test_timestamps_keep_offsets_and_read_naive_values_in_local_time_with_several_formats():
    from sources.sdk import RowErrors, parse_date, parse_timestamp

    raw = pd.Series(["2026-11-20T10:00:00Z", "2026-11-20T18:00:00+08:00", "2026/11/20 18:00", "20261120 1800",
                     "yesterday", None])
    errors = RowErrors(len(raw))
    parsed = parse_timestamp(raw, "t", errors, fmt=["%Y/%m/%d %H:%M", "%Y%m%d %H%M"], tz="Asia/Shanghai")
    assert [None if pd.isna(p) else p.isoformat() for p in parsed] == [
        "2026-11-20T10:00:00+00:00"] * 4 + [None, None]
    assert errors.column().tolist()[4:] == ["t: cannot read 'yesterday' as a timestamp (%Y/%m/%d %H:%M or %Y%m%d %H%M)",
                                            None]
    hour_offsets = pd.Series(["2026-11-20T18:00:00+08", "2026-11-20 18:00", "2026-11-20"])  # with naive values
    assert [p.isoformat() for p in parse_timestamp(hour_offsets, "t", RowErrors(3), tz="Asia/Shanghai")] == [
        "2026-11-20T10:00:00+00:00", "2026-11-20T10:00:00+00:00", "2026-11-19T16:00:00+00:00"]
    dates = parse_date(pd.Series(["1990/01/31", "1990-01-31", "19900131"]), "d", RowErrors(3),
                       fmt=["%Y/%m/%d", "%Y-%m-%d", "%Y%m%d"])
    assert {d.isoformat() for d in dates} == {"1990-01-31"}
    # A value two formats read takes the first; each later format sees only what is still unread.
    errors = RowErrors(4)
    dates = parse_date(pd.Series(["03/04/2020", "13/04/2020", "04/13/2020", None]), "d", errors,
                       fmt=["%d/%m/%Y", "%m/%d/%Y"])
    assert [None if pd.isna(d) else d.isoformat() for d in dates] == ["2020-04-03", "2020-04-13", "2020-04-13", None]
    assert errors.column().isna().all()


def test_iso_timestamps_read_by_arrow_equal_those_read_by_pandas():
    """A column of ISO 8601 values that all carry an offset is read by Arrow; one naive or bad
    value sends the whole column through pandas.  Both give the same instants, row for row."""
    from sources.sdk import RowErrors, parse_timestamp

    aware = ["2026-11-20T10:00:00Z", " 2026-11-20T18:00:00+08:00", "2026-11-20T05:30:00.250-04:30", None,
             "2026-11-20 10:00Z"]
    index = [7, 3, 11, 0, 5]  # a slice of a larger frame: values stay with their rows
    by_arrow = parse_timestamp(pd.Series(aware, index=index, dtype="str"), "t", RowErrors(5), tz="Asia/Shanghai")
    errors = RowErrors(6)
    by_pandas = parse_timestamp(pd.Series([*aware, "2026-11-20 18:00"], index=[*index, 9], dtype="str"), "t", errors,
                                tz="Asia/Shanghai")
    assert by_arrow.dtype == by_pandas.dtype == "datetime64[us, UTC]"
    assert list(by_arrow.index) == index
    assert by_arrow.equals(by_pandas.iloc[:5])
    assert by_pandas[9].isoformat() == by_arrow[7].isoformat() == "2026-11-20T10:00:00+00:00"
    assert by_arrow[11].isoformat() == "2026-11-20T10:00:00.250000+00:00" and pd.isna(by_arrow[0])
    assert errors.column().isna().all()


def test_sources_never_import_prefect():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sources"
    offenders = [str(p) for p in root.rglob("*.py") if "prefect" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_names_keep_emoji_and_lose_control_characters():
    from sources.sdk import clean_text

    cleaned = clean_text(pd.Series(["王\x07芳😀\x00 ", "\x1f", None]))
    assert cleaned[0] == "王芳😀" and cleaned[1:].isna().all()
    assert clean_text(pd.Series(["ab\x7f", " c\x1b", "E1 "])).tolist() == ["ab", "c", "E1"]  # ASCII only
    nothing = pd.Series([None, None], dtype="object", index=[4, 7])
    assert clean_text(nothing).equals(clean_text(pd.Series(["", None], index=[4, 7])))
    # A tab inside a value stays; a control character is found in any chunk of the text and only
    # in the rows a frame's slice holds (its bytes are scanned, not each value).
    assert clean_text(pd.Series(["a\tb", "中"])).tolist() == ["a\tb", "中"]
    chunked = pd.concat([pd.Series(["中"] * 3, dtype="str"), pd.Series(["文\x02"], dtype="str")], ignore_index=True)
    assert clean_text(chunked).tolist() == ["中"] * 3 + ["文"]
    sliced = pd.Series(["x\x01", "中", "文\x0b", "码"], dtype="str")
    assert clean_text(sliced.iloc[1:2]).tolist() == ["中"] and clean_text(sliced.iloc[2:]).tolist() == ["文", "码"]
