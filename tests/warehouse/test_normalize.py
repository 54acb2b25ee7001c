"""Identifier normalisation, table-driven."""

from __future__ import annotations

import pyarrow as pa
import pytest

from warehouse.normalize import _phone_key, _plain_mobiles, name_key, phone_keys

PHONES = [
    # (description, raw, e164, masked key)
    ("plain mobile", "13812345678", "+8613812345678", "138****5678"),
    ("dashes", "138-1234-5678", "+8613812345678", "138****5678"),
    ("+86 with space", "+86 13812345678", "+8613812345678", "138****5678"),
    ("86 prefix without plus", "8613812345678", "+8613812345678", "138****5678"),
    ("masked marketplace phone: no e164, partial key only", "138****5678", None, "138****5678"),
    ("invalid number never links", "12345", None, None),
    ("full-width digits: parsed one by one", "１３８１２３４５６７８", "+8613812345678", "138****5678"),
    ("ideographic space inside a masked phone", "+86\u3000138****5678", None, "138****5678"),
    ("landline: valid, no masked key", "010-12345678", "+861012345678", None),
    ("not a Chinese number", "+1 415 555 0100", "+14155550100", None),
]


@pytest.mark.parametrize("description,raw,e164,masked", PHONES, ids=[p[0] for p in PHONES])
def test_phone_keys(description, raw, e164, masked):
    row = phone_keys([raw]).to_pylist()[0]
    assert (row["e164"], row["masked_key"]) == (e164, masked)


def test_plain_mobiles_read_in_arrow_match_phonenumbers():
    """Every 4-digit mobile prefix, written the ways exports write it: the Arrow fast path gives
    what phonenumbers gives one value at a time (valid or not)."""
    raw = []
    for prefix in range(1000, 2000):
        n = f"{prefix}{prefix * 7919 % 10_000_000:07d}"
        raw += [n, "+86" + n, f"86 {n[:3]}-{n[3:7]}-{n[7:]}", f"({n[:3]}) {n[3:]}"]
    fast = [(row["e164"], row["masked_key"]) for row in phone_keys(raw).to_pylist()]
    assert fast == [_phone_key(value, "CN") for value in raw]
    assert _plain_mobiles(pa.array(raw)).null_count < len(raw) * 2 / 3  # most took the fast path


def test_names_fold_full_width_and_whitespace():
    assert name_key(" 李 娜 ") == name_key("李娜")
    assert name_key("ＬＩ　Ｎａ") == "lina"


def test_traditional_and_simplified_names_share_a_key():
    assert name_key("陳麗華") == name_key("陈丽华") == "陈丽华"
    assert name_key("鄧 偉") == name_key("邓伟")
