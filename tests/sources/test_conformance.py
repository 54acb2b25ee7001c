"""Every registered connector passes the conformance suite on its checked-in sample files."""

from __future__ import annotations

import pytest

from sources.sdk import discover
from tests.sources.conformance import CHECKS, registered, run_check


def test_the_built_in_connectors_are_registered():
    assert {"web", "store", "marketplace", "zoho_crm", "fxiaoke"} <= set(registered())


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", registered())
def test_conformance(name, check, tmp_path):
    run_check(check, discover()[name], tmp_path)
