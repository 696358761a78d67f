"""The demo page, end to end in headless Debian Chromium driven by Selenium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fastseg.serving import ServingConfig, create_app
from tests.serving_fixtures import TINY_PALETTE, build_tiny_model_dir, live_server, quadrant_image, tiny_scores

pytestmark = pytest.mark.browser

def test_page_uploads_image_and_renders_result(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    Segmenter = pytest.importorskip("fastseg.segmenter").Segmenter
    seg = Segmenter(build_tiny_model_dir(tmp_path / "TinySeg"), device="cpu")
    image_path = tmp_path / "quadrants.png"
    cv2.imwrite(str(image_path), quadrant_image(120, 160))
    try:
        with live_server(create_app(seg, ServingConfig())) as url:
            driver.get(url + "/")
            WebDriverWait(driver, 20).until(ec.text_to_be_present_in_element((By.ID, "model-name"), "TinySeg"))
            driver.find_element(By.ID, "file-input").send_keys(str(image_path))
            WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "result")))

            assert driver.find_element(By.ID, "size").text == "160×120"
            assert float(driver.find_element(By.ID, "latency").text) > 0
            legend = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#legend li")]
            assert sorted(t.split()[0] for t in legend) == ["blue", "dark", "green", "red"]
            assert all(t.endswith("25.0%") for t in legend)
            pixel = driver.execute_script(
                "return Array.from(document.getElementById('colour-canvas').getContext('2d')"
                ".getImageData(10, 10, 1, 1).data);"
            )
            assert pixel[:3] == list(TINY_PALETTE[0])  # top-left quadrant is class 0 ("red")
            overlay = driver.execute_script(
                "const c = document.getElementById('overlay-canvas');"
                "return [c.width, c.height, Array.from(c.getContext('2d').getImageData(150, 110, 1, 1).data)];"
            )
            assert overlay[:2] == [160, 120] and overlay[2][3] == 255
            assert not driver.find_element(By.ID, "key-row").is_displayed()  # auth is off
            assert "error" not in driver.find_element(By.ID, "status").get_attribute("class")
            shot = os.environ.get("FASTSEG_SCREENSHOT")
            if shot:
                driver.save_screenshot(shot)
    finally:
        seg.close()


def test_page_shows_the_confidence_map_when_asked(driver: Any, tmp_path: Path) -> None:
    """A server with 'scores: true' offers the toggle; checked, the page draws result.scoreMapPng."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    Segmenter = pytest.importorskip("fastseg.segmenter").Segmenter
    image = quadrant_image(40, 60)
    image_path = tmp_path / "q.png"
    cv2.imwrite(str(image_path), image)
    with Segmenter(build_tiny_model_dir(tmp_path / "TinyLogits", logits=True), device="cpu", scores=True) as seg, \
            live_server(create_app(seg, ServingConfig(scores=True))) as url:
        driver.get(url + "/")
        WebDriverWait(driver, 20).until(ec.visibility_of_element_located((By.ID, "show-scores")))
        driver.find_element(By.ID, "show-scores").click()
        driver.find_element(By.ID, "file-input").send_keys(str(image_path))
        WebDriverWait(driver, 30).until(ec.visibility_of_element_located((By.ID, "score-figure")))
        pixels = driver.execute_script(
            "const c = document.getElementById('score-canvas'); const g = c.getContext('2d');"
            "return [c.width, c.height, Array.from(g.getImageData(5, 5, 1, 1).data), Array.from(g.getImageData(50, 35, 1, 1).data)];"
        )
    assert pixels[:2] == [60, 40]
    want = np.rint(tiny_scores(image) * 255)
    assert abs(pixels[2][0] - want[5, 5]) <= 1 and abs(pixels[3][0] - want[35, 50]) <= 1 and pixels[2][0] != pixels[3][0]


def test_docs_page_lists_the_operations_offline(driver: Any, tmp_path: Path) -> None:
    """/docs renders Swagger UI from the packaged assets (no CDN) and lists every operation."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    Segmenter = pytest.importorskip("fastseg.segmenter").Segmenter
    seg = Segmenter(build_tiny_model_dir(tmp_path / "TinySeg"), device="cpu")
    try:
        with live_server(create_app(seg, ServingConfig())) as url:
            driver.get(url + "/docs")
            WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 3)
            operations = sorted(
                (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
                 block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text)
                for block in driver.find_elements(By.CSS_SELECTOR, ".opblock")
            )
            assert operations == [("GET", "/health"), ("GET", "/info"), ("POST", "/semantic-segmentation")]
            loaded = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name);"
            )
            assert loaded and all(name.startswith(url) for name in loaded), loaded
    finally:
        seg.close()
