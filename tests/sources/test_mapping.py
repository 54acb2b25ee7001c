"""The declarative mapping: transforms table-driven, and errors that point at the YAML."""

from __future__ import annotations

import pandas as pd
import pytest

from sources.errors import MappingError
from sources.mapping import ColumnRule, connector_from_mapping
from sources.sdk import ReadContext, RowErrors

TRANSFORMS = [
    # (description, rule, raw columns, expected values)
    ("copy and trim", ColumnRule("name", sources=("n",)), {"n": [" 王芳 ", None]}, ["王芳", None]),
    ("join last and first name", ColumnRule("name", sources=("last", "first"), join=""),
     {"last": ["王", None], "first": ["芳", "Li"]}, ["王芳", "Li"]),
    ("split a combined field", ColumnRule("name", sources=("contact",), split=("/", 0)),
     {"contact": ["王芳 / 13812345678", "李强"]}, ["王芳", "李强"]),
    ("the last part of a split field", ColumnRule("phone", sources=("contact",), split=("/", -1)),
     {"contact": ["王芳 / 13812345678", "李强", None, "a/ /"]}, ["13812345678", "李强", None, ""]),
    ("a part some values lack", ColumnRule("phone", sources=("contact",), split=("/", 1)),
     {"contact": ["王芳 / 13812345678", "李强", None]}, ["13812345678", None, None]),
    ("a split field NULL on every row", ColumnRule("phone", sources=("contact",), split=("/", 1)),
     {"contact": [None, None]}, [None, None]),
    ("map values", ColumnRule("gender", sources=("g",), map={"男": "M", "女": "F"}), {"g": ["男", "女", "?"]},
     ["M", "F", "?"]),
    ("multiply cents to yuan", ColumnRule("amount", sources=("fen",), parse="number", multiply=0.01),
     {"fen": ["12900", "5"]}, [129.0, 0.05]),
    ("inverted flag", ColumnRule("email_opt_in", sources=("opt_out",), parse="flag", true=("false",),
                                 false=("true",)), {"opt_out": ["true", "false"]}, [False, True]),
    ("constant", ColumnRule("channel", value="store"), {"x": ["a", "b"]}, ["store", "store"]),
]


@pytest.mark.parametrize("description,rule,raw,expected", TRANSFORMS, ids=[t[0] for t in TRANSFORMS])
def test_column_transforms(description, rule, raw, expected):
    frame = pd.DataFrame(raw)
    errors = RowErrors(len(frame))
    got = rule.apply(frame, errors, ReadContext()).tolist()
    assert [None if not isinstance(v, (str, bool)) and pd.isna(v) else v for v in got] == expected
    assert errors.column().isna().all()


BAD_MAPPINGS = [
    ("unknown entity", "entity: customer_record", "entity: shopper", "'shopper' is not a canonical entity"),
    ("unknown canonical column", "      phone: 手机", "      telephone: 手机", "'telephone' is not a column"),
    ("unknown parser", "parse: timestamp", "parse: datetime", "parse 'datetime' is not known"),
    ("bad contract", "contract: evolve", "contract: loose", "contract 'loose' is not known"),
]


@pytest.mark.parametrize("description,old,new,message", BAD_MAPPINGS, ids=[b[0] for b in BAD_MAPPINGS])
def test_a_bad_mapping_names_file_line_column_and_the_fix(tmp_path, description, old, new, message):
    from sources.sdk import discover

    source = discover()["fxiaoke"].folder / "mapping.yaml"
    text = source.read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "mapping.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(MappingError) as err:
        connector_from_mapping(tmp_path)
    line = next(i for i, l in enumerate(text.replace(old, new, 1).splitlines(), start=1) if new.strip() in l)
    assert err.value.line == line and message in err.value.problem and err.value.fix
    assert str(err.value).startswith(f"{tmp_path / 'mapping.yaml'}:{line}:")


def test_a_row_without_its_key_is_read_for_quarantine_not_a_crash(tmp_path):
    from sources.sdk import discover

    connector = discover()["zoho_crm"]
    export = tmp_path / "Contacts_export.csv"
    export.write_text("Record Id,Last Name,First Name,Email\n"
                      "zcrm_1,王,芳,wang@example.com\n"
                      ",李,强,li@example.com\n", encoding="utf-8")
    table = connector.read(export, connector.context("Asia/Shanghai"))["customer_record"]
    assert table.column("source_record_id").to_pylist() == ["zcrm_1", None]
    assert table.column("_row").to_pylist() == [2, 3]
