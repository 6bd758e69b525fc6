"""The web page end to end in headless Chromium: `radgen serve` in a subprocess, Selenium drives
the page (upload → draft report → attention overlay → copy/download), screenshot.

Skipped only when Chromium/chromedriver or selenium are absent (CI installs them: see
scripts/test.sh). RADGEN_SCREENSHOT=PATH also saves the final screenshot there (docs/images/);
RADGEN_SCREENSHOT_MODEL=DIR serves that model instead of the test's tiny random one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serve.tiny_model import png_bytes

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless browser test needs Debian packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(model_dir):
    return Path(os.environ.get("RADGEN_SCREENSHOT_MODEL") or model_dir)


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    model_dir = served_model
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "radgen", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"radgen serve did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (dev extra) to run the browser test")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="radgen-chromium-")
    downloads = tempfile.mkdtemp(prefix="radgen-downloads-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,980"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": downloads, "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = Path(downloads)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


def test_upload_report_heatmap_copy_download_screenshot(server, browser, served_model, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    # The model card loads with the page and says what the model was trained on.
    trained_on = wait.until(ec.visibility_of_element_located((By.ID, "card-trained_on")))
    assert trained_on.text == json.loads((served_model / "model_card.json").read_text())["trained_on"]
    assert "NOT for clinical use" in browser.find_element(By.ID, "disclaimer").text

    from PIL import Image

    from radgen.data.phantom import render_terms

    image_path = tmp_path / "chest.png"  # a synthetic IU-Phantom PA view with mild cardiomegaly
    pa = render_terms(["Cardiomegaly/mild"], "browser-test", size=256).images["PA"]
    image_path.write_bytes(png_bytes(Image.fromarray(pa, mode="L")))
    browser.find_element(By.ID, "file-input").send_keys(str(image_path))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Draft report ready"))
    findings = browser.find_element(By.ID, "findings")
    sentences = findings.find_elements(By.CSS_SELECTOR, ".sentence")
    assert sentences and findings.text.strip()
    # Highlighting follows the threshold: 1.0 marks every sentence, 0 none.
    threshold = browser.find_element(By.ID, "threshold")
    browser.execute_script("arguments[0].value = '1'; arguments[0].dispatchEvent(new Event('input'));", threshold)
    assert len(findings.find_elements(By.CSS_SELECTOR, ".sentence.low")) == len(findings.find_elements(By.CSS_SELECTOR, ".sentence"))
    browser.execute_script("arguments[0].value = '0'; arguments[0].dispatchEvent(new Event('input'));", threshold)
    assert not findings.find_elements(By.CSS_SELECTOR, ".sentence.low")
    browser.execute_script("arguments[0].value = '0.5'; arguments[0].dispatchEvent(new Event('input'));", threshold)

    toggle = browser.find_element(By.ID, "heatmap-toggle")
    toggle.click()
    overlay = wait.until(ec.visibility_of_element_located((By.ID, "overlay")))
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 256
    assert not browser.find_element(By.ID, "preview").is_displayed()
    # Hovering a sentence shows that sentence's own map; leaving it, the whole report's again.
    from selenium.webdriver.common.action_chains import ActionChains

    caption = browser.find_element(By.ID, "overlay-caption")
    assert caption.text.startswith("Attention over the whole report")
    report_src = overlay.get_attribute("src")
    first = findings.find_element(By.CSS_SELECTOR, ".sentence")
    ActionChains(browser).move_to_element(first).perform()
    assert caption.text.startswith("Attention while writing") and first.text in caption.text
    sentence_map = browser.execute_script("return arguments[0].src", overlay)
    assert sentence_map.startswith("data:image/png;base64,")
    ActionChains(browser).move_to_element(browser.find_element(By.ID, "disclaimer")).perform()
    assert caption.text.startswith("Attention over the whole report")
    assert overlay.get_attribute("src") == report_src

    browser.find_element(By.ID, "download-button").click()
    target = browser.downloads / "radgen-draft-report.txt"
    deadline = time.monotonic() + 10
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = target.read_text()
    assert text.startswith("FINDINGS:\n") and "Not for clinical use" in text
    assert findings.text.split()[0] in text
    browser.find_element(By.ID, "copy-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "copy-status"), "Copied"))

    shot = tmp_path / "serve_screenshot.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("RADGEN_SCREENSHOT"):
        from radgen.io import atomic_write_bytes

        atomic_write_bytes(os.environ["RADGEN_SCREENSHOT"], shot.read_bytes())


def test_wrong_file_shows_the_servers_message(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"GIF89a" + bytes(200))
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "status"), "415"))
    assert "PNG, JPEG or DICOM" in browser.find_element(By.ID, "status").text


def test_a_lateral_view_chosen_on_the_page_reaches_the_finding_head(server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from radgen.data.phantom import render_terms

    views = render_terms(["Pleural Effusion/left"], "browser-lateral", size=256).images
    paths = {}
    for view in ("PA", "LATERAL"):
        paths[view] = tmp_path / f"{view}.png"
        paths[view].write_bytes(png_bytes(Image.fromarray(views[view], mode="L")))
    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(paths["PA"]))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Draft report ready"))
    assert not browser.find_element(By.ID, "lateral-note").is_displayed()
    alone = browser.find_element(By.ID, "finding-table").text
    # a lateral chosen after the frontal: the report is written again, from both views
    browser.find_element(By.ID, "lateral-input").send_keys(str(paths["LATERAL"]))
    wait.until(ec.visibility_of_element_located((By.ID, "lateral-note")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Draft report ready"))
    assert "lateral view" in browser.find_element(By.ID, "lateral-note").text
    assert browser.find_element(By.ID, "finding-table").text != alone  # the head's probabilities moved
