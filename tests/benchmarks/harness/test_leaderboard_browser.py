"""The leaderboard page in a real browser: headless Chromium sorts the table and draws the plots and strips.

CI installs Debian's `chromium` and `chromium-driver` (.ci/run); the test skips only where they are absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.leaderboard import build_leaderboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver; .ci/run does)",
)


@pytest.fixture
def browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _row_ids(table) -> list[str]:
    return [row.get_attribute("data-id") for row in table.find_elements("css selector", "tbody tr")]


def _header(table, text: str):
    return next(th for th in table.find_elements("css selector", "th") if th.text.startswith(text))


def test_page_sorts_on_click_and_renders_plots_and_strips(browser, results_dir, tmp_path):
    from zoo.data import save_video_grid

    # A real GIF strip beside alpha's result, as `zoo bench` writes it.
    strip = results_dir / "toy" / "alpha.toy_micro.seed0.gif"
    frames = torch.linspace(0, 1, 4).view(1, 4, 1, 1, 1).expand(2, 4, 3, 16, 16).contiguous()
    save_video_grid(strip, frames, fps=4)
    result_path = results_dir / "toy" / "alpha.toy_micro.seed0.json"
    result_path.write_text(result_path.read_text().replace('"strip": null', f'"strip": "{strip.name}"'))
    out = tmp_path / "site"
    page = build_leaderboard(results_dir, out)["html"]

    browser.get(page.resolve().as_uri())
    table = next(t for t in browser.find_elements("css selector", "table.board")
                 if len(t.find_elements("css selector", "tbody tr")) == 3)
    assert _row_ids(table) == ["beta.toy_micro", "alpha.toy_micro", "gamma.toy_micro"]  # best primary first

    model = _header(table, "model")
    model.click()
    assert _row_ids(table) == ["alpha.toy_micro", "beta.toy_micro", "gamma.toy_micro"]
    assert model.get_attribute("aria-sort") == "ascending"
    model.click()
    assert _row_ids(table) == ["gamma.toy_micro", "beta.toy_micro", "alpha.toy_micro"]
    adherence = _header(table, "prompt_adherence@1x")
    adherence.click()
    assert _row_ids(table) == ["beta.toy_micro", "alpha.toy_micro", "gamma.toy_micro"]  # 0.2, 0.5, 0.9
    fvd = _header(table, "fvd_domain@1x")
    fvd.click()
    fvd.click()  # descending: the missing value still sorts last
    assert _row_ids(table) == ["alpha.toy_micro", "beta.toy_micro", "gamma.toy_micro"]

    section = table.find_element("xpath", "./ancestor::section")
    scatter = section.find_element("css selector", "svg.chart.quality-vs-speed")
    assert scatter.size["width"] > 100 and scatter.size["height"] > 100
    assert len(scatter.find_elements("css selector", "circle.point")) == 2  # gamma has no primary value to plot
    curves = section.find_elements("css selector", "svg.chart.quality-over-time")
    assert len(curves) >= 2  # the fid-over-time curve and fvd vs rollout length
    lines = [line for chart in curves for line in chart.find_elements("css selector", "polyline.series")]
    assert lines and all(line.size["width"] > 10 for line in lines)
    image = section.find_element("css selector", ".strips img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0

    screenshot = tmp_path / "leaderboard.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
