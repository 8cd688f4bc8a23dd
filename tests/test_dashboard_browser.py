"""The dashboard in a real browser (headless Chromium) against a real worker, broker and Jaeger.

A run is submitted while the runs page is open: it appears and reaches
`succeeded` without a reload; its chart, candidate table and best network
carry the numbers of its generation-completed events; its trace waterfall
shows its generation spans; a dead letter is shown escaped and re-driven;
a long run is cancelled from its page. Screenshots of each page are saved
to THUNDERHELM_DASHBOARD_SCREENSHOTS (docs/dashboard/) when that is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kafka_helpers import REPO, WorkerProcess, collect, free_port, module_worker
from tests.test_e2e_kafka import for_run, produce, small_request, structured
from thunderhelm.schemas import events as ev
from thunderhelm.schemas.codec import decode_record

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.jaeger, pytest.mark.browser, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


worker = module_worker("dash-worker")


@pytest.fixture(scope="module")
def dashboard(worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("dash") / "dashboard.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thunderhelm.streams.cli.main",
                "dashboard",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=worker.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/config", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"dashboard did not start: {log_path.read_text()[-2000:]}"
                ) from None
            time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("THUNDERHELM_DASHBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0);")
        driver.set_window_size(1400, max(1000, _page_height(driver)))
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(1400, 1000)


def _page_height(driver: WebDriver) -> int:
    return min(4000, int(driver.execute_script("return document.body.scrollHeight")) + 40)


def wait_for[T](what: Callable[[], T | None], timeout_s: float = 60.0, message: str = "") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = what()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {message}")
        time.sleep(0.2)


def css(driver: WebDriver, selector: str) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def fmt(x: float | None) -> str:
    return "\u2013" if x is None else f"{x:.4f}"


async def run_log(
    worker: WorkerProcess, run_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run's generation-completed data and its result, read straight from the topics."""
    s = worker.settings
    records = await collect(
        [s.run_events, s.run_results],
        lambda seen: bool(for_run(seen, run_id, s.run_results)),
        timeout_s=240,
    )
    events = [decode_record(r.value, {}) for r in for_run(records, run_id, s.run_events)]
    generations = [e.data for e in events if e.type == ev.GENERATION_COMPLETED]
    result = decode_record(for_run(records, run_id, s.run_results)[-1].value, {}).data
    return generations, result


def test_a_run_appears_live_with_its_numbers_and_trace(
    worker: WorkerProcess, dashboard: str, browser: WebDriver
) -> None:
    s = worker.settings
    browser.get(f"{dashboard}/#/")
    wait_for(lambda: "on" in css(browser, "#live")[0].get_attribute("class"), 20, "SSE open")
    browser.execute_script("window.__samePage = true;")

    run_id = f"dash-{uuid.uuid4().hex[:6]}"
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    request = structured(small_request(run_id, generations=2))
    asyncio.run(
        produce(s.run_requests, request, run_id.encode(), [("traceparent", traceparent.encode())])
    )

    row = f'tr[data-run-id="{run_id}"]'
    wait_for(lambda: css(browser, row), 60, "the run's row")
    wait_for(
        lambda: css(browser, f"{row} .status-cell")[0].text == "succeeded", 240, "succeeded, live"
    )
    assert browser.execute_script("return window.__samePage === true;"), "the page was reloaded"
    generations, result = asyncio.run(run_log(worker, run_id))
    assert len(generations) == 2
    cells = css(browser, row)[0]
    assert cells.find_element(By.CSS_SELECTOR, ".generation").text == "2/2"
    assert cells.find_element(By.CSS_SELECTOR, ".evaluations").text == str(
        generations[-1]["evaluations"]
    )
    assert cells.find_element(By.CSS_SELECTOR, ".best").text == fmt(result["best"]["fitness"])
    shot(browser, "runs")
    status = Select(browser.find_element(By.ID, "status-filter"))
    status.select_by_value("failed")
    wait_for(lambda: not css(browser, row), 10, "the row filtered out")
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("succeeded")
    wait_for(lambda: css(browser, row), 10, "the row filtered in")
    cells = css(browser, row)[0]

    cells.find_element(By.CSS_SELECTOR, "td.run a").click()
    wait_for(lambda: css(browser, "#fitness-chart circle.point.best"), 20, "the chart")
    for series in ("best", "mean"):
        points = css(browser, f"#fitness-chart circle.point.{series}")
        drawn = [float(p.get_attribute("data-value")) for p in points]
        assert drawn == [g[f"{series}_fitness"] for g in generations]

    candidates = [(g["generation"], c) for g in generations for c in g["candidates"]]
    rows = css(browser, "#candidates-body tr")
    assert len(rows) == len(candidates)
    shown = {
        (int(r.get_attribute("data-generation")), int(r.get_attribute("data-index"))): r
        for r in rows
    }
    for generation, c in candidates:
        r = shown[(generation, c["index"])]
        assert r.find_element(By.CSS_SELECTOR, "td.fitness").text == fmt(c["fitness"])
        assert r.find_element(By.CSS_SELECTOR, "td.val_accuracy").text == fmt(c["val_accuracy"])
        assert r.find_element(By.CSS_SELECTOR, "td.params").text == str(c["params"])
        assert r.find_element(By.CSS_SELECTOR, "td.status").text == c["status"]
    browser.find_element(By.CSS_SELECTOR, 'th[data-key="fitness"]').click()
    sorted_fitness = [
        r.find_element(By.CSS_SELECTOR, "td.fitness").get_attribute("data-value")
        for r in css(browser, "#candidates-body tr")
    ]
    expected = sorted(
        (c["fitness"] for _, c in candidates if c["fitness"] is not None), reverse=True
    )
    assert [float(v) for v in sorted_fitness if v][: len(expected)] == expected

    units = sum(len(level) for level in result["best"]["genome"]["levels"])
    assert len(css(browser, "#network circle.node.unit")) == units
    assert css(browser, "#network line.edge.output")
    assert browser.find_element(By.ID, "artifact-path").text == result["artifact"]
    assert browser.find_element(By.ID, "cancel").get_attribute("disabled")  # finished: no cancel
    shot(browser, "run")

    browser.find_element(By.ID, "trace-link").click()
    want = {"generation 0", "generation 1"}

    def generation_rows() -> bool:
        names = {r.get_attribute("data-name") for r in css(browser, "#waterfall .row")}
        if want <= names:
            return True
        browser.refresh()  # Jaeger takes a moment to index what the worker exported
        time.sleep(1.5)
        return False

    try:
        wait_for(generation_rows, 90, "generation spans in the waterfall")
    except AssertionError:
        status = css(browser, "#trace-status")
        raise AssertionError(f"no generation spans: {status[0].text if status else '?'}") from None
    gen0 = css(browser, '#waterfall .row[data-name="generation 0"]')[0]
    gen0.click()
    attrs = gen0.find_element(By.CSS_SELECTOR, ".attrs")
    assert attrs.is_displayed() and "thunderhelm.candidates" in attrs.text
    assert not css(browser, "#jaeger-link")  # no real Jaeger UI configured: no link
    shot(browser, "trace")


def test_a_dead_letter_is_shown_escaped_and_redriven(
    worker: WorkerProcess, dashboard: str, browser: WebDriver
) -> None:
    s = worker.settings
    key = '<img src=x onerror="window.__xss=1">'
    value = b'<b id="injected">not an event</b>'
    asyncio.run(produce(s.run_requests, value, key.encode()))
    browser.get(f"{dashboard}/#/dead-letters")

    def letter_rows() -> list[Any]:
        rows = [
            r
            for r in css(browser, "#letters-body tr")
            if r.find_element(By.CSS_SELECTOR, ".key").text == key
        ]
        if not rows:
            browser.find_element(By.ID, "dlq-reload").click()
            time.sleep(1.0)
        return rows

    row = wait_for(letter_rows, 60, "the dead letter")[0]
    assert row.find_element(By.CSS_SELECTOR, ".attempt").text == "1"
    assert row.find_element(By.CSS_SELECTOR, ".error-class").text == "DecodeError"
    row.find_element(By.CSS_SELECTOR, "button.show").click()
    shown = wait_for(lambda: css(browser, "#dlq-value"), 10, "the record")[0]
    assert shown.text == value.decode()
    assert not css(browser, "#injected") and not css(browser, "#letters img")
    assert browser.execute_script("return window.__xss === undefined;")
    shot(browser, "dead-letters")

    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    browser.find_element(By.ID, "redrive").click()
    wait_for(
        lambda: "re-drove" in browser.find_element(By.ID, "redrive-result").text, 30, "redrive"
    )

    def attempts() -> list[str] | None:
        browser.find_element(By.ID, "dlq-reload").click()
        time.sleep(1.0)
        found = [
            r.find_element(By.CSS_SELECTOR, ".attempt").text
            for r in css(browser, "#letters-body tr")
            if r.find_element(By.CSS_SELECTOR, ".key").text == key
        ]
        return found if "2" in found else None

    # Still not an event: the worker dead-letters it again, one attempt more.
    assert sorted(wait_for(attempts, 60, "the re-driven record back, attempt 2")) == ["1", "2"]


def test_a_running_run_is_cancelled_from_its_page(
    worker: WorkerProcess, dashboard: str, browser: WebDriver
) -> None:
    s = worker.settings
    run_id = f"dash-cancel-{uuid.uuid4().hex[:6]}"
    # Slow enough generations that the run is still going when the button is clicked
    # (a converged population trains few new children, so each training must be slow).
    request = small_request(run_id, generations=200, samples=12000)
    request["training"]["epochs"] = 30
    asyncio.run(produce(s.run_requests, structured(request), run_id.encode()))
    browser.get(f"{dashboard}/#/runs/{run_id}")

    def generation_shown() -> bool:
        cell = css(browser, "#run-generation")
        if not cell:
            browser.refresh()  # the page was opened before the run was accepted
            time.sleep(1.0)
            return False
        return cell[0].text.split("/")[0] not in ("", "0")

    wait_for(generation_shown, 120, "a generation, live")

    def click_cancel() -> bool:
        # The page re-renders as events arrive: a button found just before an
        # update is gone by the time it is clicked, so find it again.
        try:
            browser.find_element(By.ID, "cancel").click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(click_cancel, 30, "the cancel button, clicked")
    try:
        wait_for(lambda: css(browser, "h1 .status.cancelled"), 120, "cancelled, live")
    except AssertionError:
        said = browser.find_element(By.ID, "main").text[:300]
        raise AssertionError(f"not cancelled on the page: {said}") from None
    generations, result = asyncio.run(run_log(worker, run_id))
    assert result["status"] == "cancelled"
    assert result["error"]["message"] == "cancelled from the dashboard"
    assert len(generations) < 200
    json.dumps(result)


@pytest.fixture(autouse=True, scope="module")
def _need_chromium() -> None:
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed")
