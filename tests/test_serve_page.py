"""The page of `house-price serve` in a real browser (Debian's chromium, driven by Selenium): a form built from the
schema, filled in and priced, showing the price `predict` gives for the same house."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from conftest import ROOT, run_script, serving

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver here: apt install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER), options=options
    )  # a given driver: Selenium downloads nothing
    yield driver
    driver.quit()


def test_the_page_prices_a_typed_in_house_as_predict_does(housing_run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    checkpoint = housing_run / "checkpoints" / "best.ckpt"
    with serving(checkpoint) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda driver: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        income = browser.find_element(By.ID, "field-median_income")
        assert income.get_attribute("type") == "number" and "training range" in browser.page_source
        income.clear()
        income.send_keys("5.25")
        bedrooms = browser.find_element(By.ID, "field-total_bedrooms")
        bedrooms.clear()  # empty: unknown, priced as a missing value
        Select(browser.find_element(By.ID, "field-ocean_proximity")).select_by_visible_text("INLAND")
        house = {
            field.get_attribute("name"): field.get_attribute("value")
            for field in browser.find_elements(By.CSS_SELECTOR, "#fields input, #fields select")
        }
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda driver: driver.find_element(By.ID, "price").get_attribute("data-value"))
        shown = {
            key: float(browser.find_element(By.ID, element).get_attribute(f"data-{key}"))
            for key, element in (("value", "price"), ("lower", "range"), ("upper", "range"))
        }
        text = browser.find_element(By.ID, "price").text
        reasons = browser.find_elements(By.CSS_SELECTOR, "#reasons tr")
        browser.save_screenshot(str(tmp_path / "page.png"))
    assert house["median_income"] == "5.25" and house["total_bedrooms"] == "" and house["ocean_proximity"] == "INLAND"

    pd.DataFrame([house]).to_csv(tmp_path / "house.csv", index=False)  # the same house as a file, empty cell and all
    result = run_script(
        "predict.py",
        str(checkpoint),
        "--input",
        str(tmp_path / "house.csv"),
        "--output",
        str(tmp_path / "p.csv"),
        "--interval",
        "0.9",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = pd.read_csv(tmp_path / "p.csv").iloc[0]
    assert shown["value"] == expected["median_house_value_prediction"]
    assert (shown["lower"], shown["upper"]) == (
        expected["median_house_value_lower"],
        expected["median_house_value_upper"],
    )
    number, unit = text.rsplit(" ", 1)
    assert unit == "dollars" and float(number.replace(",", "")) == pytest.approx(shown["value"], rel=1e-5), (
        text
    )  # 6 digits shown
    assert len(reasons) == 8 and (tmp_path / "page.png").stat().st_size > 10_000
