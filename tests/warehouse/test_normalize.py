"""Identifier normalisation, table-driven."""

from __future__ import annotations

import pytest

from warehouse.normalize import name_key, phone_keys

PHONES = [
    # (description, raw, e164, masked key)
    ("plain mobile", "13812345678", "+8613812345678", "138****5678"),
    ("dashes", "138-1234-5678", "+8613812345678", "138****5678"),
    ("+86 with space", "+86 13812345678", "+8613812345678", "138****5678"),
    ("86 prefix without plus", "8613812345678", "+8613812345678", "138****5678"),
    ("masked marketplace phone: no e164, partial key only", "138****5678", None, "138****5678"),
    ("invalid number never links", "12345", None, None),
]


@pytest.mark.parametrize("description,raw,e164,masked", PHONES, ids=[p[0] for p in PHONES])
def test_phone_keys(description, raw, e164, masked):
    row = phone_keys([raw]).to_pylist()[0]
    assert (row["e164"], row["masked_key"]) == (e164, masked)


def test_names_fold_full_width_and_whitespace():
    assert name_key(" 李 娜 ") == name_key("李娜")
    assert name_key("ＬＩ　Ｎａ") == "lina"


def test_traditional_and_simplified_names_share_a_key():
    assert name_key("陳麗華") == name_key("陈丽华") == "陈丽华"
    assert name_key("鄧 偉") == name_key("邓伟")
