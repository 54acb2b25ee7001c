"""Pseudonyms and masks for PII published to analysts.

Pseudonyms are HMAC-SHA256 with a key from ``TAGWRIGHT_PII_KEY`` or, failing that, a random
key created once in the owner-only ``<data dir>/restricted/pii.key`` (never in the repo).
The same email or phone always gets the same pseudonym under one key, so analysts can join
and count without seeing the value.
"""

from __future__ import annotations

import hashlib
import os
import secrets

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


def hmac_pads(key: bytes) -> dict[str, bytes]:
    """The key's inner and outer pads (RFC 2104), bound as ``$inner_pad`` and ``$outer_pad`` for
    :func:`pseudonym_sql`."""
    if len(key) > 64:  # SHA-256's block size
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return {"inner_pad": bytes(b ^ 0x36 for b in key), "outer_pad": bytes(b ^ 0x5C for b in key)}


def pseudonym_sql(column: str) -> str:
    """DuckDB SQL for the pseudonym of ``column``: the first 32 hex characters of its
    HMAC-SHA256 under the key whose pads are bound (:func:`hmac_pads`), computed set-based."""
    return f"left(sha256($outer_pad || unhex(sha256($inner_pad || encode({column})))), 32)"


MASK_EMAIL_SQL = "left(split_part({c}, '@', 1), 1) || '***@' || split_part({c}, '@', 2)"
MASK_PHONE_SQL = "left(right({c}, 11), 3) || '****' || right({c}, 4)"
PII_COLUMNS = ("email", "phone", "name", "birth_date", "email_key", "phone_e164", "姓名", "手机号", "生日",
               "收货人", "联系电话", "real_name", "mobile", "birthday")
