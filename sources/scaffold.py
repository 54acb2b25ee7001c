"""`tagwright sources new NAME`: a working mapping connector to copy from.

Writes ``sources/NAME/`` (mapping.yaml, README.md) and ``tests/sources/NAME/`` (a sample
export and a test running the conformance suite), which pass before anyone edits them.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"^[a-z][a-z0-9_]*$")

MAPPING = """\
# {name}: a customer list export mapped to the canonical customer_record (docs/connectors.md).
name: {name}
description: "{name} customer export (CSV, UTF-8)."
encoding: utf-8
contract: evolve            # evolve | freeze | discard_row
files:
  - pattern: "{name}_*.csv"
    format: csv
    entity: customer_record
    key: [source_customer_id]
    cursor: updated_at
    columns:
      source_customer_id: customer_id
      name: name
      phone: mobile
      email: email
      city: city
      registered_at: {{from: created_at, parse: timestamp, format: "%Y-%m-%d %H:%M:%S", timezone: local}}
      updated_at: {{from: updated_at, parse: timestamp, format: "%Y-%m-%d %H:%M:%S", timezone: local}}
"""

README = """\
# {name}

Describe the export here: which system writes it, how it is delivered, what a row is.
Files go to `<inbox>/{name}/` and match `{name}_*.csv`. Mapping only: see `mapping.yaml`.

| entity | key | from |
| --- | --- | --- |
| customer_record | source_customer_id = customer_id | name, mobile, email, city, created_at, updated_at |
"""

SAMPLE = """\
customer_id,name,mobile,email,city,created_at,updated_at
C001,王芳,13812340001,wang.fang@example.com,上海,2026-01-05 10:00:00,2026-03-01 09:30:00
C002,李强,13912340002,,杭州,2026-02-11 15:20:00,2026-02-11 15:20:00
C003,张伟,,zhang.wei@example.com,北京,2026-03-20 08:45:00,2026-04-02 18:05:00
"""

TEST = '''\
"""{name} passes the connector conformance suite on its sample export."""

import pytest

from sources.sdk import discover
from tests.sources.conformance import CHECKS, run_check


@pytest.mark.parametrize("check", CHECKS)
def test_{name}_conformance(check, tmp_path):
    run_check(check, discover()["{name}"], tmp_path)
'''


def project_root() -> Path:
    """The folder holding the imported ``sources`` package (where discovery looks)."""
    return Path(__file__).resolve().parent.parent


def new_connector(name: str, root: Path | None = None) -> list[Path]:
    """Create the connector's files; refuse a bad or taken name.  Returns the files written."""
    if not NAME.match(name):
        raise ValueError(f"connector name {name!r} must match [a-z][a-z0-9_]* (e.g. wechat_mini)")
    root = root or project_root()
    folder, tests = root / "sources" / name, root / "tests" / "sources" / name
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; pick another name or edit that connector")
    files = {
        folder / "mapping.yaml": MAPPING.format(name=name),
        folder / "README.md": README.format(name=name),
        tests / "__init__.py": "",
        tests / "samples" / f"{name}_sample.csv": SAMPLE,
        tests / f"test_{name}.py": TEST.format(name=name),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
