"""Pseudonyms and masks for PII published to analysts.

Pseudonyms are HMAC-SHA256 with a key from ``TAGWRIGHT_PII_KEY`` or, failing that, a random
key created once in the owner-only ``<data dir>/restricted/pii.key`` (never in the repo).
The same email or phone always gets the same pseudonym under one key, so analysts can join
and count without seeing the value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import pyarrow as pa

from warehouse.settings import Settings


def pii_key(settings: Settings) -> bytes:
    if settings.pii_key:
        return settings.pii_key.encode("utf-8")
    settings.ensure_restricted()
    path = settings.restricted / "pii.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def pseudonyms(values: list[str], key: bytes) -> pa.Table:
    """raw -> pseudonym (first 32 hex chars of the HMAC), for distinct values."""
    return pa.table({
        "raw": pa.array(values, pa.string()),
        "pseudonym": pa.array([hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest()[:32] for v in values],
                              pa.string()),
    })


MASK_EMAIL_SQL = "left(split_part({c}, '@', 1), 1) || '***@' || split_part({c}, '@', 2)"
MASK_PHONE_SQL = "left(right({c}, 11), 3) || '****' || right({c}, 4)"
PII_COLUMNS = ("email", "phone", "name", "birth_date", "email_key", "phone_e164", "姓名", "手机号", "生日",
               "收货人", "联系电话", "real_name", "mobile", "birthday")
