"""The page in a real browser: Debian's chromium driven by Selenium through chromium-driver (given by
path, so Selenium Manager downloads nothing). Upload a picture, compare what the page shows with the
API's JSON, toggle the heat map, then upload a non-image and read the error."""
import os
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from serving_helpers import app_for, running_server, train_tiny_run

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MISSING = "the browser test did not run: install Debian's chromium and chromium-driver (.ci/run does)"
if not (CHROMIUM and DRIVER) and os.environ.get("CI"):
    pytest.fail(MISSING, pytrace=False)  # CI installs them: a missing browser there is a failure
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=MISSING)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.update(SE_OFFLINE="true", SE_AVOID_STATS="true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_shows_the_api_answer_and_the_error_for_a_non_image(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    digit = (load_digits().images[0] * 255 / 16).astype(np.uint8)  # a real handwritten 0 from the digits set
    picture = tmp_path / "zero.png"
    Image.fromarray(digit).resize((64, 64), Image.NEAREST).save(picture)
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not a picture")

    with running_server(app_for(train_tiny_run(tmp_path / "run"))) as url:
        expected = httpx.post(f"{url}/v1/predict?top_k=5&cam=1", content=picture.read_bytes(),
                              headers={"Content-Type": "image/png"}).json()
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "convnext_test" in b.find_element(By.ID, "model").text)
        state = lambda: browser.find_element(By.ID, "status").get_attribute("data-state")  # noqa: E731

        browser.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda b: state() in ("done", "error"))
        assert state() == "done", browser.find_element(By.ID, "status").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#results .row")
        assert len(rows) == len(expected["top"]) == 5
        for row, top in zip(rows, expected["top"]):
            assert row.find_element(By.CLASS_NAME, "name").text == top["class"]
            assert row.find_element(By.CLASS_NAME, "pct").text == f"{100 * top['probability']:.1f}%"
            assert float(row.get_attribute("data-probability")) == pytest.approx(top["probability"], abs=1e-6)
        assert sum(float(r.get_attribute("data-probability")) for r in rows) <= 1 + 1e-6
        cam = browser.find_element(By.ID, "cam")
        assert cam.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", cam) == 32
        browser.find_element(By.ID, "show-cam").click()  # the toggle hides the heat map, and shows it again
        assert not cam.is_displayed()
        browser.find_element(By.ID, "show-cam").click()
        assert cam.is_displayed()
        browser.save_screenshot(str(tmp_path / "page-answer.png"))

        browser.find_element(By.ID, "file").send_keys(str(not_image))
        wait.until(lambda b: state() in ("done", "error"))
        message = browser.find_element(By.ID, "status").text
        assert state() == "error" and "notes.txt was rejected (4" in message
        assert "unsupported media type" in message or "not a readable image" in message
        assert browser.find_elements(By.CSS_SELECTOR, "#results .row") == []
        assert not browser.find_element(By.ID, "figure").is_displayed()  # no stale picture or heat map
        browser.save_screenshot(str(tmp_path / "page-error.png"))
    assert (tmp_path / "page-answer.png").stat().st_size > 0 and (tmp_path / "page-error.png").stat().st_size > 0


def test_page_asks_for_the_key_of_a_keyed_service_and_sends_it(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    picture = tmp_path / "grey.png"
    Image.new("L", (40, 40), 90).save(picture)
    with running_server(app_for(train_tiny_run(tmp_path / "run"), api_key="page-key")) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        form = browser.find_element(By.ID, "key-form")
        wait.until(lambda b: form.is_displayed())  # the description answered 401: the page asks
        assert "API key" in browser.find_element(By.ID, "model").text
        browser.find_element(By.ID, "key").send_keys("page-key")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait.until(lambda b: "convnext_test" in b.find_element(By.ID, "model").text)
        assert not form.is_displayed()
        browser.find_element(By.ID, "file").send_keys(str(picture))
        state = lambda: browser.find_element(By.ID, "status").get_attribute("data-state")  # noqa: E731
        wait.until(lambda b: state() in ("done", "error"))
        assert state() == "done", browser.find_element(By.ID, "status").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results .row")) == 5
