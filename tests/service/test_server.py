"""A real `python -m service` process on a loopback port, and the web page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import GRAY, png_array

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "GAN_HOST": "127.0.0.1", "GAN_PORT": str(port), "GAN_WEIGHTS_DIR": str(weights_dir),
        "GAN_DEVICE": "cpu", "GAN_MAX_BATCH": "16", "GAN_MAX_WAIT_MS": "2", "GAN_DEFAULT_MODEL": GRAY,
        "GAN_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"python -m service exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service not ready after 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too.
    text = log.read_text()
    assert code in (0, -15) and "Application shutdown complete" in text, f"unclean shutdown ({code}):\n{text}"


def test_real_server_generates(server: str) -> None:
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["models"][GRAY] == "loaded"
    r = httpx.post(f"{server}/generate", json={"label": "Sneaker", "n": 4, "seed": 9}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-seed"] == "9" and r.headers["x-model"] == GRAY and "etag" in r.headers
    assert png_array(r.content).shape == (2 * 30 + 2, 2 * 30 + 2)
    bad = httpx.post(f"{server}/generate", json={"label": "Sneaker", "n": 0}, timeout=30)
    assert bad.status_code == 422 and bad.json()["field"] == "n"
    assert "gan_requests_total" in httpx.get(f"{server}/metrics").text


def _chromium(tmp_path: Path, offline: bool = False):
    """A headless Chromium driver, or a skip where Chromium is not installed. `offline` leaves
    it no network beyond this machine: every host but 127.0.0.1 fails to resolve, and anything
    that tries a proxy meets a closed port."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    if offline:
        flags += ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                  "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]
    for flag in flags:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def test_docs_in_headless_chromium_without_network(server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium(tmp_path, offline=True)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"{server}/docs")
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= 5)
        paths = {e.text.replace("\u200b", "") for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/generate", "/interpolate", "/models", "/healthz", "/readyz"} <= paths, paths
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
        assert resources and all(url.startswith(server) for url in resources), resources
    finally:
        driver.quit()


def test_page_in_headless_chromium(server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _chromium(tmp_path)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"{server}/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#label option")) == 10)
        seed = driver.find_element(By.ID, "seed")
        seed.clear()
        seed.send_keys("5")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "seed-used").text == "5")
        wait.until(lambda d: d.execute_script(
            "const i = document.getElementById('grid'); return i.complete && i.naturalWidth > 0;"))
        width = driver.execute_script("return document.getElementById('grid').naturalWidth;")
        assert width == (4 * 30 + 2) * 4  # n=16 -> 4 per row, padding 2, scale 4
        assert driver.find_element(By.ID, "seed-used").text == "5"
        # The link is GET /generate with the grid's seed: the same PNG from a URL.
        link = driver.execute_script("return document.getElementById('permalink').href;")
        assert "/generate?" in link and "seed=5" in link and "scale=4" in link
        shown = driver.execute_script(
            "return fetch(document.getElementById('grid').src).then(r => r.arrayBuffer())"
            ".then(b => Array.from(new Uint8Array(b)));")
        assert bytes(shown) == httpx.get(link).content
        # The page drew a first strip on load: wait for a new one, not that one.
        _click_for_new_image(driver, wait, "interpolate", "strip")
        wait.until(lambda d: d.find_element(By.ID, "status").text == "")

        # Latents out and back in: the re-rendered grid has the seeded grid's pixels.
        seeded = _pixels(driver, "grid")
        assert driver.execute_script("return document.getElementById('download').download;").endswith(".png")
        driver.find_element(By.ID, "get-latents").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text == "16 latents of seed 5")
        latents = json.loads(driver.find_element(By.ID, "latents").get_attribute("value"))
        latent_dim = next(m["latent_dim"] for m in httpx.get(f"{server}/models").json()["models"] if m["name"] == GRAY)
        assert len(latents) == 16 and all(len(row) == latent_dim for row in latents)
        _click_for_new_image(driver, wait, "rerender", "grid")
        wait.until(lambda d: d.find_element(By.ID, "status").text == "re-rendered 16 latents")
        assert _pixels(driver, "grid") == seeded

        # WebP: the same grid, and the download link names it so.
        Select(driver.find_element(By.ID, "format")).select_by_value("image/webp")
        _click_for_new_image(driver, wait, "generate", "grid")
        assert driver.execute_script("return document.getElementById('download').download;").endswith(".webp")
        assert _pixels(driver, "grid") == seeded

        # An emptied field is left out, so the service's default applies (it was sent as null: 422).
        driver.find_element(By.ID, "n").clear()
        _click_for_new_image(driver, wait, "generate", "grid")
        assert _pixels(driver, "grid") == seeded  # n defaults to 16: the same grid
        driver.find_element(By.ID, "scale").clear()
        _click_for_new_image(driver, wait, "interpolate", "strip")
        assert driver.execute_script("return document.getElementById('strip').naturalHeight;") == 32  # scale 1

        # A seed beyond JavaScript's exact integers is refused, not sent rounded to another seed.
        seed.clear()
        seed.send_keys("9007199254740993")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: "seed: this page sends seeds from 0 to 9007199254740991" in
                   d.find_element(By.ID, "status").text)
        assert driver.find_element(By.ID, "seed-used").text == "5"
    finally:
        driver.quit()


def _click_for_new_image(driver, wait, button_id: str, image_id: str) -> None:  # noqa: ANN001 - selenium
    """Click the button, then wait until the image shows a new picture (another src, loaded)."""
    from selenium.webdriver.common.by import By

    before = driver.execute_script("return document.getElementById(arguments[0]).src;", image_id)
    driver.find_element(By.ID, button_id).click()
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById(arguments[0]);"
        "return i.src !== arguments[1] && i.complete && i.naturalWidth > 0;", image_id, before))


def _pixels(driver, image_id: str) -> str:  # noqa: ANN001 - a selenium driver
    """The image's pixels as drawn by the browser (a data URL of a canvas copy)."""
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); const c = document.createElement('canvas');"
        "c.width = i.naturalWidth; c.height = i.naturalHeight; c.getContext('2d').drawImage(i, 0, 0);"
        "return c.toDataURL('image/png');", image_id)
