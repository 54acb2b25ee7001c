"""Normalising identifiers before they may link anything: phones, emails, names.

Each function works on the *distinct* raw values (a few per customer), not on every row, and
returns a small Arrow table that SQL joins back.
"""

from __future__ import annotations

import re
import unicodedata

import opencc
import phonenumbers
import pyarrow as pa

MASKED_PHONE = re.compile(r"^\s*(?:\+?86)?\s*(1\d{2})\*{4}(\d{4})\s*$")


def phone_keys(raw_phones: list[str], region: str = "CN") -> pa.Table:
    """raw -> (e164, masked_key).

    ``e164`` is set only for valid numbers.  ``masked_key`` (``138****5678``) is set for valid
    Chinese mobiles and for masked marketplace phones, so the two can be compared; a masked
    phone has no e164 and never links on its own.
    """
    e164, masked = [], []
    for raw in raw_phones:
        m = MASKED_PHONE.match(raw)
        if m:
            e164.append(None)
            masked.append(f"{m.group(1)}****{m.group(2)}")
            continue
        digits = re.sub(r"[\s\-().]", "", raw)
        if digits.startswith("86") and len(digits) == 13:
            digits = "+" + digits
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            e164.append(None)
            masked.append(None)
            continue
        e164.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        national = str(number.national_number)
        masked.append(f"{national[:3]}****{national[-4:]}" if number.country_code == 86 and len(national) == 11
                      else None)
    return pa.table({"raw": pa.array(raw_phones, pa.string()), "e164": pa.array(e164, pa.string()),
                     "masked_key": pa.array(masked, pa.string())})


# Bump when name_key changes: staging caches keys per raw name and version.
NAME_KEY_VERSION = "t2s"
_TO_SIMPLIFIED = opencc.OpenCC("t2s")


def name_key(raw: str) -> str | None:
    """Full-width to half-width (NFKC), no whitespace, lower case, traditional Chinese folded to
    simplified (陳麗華 and 陈丽华 compare equal)."""
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw)).lower()
    return _TO_SIMPLIFIED.convert(text) or None


def name_keys(raw_names: list[str]) -> pa.Table:
    return pa.table({"raw": pa.array(raw_names, pa.string()),
                     "name_key": pa.array([name_key(n) for n in raw_names], pa.string())})
