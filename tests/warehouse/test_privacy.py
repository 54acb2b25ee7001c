"""Pseudonyms computed in SQL are the HMAC-SHA256 the standard library gives."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pytest

from warehouse.privacy import hmac_pads, pseudonym_sql


@pytest.mark.parametrize("key", [b"k", b"0123456789abcdef" * 4, b"a key longer than the sha-256 block" * 3],
                         ids=["short key", "64-byte key", "long key"])
def test_the_sql_pseudonym_is_the_hmac(key):
    values = ["zhang.san@example.com", "+8613812345678", "张三@例子.中国", "", None]
    with duckdb.connect() as con:
        got = con.execute(f"SELECT v, {pseudonym_sql('v')} FROM unnest($values) t(v)",
                          {"values": values, **hmac_pads(key)}).fetchall()
    assert dict(got) == {v: None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32]
                         for v in values}
