"""The tag report opens offline in a real headless Chromium with every chart rendered."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TAGWRIGHT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # No network at all: a page that tried to fetch anything would log an error.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                     "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_report_renders_every_chart_offline_without_console_errors(published, monkeypatch, tmp_path):
    _, data = published
    monkeypatch.setenv("TAGWRIGHT_DATA_DIR", str(data))
    out = tmp_path / "report.html"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "<script src=" not in page and "<link " not in page  # everything is inline
    for section in ("Tag catalog", "RFM grid", "Churn risk and lifecycle over time", "Tag changes on",
                    "Data quality of the run", "crm-analytics", "value_tier"):
        assert section in page

    driver = _browser()
    try:
        driver.get(out.as_uri())
        charts, rendered = driver.execute_script("""
            const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
            return [plots.length, plots.filter(p => p.querySelector('.main-svg')
                     && p.querySelectorAll('.trace, .hm, .heatmaplayer image, .scatterlayer .trace').length > 0).length];
        """)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        driver.set_window_size(1400, driver.execute_script("return document.body.scrollHeight"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "tag-report.png"))
    finally:
        driver.quit()
    assert errors == []
    assert charts >= 20 and rendered == charts, f"{rendered} of {charts} charts rendered"
    assert (ARTIFACTS / "tag-report.png").stat().st_size > 10_000


def test_report_without_a_warehouse_says_what_to_do(data_dir):
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 2 and "tagwright run" in result.output
