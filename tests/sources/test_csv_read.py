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


@pytest.mark.parametrize("content", [
    b"a,b\n1,2\n3\n",                    # a short last row: pandas reads it, the row is flagged
    b"a,b\n1,2\n\xff\xfe,3\n",           # bytes that are not UTF-8: pandas' path names the offset
], ids=["short last row", "bad bytes"])
def test_exports_pyarrow_refuses_go_through_pandas(tmp_path, content):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    assert read_csv_arrow(path, "utf-8") is None
    if b"\xff" in content:
        with pytest.raises(Exception, match="offset 8 are not valid utf-8"):
            read_csv(path, "utf-8")
    else:
        frame, complete = read_csv(path, "utf-8")
        assert frame["_row"].tolist() == [2, 3] and complete
