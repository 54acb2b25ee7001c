"""What the benchmark scripts share."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def scratch_data_dir(prefix: str) -> Path:
    """A new, empty data directory in /tmp, set as TAGWRIGHT_DATA_DIR (with a throwaway pseudonym key)."""
    data = Path(tempfile.mkdtemp(prefix=prefix)) / "data"
    os.environ["TAGWRIGHT_DATA_DIR"] = str(data)
    os.environ.setdefault("TAGWRIGHT_PII_KEY", "bench-key")
    return data


def write_result(name: str, report: dict) -> Path:
    """Write ``report`` to bench/results/<name>.json and print it."""
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return out
