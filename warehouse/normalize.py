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
import pyarrow.compute as pc

SEPARATORS = r"[\s\-().]"  # what exports put between a phone's digits
MASKED_PHONE = re.compile(r"^\s*(?:\+?86)?\s*(?P<head>1\d{2})\*{4}(?P<tail>\d{4})\s*$")


def phone_keys(raw_phones: list[str], region: str = "CN") -> pa.Table:
    """raw -> (e164, masked_key).

    ``e164`` is set only for valid numbers.  ``masked_key`` (``138****5678``) is set for valid
    Chinese mobiles and for masked marketplace phones, so the two can be compared; a masked
    phone has no e164 and never links on its own.  Plain Chinese mobiles (most of them) are
    recognised by phonenumbers' own patterns in Arrow; only the rest are parsed one by one.
    """
    raw = pa.array(raw_phones, pa.string())
    mobiles = _plain_mobiles(raw) if region == "CN" else pa.nulls(len(raw), pa.string())
    given = pc.extract_regex(raw, MASKED_PHONE.pattern)  # already masked: no e164
    e164 = pc.binary_join_element_wise("+86", mobiles, "").to_numpy(zero_copy_only=False)
    masked = pc.coalesce(
        pc.binary_join_element_wise(pc.struct_field(given, [0]), pc.struct_field(given, [1]), "****"),
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(mobiles, 0, 3), pc.utf8_slice_codeunits(mobiles, 7),
                                    "****")).to_numpy(zero_copy_only=False)
    for i in pc.indices_nonzero(pc.and_(pc.is_null(mobiles), pc.is_null(given))).to_numpy():
        e164[i], masked[i] = _phone_key(raw_phones[i], region)
    return pa.table({"raw": raw, "e164": pa.array(e164, pa.string()), "masked_key": pa.array(masked, pa.string())})


def _full_match(pattern: str) -> str:
    return f"^(?:{pattern})$"


_CN = phonenumbers.PhoneMetadata.metadata_for_region("CN")
_CN_MOBILE = (_full_match(_CN.general_desc.national_number_pattern), _full_match(_CN.mobile.national_number_pattern))


def _plain_mobiles(raw: pa.Array) -> pa.Array:
    """The national number of each value that is a valid Chinese mobile written plainly (11
    digits, maybe after 86 or +86, spaces, dashes, dots and brackets ignored), else NULL."""
    digits = pc.replace_substring_regex(raw, SEPARATORS, "")
    national = pc.struct_field(pc.extract_regex(digits, r"^(?:\+?86)?(?P<national>1\d{10})$"), [0])
    valid = pc.and_(*(pc.match_substring_regex(national, pattern) for pattern in _CN_MOBILE))
    return pc.if_else(pc.fill_null(valid, False), national, pa.scalar(None, pa.string()))


def _phone_key(raw: str, region: str) -> tuple[str | None, str | None]:
    """(e164, masked_key) of one value, by phonenumbers."""
    m = MASKED_PHONE.match(raw)
    if m:
        return None, f"{m.group(1)}****{m.group(2)}"
    digits = re.sub(SEPARATORS, "", raw)
    if digits.startswith("86") and len(digits) == 13:
        digits = "+" + digits
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None, None
    if not phonenumbers.is_valid_number(number):
        return None, None
    national = str(number.national_number)
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
            f"{national[:3]}****{national[-4:]}" if number.country_code == 86 and len(national) == 11 else None)


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
