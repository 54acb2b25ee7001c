"""Run configuration, read from the environment with local defaults first.

| variable | default | meaning |
| --- | --- | --- |
| TAGWRIGHT_DATA_DIR | ./data | where everything generated lives (git-ignored) |
| TAGWRIGHT_INBOX | <data dir>/inbox | one folder per connector with its exports |
| TAGWRIGHT_TIMEZONE | Asia/Shanghai | business time zone: windows end at the end of as_of here |
| TAGWRIGHT_LOOKBACK_DAYS | 730 | orders older than this (before as_of) are ignored for RFM |
| TAGWRIGHT_PHONE_REGION | CN | default region for phones written without a country code |
| TAGWRIGHT_PII_KEY | (generated) | HMAC key for pseudonyms; else a key file created owner-only |
| TAGWRIGHT_MAX_BAD_SHARE | 0.2 | a file with a larger share of bad rows is not loaded |
| TAGWRIGHT_MIN_ROW_SHARE | 0.5 | a file delivered again under its name with fewer rows than this share of its previous delivery is not loaded |
| TAGWRIGHT_MEMORY_LIMIT | 4GB | DuckDB memory limit; larger work spills to disk |
| TAGWRIGHT_HISTORY_RETENTION_DAYS | 1095 | tag history, changes and stats older than this are dropped |
| TAGWRIGHT_COVERAGE_ALERT | 0.1 | a tag whose coverage moves more than this (share of customers) since the last run is a warning |
| TAGWRIGHT_DATA_DOCS_RUNS | 30 | Great Expectations results and Data Docs pages are kept for this many newest runs |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    inbox: Path
    timezone: str = "Asia/Shanghai"
    lookback_days: int = 730
    phone_region: str = "CN"
    pii_key: str | None = None
    max_bad_share: float = 0.2
    min_row_share: float = 0.5
    memory_limit: str = "4GB"
    history_retention_days: int = 1095
    coverage_alert: float = 0.1
    data_docs_runs: int = 30  # GX results and Data Docs pages kept, in runs (ops.validations keeps every run)
    land_part_bytes: int = 32 << 20  # a larger JSON Lines or CSV file is landed part by part
    validate_slice_rows: int = 1_000_000  # GX validates a larger batch this many rows at a time

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        data_dir = Path(overrides.pop("data_dir", None) or os.environ.get("TAGWRIGHT_DATA_DIR", "data")).resolve()
        values = dict(
            data_dir=data_dir,
            inbox=Path(os.environ.get("TAGWRIGHT_INBOX", data_dir / "inbox")).resolve(),
            timezone=os.environ.get("TAGWRIGHT_TIMEZONE", "Asia/Shanghai"),
            lookback_days=int(os.environ.get("TAGWRIGHT_LOOKBACK_DAYS", "730")),
            phone_region=os.environ.get("TAGWRIGHT_PHONE_REGION", "CN"),
            pii_key=os.environ.get("TAGWRIGHT_PII_KEY"),
            max_bad_share=float(os.environ.get("TAGWRIGHT_MAX_BAD_SHARE", "0.2")),
            min_row_share=float(os.environ.get("TAGWRIGHT_MIN_ROW_SHARE", "0.5")),
            memory_limit=os.environ.get("TAGWRIGHT_MEMORY_LIMIT", "4GB"),
            history_retention_days=int(os.environ.get("TAGWRIGHT_HISTORY_RETENTION_DAYS", "1095")),
            coverage_alert=float(os.environ.get("TAGWRIGHT_COVERAGE_ALERT", "0.1")),
            data_docs_runs=int(os.environ.get("TAGWRIGHT_DATA_DOCS_RUNS", "30")),
            land_part_bytes=int(os.environ.get("TAGWRIGHT_LAND_PART_BYTES", str(32 << 20))),
            validate_slice_rows=int(os.environ.get("TAGWRIGHT_VALIDATE_SLICE_ROWS", "1000000")),
        )
        values.update(overrides)
        return cls(**values)

    @property
    def restricted(self) -> Path:
        """Owner-only area (0700) for everything holding raw personal data: the lake, the work
        file, DuckDB's spill files and the pseudonym key.  Analysts get the warehouse and exports."""
        return self.data_dir / "restricted"

    @property
    def lake(self) -> Path:
        """Landed raw Parquet, one file per (source file, entity); immutable once written."""
        return self.restricted / "lake"

    @property
    def work_db(self) -> Path:
        """The pipeline's own DuckDB file: manifest, staging, identity state, history."""
        return self.restricted / "work.duckdb"

    @property
    def spill(self) -> Path:
        """Where DuckDB spills work that does not fit in the memory limit."""
        return self.restricted / "tmp"

    @property
    def warehouse(self) -> Path:
        """The published warehouse analysts open read-only."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def exports(self) -> Path:
        return self.data_dir / "exports"

    @property
    def identity_model(self) -> Path:
        """The trained splink model (``tagwright identity train``); the nightly uses it if present."""
        return self.data_dir / "identity" / "model.json"

    def ensure_restricted(self) -> list[tuple[Path, Path]]:
        """Create the restricted area owner-only; move a work file and lake of the older layout
        (directly under the data directory) into it.  Returns the (old, new) paths moved."""
        self.restricted.mkdir(parents=True, exist_ok=True)
        os.chmod(self.restricted, 0o700)
        moved = []
        for old, new in ((self.data_dir / "work.duckdb", self.work_db), (self.data_dir / "lake", self.lake)):
            if old.exists() and not new.exists():
                old.rename(new)
                moved.append((old, new))
        return moved
