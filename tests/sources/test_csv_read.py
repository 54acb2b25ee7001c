"""CSV exports: pyarrow's reader and the pandas reader give the same text columns."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from sources.csv_read import read_csv, read_csv_arrow

SAMPLES = Path(__file__).parent
CSV_SAMPLES = [("store/samples/members.csv", "gbk"), ("store/samples/pos_transactions.csv", "gbk"),
               ("marketplace/samples/orders_20261022.csv", "utf-8-sig"),
               ("zoho_crm/samples/Contacts_export.csv", "utf-8-sig"), ("zoho_crm/samples/Cases_export.csv", "utf-8-sig")]


@pytest.mark.parametrize("name,encoding", CSV_SAMPLES, ids=[n for n, _ in CSV_SAMPLES])
def test_pyarrow_reads_a_well_formed_export_as_pandas_does(name, encoding):
    path = SAMPLES / name
    by_arrow = read_csv_arrow(path, encoding)
    text = path.read_bytes().decode(encoding).lstrip("\ufeff")
    by_pandas = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    assert by_arrow is not None
    pd.testing.assert_frame_equal(by_arrow, by_pandas, check_dtype=False)


@pytest.mark.parametrize("content,encoding", [
    (b"a,b\n1,2\n3\n", "utf-8"),                   # a short last row: pandas reads it, the row is flagged
    (b"a,b\n1,2\n\xff\xfe,3\n", "utf-8"),          # bytes that are not UTF-8: pandas' path names the offset
    (b"\xef\xbb\xbfa,b\n1,2\n\xff\xfe,3\n", "utf-8-sig"),  # the same after a byte-order mark (pyarrow reads UTF-8 itself)
], ids=["short last row", "bad bytes", "bad bytes after a byte-order mark"])
def test_exports_pyarrow_refuses_go_through_pandas(tmp_path, content, encoding):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    assert read_csv_arrow(path, encoding) is None
    if b"\xff" in content:
        offset = content.index(b"\xff")
        with pytest.raises(Exception, match=f"line 3: bytes at offset {offset} are not valid"):
            read_csv(path, encoding)
    else:
        frame, complete = read_csv(path, encoding)
        assert frame["_row"].tolist() == [2, 3] and complete


def test_a_utf8_export_with_a_byte_order_mark_is_read_by_pyarrow_without_it(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes("\ufeff订单编号,金额\nA1,10\n".encode("utf-8"))
    frame = read_csv_arrow(path, "utf-8-sig")
    assert frame.columns.tolist() == ["订单编号", "金额"] and frame["订单编号"].tolist() == ["A1"]
