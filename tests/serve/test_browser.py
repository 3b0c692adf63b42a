"""The page in a real headless browser (Chromium driven by Selenium): upload a case, wait for the result table,
check its top term against the API and that a screenshot is not blank; bad uploads show their message on the page
and the server keeps serving. Skips, saying why, where no Chromium + chromedriver can run (CI installs no apt
packages): tests/serve/test_http.py checks the same endpoints over plain HTTP.

`PHENOLIP_SERVE_SCREENSHOT=docs/img/serve.png` saves the screenshot (docs/serve.md says how it was made);
`PHENOLIP_SERVE_RUN=RUN PHENOLIP_SERVE_IMAGES=a.png,b.png` serves that run and uploads those images instead of the
session's tiny run (for a screenshot of a trained model)."""
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from phenolip_jax.serve.engine import Engine, Upload
from tests.serve.conftest import running_server, serve_config

WAIT_S = 120  # a first case compiles the image tower


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium under chromedriver, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -r requirements-test.txt)")
    from selenium.common.exceptions import WebDriverException

    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver); "
                    "tests/serve/test_http.py checks the same endpoints over plain HTTP")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--hide-scrollbars"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    except WebDriverException as e:
        pytest.skip(f"Chromium did not start under chromedriver: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    """(url, engine, image paths): the session's tiny run, or PHENOLIP_SERVE_RUN with PHENOLIP_SERVE_IMAGES."""
    run = os.environ.get("PHENOLIP_SERVE_RUN")
    if not run:
        engine = request.getfixturevalue("engine")
        yield request.getfixturevalue("live_url"), engine, request.getfixturevalue("demo_images")[:2]
        return
    engine = Engine(serve_config(run, ""), str(tmp_path_factory.mktemp("serve_docs")))
    with running_server(engine) as url:
        yield url, engine, os.environ["PHENOLIP_SERVE_IMAGES"].split(",")


def wait_for(driver, css, text=None):
    """The first element matching css (that contains `text`, when given) once it is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    if text is not None:
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))


def submit_case(driver, url, paths, note=""):
    """Opens the page, chooses the files (and a note) and submits."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, "#organ option:nth-child(2)")  # /api/info answered: the organ systems are listed
    driver.find_element(By.ID, "files").send_keys("\n".join(os.path.abspath(p) for p in paths))
    if note:
        driver.find_element(By.ID, "note").send_keys(note)
    driver.find_element(By.ID, "submit").click()


def assert_not_blank(png: bytes) -> None:
    """The screenshot shows a page: many colours and real contrast, not one flat colour."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def save_for_docs(png: bytes, path: str) -> None:
    """A palette PNG (commit-sized) of the screenshot."""
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128).save(path, optimize=True)


def test_a_case_shows_its_top_terms_and_a_screenshot_that_is_not_blank(browser, target):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, engine, paths = target
    submit_case(browser, url, paths, note="two photographs of one patient")
    first = wait_for(browser, "#terms-0 tbody tr")
    expected = engine.predict_case([Upload(os.path.basename(p), open(p, "rb").read()) for p in paths])
    top = expected["images"][0]["predictions"][0]
    assert first.get_attribute("data-hpo") == top["hpo_id"]
    cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == top["name"] and cells[3] == f"{100 * top['probability']:.1f}%"
    assert cells[5].endswith(top["name"]) and cells[4] == "; ".join(top["organ_systems"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#terms-1 tbody tr")) == len(expected["images"][1]["predictions"])
    assert browser.find_element(By.ID, "download").get_attribute("href").endswith("/download")
    png = browser.get_screenshot_as_png()
    assert_not_blank(png)
    if os.environ.get("PHENOLIP_SERVE_SCREENSHOT"):
        save_for_docs(png, os.environ["PHENOLIP_SERVE_SCREENSHOT"])
    organ = engine.organ_systems[0]
    Select(browser.find_element(By.ID, "organ")).select_by_value(organ["id"])  # the page submits again
    wait_for(browser, "#results h2", text=f"(organ system {organ['id']})")
    rows = browser.find_elements(By.CSS_SELECTOR, "#terms-0 tbody tr td:nth-child(5)")
    assert rows and all(organ["name"] in r.text for r in rows)


def test_bad_uploads_show_their_message_on_the_page(browser, target, bad_files):
    url, _, paths = target
    for kind, message in (("text", "notes.txt: not a readable image"), ("dicom", "broken.dcm: not a readable DICOM"),
                          ("large", "huge.png: 50.0 MB is over the limit of 20 MB per image")):
        submit_case(browser, url, [bad_files[kind]])
        assert message in wait_for(browser, "#error", text=message).text, kind
        submit_case(browser, url, paths[:1])  # the server still answers
        wait_for(browser, "#terms-0 tbody tr")
