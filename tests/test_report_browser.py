"""HTML reports opened in a real headless Chromium (Debian's ``chromium`` driven by Selenium + ``chromedriver``):
no console error, every figure rendered at its natural size, tables sort and filter, links between pages resolve.

Built from the tiny release as a static mirror, a local (offline) cache and a streamed S3 cache (moto server).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from vbo import report

sys.path.insert(0, str(Path(__file__).parent))
from quiet import quiet  # noqa: E402

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
BUCKET = "vbo-report-test"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver; .ci/run does it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pick(cache):
    """An imaged mouse with an active experiment and a behavior-only session."""
    experiments = cache.get_ophys_experiment_table()
    sessions = cache.get_behavior_session_table()
    experiment_id = int(experiments[~experiments["passive"]].index[0])
    mouse = experiments.loc[experiment_id, "mouse_id"]
    behavior_only = sessions[(sessions["mouse_id"] == mouse) & sessions["ophys_session_id"].isna()]
    return mouse, int(behavior_only.index[-1]), experiment_id


@pytest.fixture(scope="module")
def pages(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    mouse, session_id, experiment_id = _pick(tiny_cache)
    steps = []
    mouse_page = quiet(report.mouse_report, tiny_cache, mouse, out, behavior_session_ids=[session_id],
                       ophys_experiment_ids=[experiment_id], workers=1, progress=lambda *a: steps.append(a))
    assert steps[-1][0] == steps[-1][1] == 5  # 2 figures, the page, 1 session, 1 experiment
    index = quiet(report.release_report, tiny_cache, out)
    return {"out": out, "mouse": mouse_page, "index": index, "mouse_id": mouse,
            "session": out / report.session_page_name(session_id),
            "experiment": out / report.experiment_page_name(experiment_id)}


def _open(driver, path: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")


def _console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _figures(driver) -> list[dict]:
    return driver.execute_script("""
        return Array.from(document.images).map(function(img){
            return {complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
                    declared: [parseInt(img.getAttribute('width')), parseInt(img.getAttribute('height'))],
                    alt: img.alt};
        });""")


def check_page(driver, path: Path, min_figures: int, screenshot: Path) -> None:
    """Loads with no console error; every figure decoded, non-empty and at its natural size; screenshot."""
    _open(driver, path)
    assert _console_errors(driver) == []
    figures = _figures(driver)
    assert len(figures) >= min_figures, f"{path.name}: {len(figures)} figures"
    for figure in figures:
        assert figure["complete"] and min(figure["natural"]) > 50, figure
        assert figure["natural"] == figure["declared"], figure
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_experiment_report_renders(browser, pages, tmp_path):
    check_page(browser, pages["experiment"], 10, tmp_path / "experiment.png")
    headings = [h.text for h in browser.find_elements("css selector", "section h2")]
    assert headings == ["Metadata", "Neural activity", "Behavior", "Performance metrics", "QC flags and known issues"]
    assert browser.find_elements("css selector", ".note") == []  # every figure drawn on an active experiment
    alts = [f["alt"] for f in _figures(browser)]
    for expected in ("max projection with ROI outlines", "dF/F of every cell", "change responses by trial type",
                     "change and omission responses", "image × cell mean response"):
        assert expected in alts


def test_session_report_renders(browser, pages, tmp_path):
    check_page(browser, pages["session"], 4, tmp_path / "session.png")
    assert "Neural activity" not in browser.page_source


def test_mouse_and_release_reports_render(browser, pages, tmp_path):
    check_page(browser, pages["mouse"], 2, tmp_path / "mouse.png")
    check_page(browser, pages["index"], 1, tmp_path / "index.png")
    tables = browser.find_elements("css selector", "table.vbo-table")
    assert {t.get_attribute("id") for t in tables} >= {"count-cre", "count-reporter", "count-rig", "count-area",
                                                       "count-depth", "count-type", "count-level", "changes", "mice"}


def _column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "var column = arguments[1];"
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".filter(function(r){return r.style.display !== 'none';})"
        ".map(function(r){return r.cells[column].textContent.trim();});", table_id, index)


def test_tables_sort_and_filter(browser, pages):
    _open(browser, pages["experiment"])
    header = browser.find_elements("css selector", "#performance thead th")[1]
    header.click()
    values = [float(v) for v in _column(browser, "performance", 1) if v]
    assert values == sorted(values) and len(set(values)) > 2
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    values = [float(v) for v in _column(browser, "performance", 1) if v]
    assert values == sorted(values, reverse=True)
    names = browser.find_elements("css selector", "#performance thead th")[0]
    names.click()
    texts = _column(browser, "performance", 0)
    assert texts == sorted(texts, key=str.lower) or texts == sorted(texts)

    box = browser.find_element("css selector", 'input[data-filter-for="performance"]')
    box.send_keys("dprime")
    shown = _column(browser, "performance", 0)
    assert shown and all("dprime" in name for name in shown)
    total = len(browser.find_elements("css selector", "#performance tbody tr"))
    assert browser.find_element("id", "performance-count").text == f"{len(shown)} of {total} rows"
    box.send_keys(" nothing matches this")
    assert _column(browser, "performance", 0) == []
    assert browser.find_element("id", "performance-count").text == f"0 of {total} rows"
    assert _console_errors(browser) == []


def test_links_between_mouse_and_session_pages_resolve(browser, pages):
    _open(browser, pages["mouse"])
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "#sessions a")]
    assert sorted(Path(h).name for h in hrefs) == sorted([pages["session"].name, pages["experiment"].name])
    for href in hrefs:
        browser.get(href)
        assert browser.title.startswith(("Behavior session", "Ophys experiment"))
        assert _console_errors(browser) == []
        back = browser.find_element("link text", f"mouse {pages['mouse_id']}")
        back.click()
        assert browser.title == f"Mouse {pages['mouse_id']}"
    _open(browser, pages["index"])
    browser.find_element("link text", str(pages["mouse_id"])).click()
    assert browser.title == f"Mouse {pages['mouse_id']}"


def test_report_from_an_nwb_file(browser, experiment_nwb, session_nwb, tmp_path):
    for path in (experiment_nwb, session_nwb):
        page = report.nwb_report(path, tmp_path)
        check_page(browser, page, 4, tmp_path / f"{page.stem}.png")


# --- local (offline) and streamed S3 caches ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3_release(tiny_release):
    pytest.importorskip("moto.server", reason="the S3 case needs moto[server] (test extra)")
    from s3_server import publish_release

    server, _ = publish_release(tiny_release.root, BUCKET)
    return server


def test_reports_from_streamed_s3_and_local_cache(browser, s3_release, tiny_cache, tmp_path):
    from vbo.cache.project import VisualBehaviorOphysProjectCache as Cache

    mouse, session_id, experiment_id = _pick(tiny_cache)
    folder = tmp_path / "cache"
    s3 = quiet(Cache.from_s3_cache, folder, bucket_name_override=BUCKET, endpoint_url=s3_release.endpoint)
    out = tmp_path / "streamed"
    with quiet(s3.get_behavior_ophys_experiment, experiment_id, stream=True) as experiment:
        page = quiet(report.experiment_report, experiment, out / report.experiment_page_name(experiment_id))
    assert not list(folder.rglob("*.nwb"))  # streamed: nothing downloaded
    check_page(browser, page, 10, tmp_path / "streamed.png")
    quiet(report.release_report, s3, out)
    check_page(browser, out / report.RELEASE_PAGE, 1, tmp_path / "s3-index.png")
    assert "Changes since" in browser.page_source

    s3.download(behavior_session_ids=[session_id])
    local = quiet(Cache.from_local_cache, folder)
    with quiet(local.get_behavior_session, session_id) as session:
        page = quiet(report.session_report, session, tmp_path / "local" / report.session_page_name(session_id))
    check_page(browser, page, 4, tmp_path / "local.png")


def test_report_command(tiny_release, tiny_cache, tmp_path):
    from typer.testing import CliRunner

    from vbo.cli import app

    _, session_id, _ = _pick(tiny_cache)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tiny_release.root), "--static", "--session", str(session_id),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / report.session_page_name(session_id)).is_file()
    result = runner.invoke(app, ["report", str(tiny_release.root), "--static", "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / report.RELEASE_PAGE).is_file()
    unknown = runner.invoke(app, ["report", str(tiny_release.root), "--static", "--mouse", "1", "--out",
                                  str(tmp_path)])
    assert unknown.exit_code == 2 and "mouse_id" in unknown.output
    both = runner.invoke(app, ["report", str(tiny_release.root), "--static", "--mouse", "1", "--session", "2"])
    assert both.exit_code != 0


def test_demo_writes_one_report_of_each_kind(browser, tiny_release, tmp_path):
    import re

    from vbo.demo import run_demo

    result = run_demo(tmp_path / "demo", release_dir=tiny_release.root)
    assert set(result.reports) == {"release overview", "mouse", "behavior session", "experiment"}
    summary = result.summary.read_text()
    linked = re.findall(r"\]\((reports/[^)]+\.html)\)", summary)
    assert sorted(linked) == sorted(p.relative_to(result.out_dir).as_posix() for p in result.reports.values())
    minimum = {"release overview": 1, "mouse": 2, "behavior session": 4, "experiment": 10}
    for kind, page in result.reports.items():
        check_page(browser, page, minimum[kind], tmp_path / f"demo-{page.stem}.png")
    _open(browser, result.reports["mouse"])
    assert len(browser.find_elements("css selector", "#sessions a")) == 2
