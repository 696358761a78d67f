"""The demo page shows a reference build's weights note, and nothing for an ordinary model
(headless Debian Chromium, like test_serving_browser.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fastseg.model_dir import read_meta, write_meta
from fastseg.reference import REFERENCE_NOTE, REFERENCE_WEIGHTS
from fastseg.serving import ServingConfig, create_app
from tests.serving_fixtures import build_tiny_model_dir, live_server

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("reference", [True, False], ids=["reference", "ordinary"])
def test_page_shows_the_weights_note_only_for_reference_weights(
    driver: Any, tmp_path: Path, reference: bool  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from fastseg.segmenter import Segmenter

    model_dir = build_tiny_model_dir(tmp_path / "TinySeg")
    if reference:
        meta = read_meta(model_dir)
        write_meta(model_dir, replace(meta, provenance={**meta.provenance, "weights": REFERENCE_WEIGHTS}))
    with Segmenter(model_dir, device="cpu") as seg, live_server(create_app(seg, ServingConfig())) as url:
        driver.get(url + "/")
        WebDriverWait(driver, 20).until(ec.text_to_be_present_in_element((By.ID, "model-name"), "TinySeg"))
        note = driver.find_element(By.ID, "weights-note")
        WebDriverWait(driver, 5).until(lambda _: note.is_displayed() == reference)
        assert note.text == (REFERENCE_NOTE if reference else "")
