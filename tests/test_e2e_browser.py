"""End-to-end: `streamlit run app.py` on loopback, driven by headless Chromium through selenium.

The app reads indexes built by `python -m core embed` with the real effnet-lite0 encoder from a
40-painting sample of the real WikiArt corpus. The test uploads a painting, uploads corrupt bytes,
sends a text query, opens a corpus query from its URL and visits every page, saving a screenshot
of each step to tmp_path (and to docs/screenshots/ when SEMGAP_SCREENSHOTS=1).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SAMPLE_NAME = "wikiart-sample"
SAMPLE_TYPES = ("religious", "mythological", "historical", "portrait", "landscape", "genre", "still-life")
PER_TYPE = 5
UNTYPED = 5
WINDOW = (1280, 800)  # a projector's resolution
STEP_TIMEOUT = 60  # seconds for one page to settle, because the first query loads the encoder

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
)


def write_sample(wikiart_root: Path, folder: Path) -> Path:
    """Write a 40-painting manifest of the real corpus, with images/ linked to the real images."""
    folder.mkdir(parents=True)
    (folder / "images").symlink_to(wikiart_root / "images", target_is_directory=True)
    labels = pd.read_csv(wikiart_root / "labels.csv", dtype=str, keep_default_na=False)
    parts = [labels[labels["type"] == t].head(PER_TYPE) for t in SAMPLE_TYPES]
    parts.append(labels[labels["type"] == ""].head(UNTYPED))
    pd.concat(parts).to_csv(folder / "labels.csv", index=False)
    return folder


def run_core(*args: str, env: dict) -> None:
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"python -m core {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def build_artefacts(sample: Path, indexes: Path, results: Path, env: dict) -> None:
    """Embed with the real effnet-lite0, evaluate, and write a PCA map (UMAP's compile takes too long here)."""
    run_core("embed", "--corpus", str(sample), "--models", "effnet-lite0", "--out", str(indexes), "--workers", "0", env=env)
    run_core("evaluate", "--indexes", str(indexes), "--out", str(results), "--n-boot", "50", "--texture-sample", "10", env=env)
    from core.index import load_corpus_indexes
    from core.project import ProjectConfig, write_projections

    loaded, problems = load_corpus_indexes(indexes / SAMPLE_NAME)
    assert not problems, problems
    write_projections(loaded, results / SAMPLE_NAME, ProjectConfig(methods=("pca",)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer {url}/_stcore/health within {timeout} s")


@pytest.fixture(scope="module")
def app_url(wikiart_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEMGAP_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    sample = write_sample(wikiart_root, base / SAMPLE_NAME)
    build_artefacts(sample, base / "indexes", base / "results", env)

    port = free_port()
    env.update(SEMGAP_INDEXES=str(base / "indexes"), SEMGAP_RESULTS=str(base / "results"))
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process)
        yield url, sample
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*WINDOW)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Return a function that saves a screenshot to tmp_path and, if asked, to docs/screenshots/."""
    folder = tmp_path_factory.mktemp("screenshots")
    publish = os.environ.get("SEMGAP_SCREENSHOTS") == "1"

    def save(driver, name: str, full_page: bool = False) -> Path:
        if full_page:
            height = driver.execute_script(
                "const main = document.querySelector('[data-testid=\"stMain\"]');"
                "return main ? main.scrollHeight : document.body.scrollHeight;"
            )
            driver.set_window_size(WINDOW[0], min(max(WINDOW[1], height + 60), 5000))
            time.sleep(1.0)
        path = folder / f"{name}.png"
        driver.save_screenshot(str(path))
        driver.set_window_size(*WINDOW)
        if publish:
            target = REPO / "docs" / "screenshots"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        return path

    return save


def settle(driver, timeout: float = STEP_TIMEOUT) -> None:
    """Wait until Streamlit has finished running the script (its running indicator is gone)."""
    from selenium.webdriver.common.by import By

    time.sleep(1.0)
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        time.sleep(0.25)
    raise TimeoutError(f"the app was still running after {timeout} s")


def wait_for_text(driver, text: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in driver.find_element("tag name", "body").text:
            return
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not appear within {timeout} s; the page shows:\n{driver.find_element('tag name', 'body').text[:2000]}")


def choose_mode(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    radio = driver.find_element(By.XPATH, f"//label[.//*[normalize-space(text())='{label}']]")
    radio.click()
    settle(driver)


def assert_no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not errors, errors[0].text


def test_search_upload_text_and_pages(app_url, browser, shots, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, sample = app_url
    labels = pd.read_csv(sample / "labels.csv", dtype=str, keep_default_na=False)
    religious = labels[labels["type"] == "religious"].iloc[0]

    # A slide link to a corpus painting, opened on a fresh server.
    browser.get(f"{url}/?query=id:{religious['image']}&models=effnet-lite0&k=8")
    settle(browser)
    wait_for_text(browser, "precision@8")
    assert_no_exception(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".sg-card")) == 8
    shots(browser, "search-corpus-query", full_page=True)

    # Upload a real painting through the file input.
    choose_mode(browser, "Upload a painting")
    upload = browser.find_element(By.CSS_SELECTOR, 'input[type="file"]')
    upload.send_keys(str((sample / religious["image"]).resolve()))
    wait_for_text(browser, "Top-8 of each model")
    settle(browser)
    assert_no_exception(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".sg-card")) == 8
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "cannot be put in a link" in body
    assert f"Reproductions from the corpus “{SAMPLE_NAME}”." in body, "the credit names the corpus, not its folder"
    assert str(sample) not in body
    shots(browser, "search-upload", full_page=True)

    # Corrupt bytes with an image extension: a clear error, and the page keeps working.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    browser.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(broken))
    wait_for_text(browser, "broken.jpg could not be read")
    settle(browser)
    assert_no_exception(browser)
    message = browser.find_element(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]').text
    assert "damaged or incomplete" in message, "a JPEG that fails to decode is damaged, not of the wrong format"
    assert "Supported formats" not in message
    shots(browser, "search-upload-corrupt")

    # A text query: effnet-lite0 has no text tower, and the page shows a message instead of results.
    choose_mode(browser, "Text")
    box = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Describe a painting"]')
    box.send_keys("the adoration of the magi", Keys.ENTER)
    wait_for_text(browser, "has no text tower")
    settle(browser)
    assert_no_exception(browser)
    assert "query=text" in browser.current_url
    shots(browser, "search-text-no-tower")

    for page, marker in (("gap", "Additive vs narrative"), ("method", "Conclusion"), ("map", "Map of each model")):
        browser.get(f"{url}/{page}")
        settle(browser)
        wait_for_text(browser, marker)
        assert_no_exception(browser)
        assert "shuffle_mean" not in browser.find_element(By.TAG_NAME, "body").text
        shots(browser, page, full_page=True)

    # Click the first point of the first map: its painting and neighbours appear below the maps.
    click_first_point(browser)
    wait_for_text(browser, "Selected painting and its neighbours")
    settle(browser)
    assert_no_exception(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".sg-card")) == 6
    shots(browser, "map-selection", full_page=True)


def click_first_point(driver) -> None:
    """Click the first point of the first plotly chart, at the pixel where plotly drew it."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    chart = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    time.sleep(0.5)
    x, y = driver.execute_script(
        "const chart = arguments[0], box = chart.getBoundingClientRect();"
        "const layout = chart._fullLayout, trace = chart._fullData[0];"
        "return [box.left + layout.xaxis._offset + layout.xaxis.d2p(trace.x[0]),"
        "        box.top + layout.yaxis._offset + layout.yaxis.d2p(trace.y[0])];",
        chart,
    )
    # Viewport coordinates: an element taller than the window has its in-view centre elsewhere.
    action = ActionBuilder(driver)
    action.pointer_action.move_to_location(int(x), int(y))
    action.pointer_action.click()
    action.perform()
