"""End to end in a real headless Chromium (Selenium + the OS's chromium and chromedriver).

`ptychompi gui` runs as a subprocess; the page is opened with its token, the form filled, a
real MDA file imported, a small simulated job submitted to the queue and run by
`ptychompi queue run` (a subprocess); the live view must show the iteration counter and the
images change, then the result opens in the browser. Screenshots go to the test's tmp folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ptychompi.app.cli import main
from ptychompi.app.queue.store import QueueStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
MDA_FILE = "xrfmaps_2ide_2xfm_0011.mda"


def _shared_mda() -> Path:
    for base in (REPO.parent / "shared" / "data" / "mda", Path("/work/shared/data/mda")):
        if (base / MDA_FILE).is_file():
            return base / MDA_FILE
    raise FileNotFoundError(f"{MDA_FILE} not found in ../shared/data/mda")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture()
def gui(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A root with a simulated scan and a real MDA file, served by `ptychompi gui`."""
    root = tmp_path / "root"
    root.mkdir()
    assert main(["simulate", "--out", str(root / "scan.cxi"), "--frame", "64", "--grid", "12",
                 "--step-px", "8", "--probe-diameter-px", "20"]) == 0
    shutil.copy(_shared_mda(), root / MDA_FILE)
    proc = subprocess.Popen([sys.executable, "-m", "ptychompi.app.cli", "gui", "--port", "0",
                             "--root", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.time() + 30
    while url is None and time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        url = m.group(1) if m else None
    assert url, f"the GUI did not print its URL: {_stop(proc)}"
    try:
        yield url, root
    finally:
        _stop(proc)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _set(d: webdriver.Chrome, key: str, value: str) -> None:
    node = d.find_element(By.ID, "f-" + key)
    if node.tag_name == "select":
        Select(node).select_by_value(value)
    else:
        node.clear()
        if value:
            node.send_keys(value)


def _value(d: webdriver.Chrome, key: str) -> str:
    return d.find_element(By.ID, "f-" + key).get_attribute("value")


def _text(d: webdriver.Chrome, id_: str) -> str:
    return d.find_element(By.ID, id_).text


def test_browser_end_to_end(gui: tuple[str, Path], browser: webdriver.Chrome,
                            tmp_path: Path) -> None:
    url, root = gui
    d = browser
    shots = tmp_path / "screenshots"
    shots.mkdir()
    wait = WebDriverWait(d, 30, poll_frequency=0.1)

    # --- without the token: 403; with it: the page
    bare = url.split("?")[0] + "api/config/schema"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(bare, timeout=10)
    assert denied.value.code == 403
    d.get(url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert "?token" not in d.current_url  # the token moved into a cookie
    assert len(d.find_elements(By.CSS_SELECTOR, "#form .field")) > 60

    # --- a bad value shows the CLI's error line and marks the field
    _set(d, "preprocess.rotate90", "7")
    wait.until(lambda d: "rotate90 = 7 is above its maximum 3" in _text(d, "config-error"))
    assert _text(d, "config-error").startswith("ptychompi: error:")
    assert "bad" in d.find_element(By.ID, "row-preprocess.rotate90").get_attribute("class")
    _set(d, "preprocess.rotate90", "0")

    # --- import a real MDA file: energy, scan dimensions, step, positions
    d.find_element(By.ID, "mda-path").send_keys(MDA_FILE)
    d.find_element(By.ID, "mda-import").click()
    wait.until(lambda d: "imported from the MDA file" in _text(d, "params-message"))
    assert float(_value(d, "geometry.energy_kev")) == pytest.approx(12.869, rel=1e-4)
    assert _value(d, "data.scan_dims") == "11, 11"
    assert _value(d, "data.positions") == "mda"
    assert _value(d, "data.mda_file") == MDA_FILE
    wait.until(lambda d: "mda_file: xrfmaps_2ide_2xfm_0011.mda" in _text(d, "yaml-view"))
    d.save_screenshot(str(shots / "1-parameters-mda.png"))

    # --- fill the form for the simulated scan (its positions and energy are in the file)
    for key in ("data.mda_file", "data.scan_dims", "data.step_m", "data.frames_per_file",
                "geometry.energy_kev"):
        _set(d, key, "")
    _set(d, "data.positions", "auto")
    _set(d, "data.path", "scan.cxi")
    _set(d, "algorithm.name", "epie")
    _set(d, "algorithm.iterations", "300")
    _set(d, "output.live_every", "5")
    wait.until(lambda d: "iterations: 300" in _text(d, "yaml-view")
               and "live_every: 5" in _text(d, "yaml-view") and not _text(d, "config-error"))
    d.save_screenshot(str(shots / "2-parameters.png"))

    # --- submit to the queue from the Run page (a name with shell syntax)
    d.find_element(By.CSS_SELECTOR, "a[data-page=run]").click()
    name = d.find_element(By.ID, "job-name")
    name.clear()
    name.send_keys("e2e; touch PWNED $(id)")
    d.find_element(By.ID, "job-submit").click()
    wait.until(lambda d: "queued job 1" in _text(d, "run-message"))
    wait.until(lambda d: d.find_elements(By.ID, "job-row-1"))
    assert "queued" in _text(d, "job-row-1")
    runner = subprocess.Popen([sys.executable, "-m", "ptychompi.app.cli", "queue", "run",
                               str(root / "queue"), "--poll", "0.3", "--quiet"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # --- live view: the counter and the images change without a reload
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#job-row-1 button:last-child"))
        d.find_element(By.CSS_SELECTOR, "#job-row-1 button:last-child").click()  # "live"
        seen_its: set[str] = set()
        seen_src: set[str] = set()
        loaded = 0
        t0 = time.time()
        while time.time() - t0 < 60:
            it = _text(d, "live-iteration")
            if it.isdigit():
                seen_its.add(it)
            src = d.find_element(By.ID, "live-phase").get_attribute("src") or ""
            if src and d.execute_script(
                    "const i = document.getElementById('live-phase');"
                    "return i.complete && i.naturalWidth > 0;"):
                if src not in seen_src:
                    loaded += 1
                seen_src.add(src)
            if len(seen_its) == 2:
                d.save_screenshot(str(shots / "3-live-running.png"))
            if _text(d, "live-state") == "done":
                break
            time.sleep(0.1)
        assert _text(d, "live-state") == "done", _text(d, "live-state")
        assert _text(d, "live-iteration") == "300"
        assert len(seen_its) >= 3, seen_its  # the counter moved while the job ran
        assert loaded >= 2, seen_src  # the phase image was replaced at least once
        wait.until(lambda d: d.find_element(By.ID, "live-open-result").is_displayed())
        d.save_screenshot(str(shots / "4-live-done.png"))
        try:  # the queue is empty now: its runner ends by itself
            runner.wait(60)
        except subprocess.TimeoutExpired:
            pass
    finally:
        out = _stop(runner)
    assert runner.returncode == 0, out
    store = QueueStore(root / "queue")
    assert store.get(1).state == "done" and store.get(1).iteration == 300
    store.close()

    # --- the result in the browser, and the same result side by side
    d.find_element(By.ID, "live-open-result").click()
    wait.until(lambda d: "object" in d.find_element(By.CSS_SELECTOR,
                                                     "#panel-a .p-title").text)
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#panel-a .p-image');"
        "return i.complete && i.naturalWidth > 0;"))
    Select(d.find_element(By.CSS_SELECTOR, "#panel-a select.cmap")).select_by_value("viridis")
    wait.until(lambda d: "cmap=viridis" in d.find_element(
        By.CSS_SELECTOR, "#panel-a .p-image").get_attribute("src"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tree button"))
    d.find_element(By.CSS_SELECTOR, "#tree button").click()  # "B": the right-hand panel
    wait.until(lambda d: "object" in d.find_element(By.CSS_SELECTOR, "#panel-b .p-title").text)
    Select(d.find_element(By.CSS_SELECTOR, "#panel-b select.view")).select_by_value("probe")
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('#panel-b .p-image');"
        "return i.complete && i.naturalWidth > 0 && i.src.includes('kind=probe');"))
    links = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#panel-a .downloads a")]
    assert links == ["HDF5", "TIFF", "PNG", "CSV", "error CSV"]
    d.save_screenshot(str(shots / "5-results.png"))
    assert not list(root.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert all(p.stat().st_size > 10_000 for p in shots.glob("*.png"))
    print(f"screenshots in {shots}")
    assert os.path.isfile(root / "queue" / "jobs" / "1-e2e_touch_PWNED_id" / "result.h5")
