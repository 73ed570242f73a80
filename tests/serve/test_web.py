"""End to end in headless Chromium (Debian's chromium + chromium-driver; scripts/install.sh --test installs them):
upload the real PAD photo, ask a question, read the streamed answer, ask for a report; a screenshot is kept."""
import shutil

import pytest
from PIL import Image

from dermvqa.infer.chat import ChatSession
from dermvqa.infer.generate import load_model
from dermvqa.infer.report import DISCLAIMER
from dermvqa.model.labels import load_labels
from dermvqa.serve.web import build_app, launch
from dermvqa.train.ds_env import free_port
from tests.conftest import PAD_PHOTO

QUESTION = "What is the most likely diagnosis for this lesion?"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Chromium and its driver are needed: apt-get install chromium chromium-driver " \
                                "(scripts/install.sh --test does it)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def web(chatty_model_dir):
    model, processor = load_model(chatty_model_dir, device="cpu")
    demo = build_app(model, processor, load_labels(chatty_model_dir), "chatty", max_new_tokens=12)
    port = free_port()
    launch(demo, port=port, block=False)
    yield demo, f"http://127.0.0.1:{port}/", model, processor
    demo.close()


def test_upload_ask_and_report_in_a_real_browser(web, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    demo, url, model, processor = web
    assert demo.server_name == "127.0.0.1"
    session = ChatSession(model, processor, Image.open(PAD_PHOTO).convert("RGB"), max_new_tokens=12)
    answer = "".join(session.ask(QUESTION))
    assert answer

    wait = WebDriverWait(browser, 60)
    browser.get(url)
    upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))[0]
    upload.send_keys(str(PAD_PHOTO))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img"))
    browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
    browser.find_element(By.CSS_SELECTOR, "#send").click()

    def bot_text(d):
        bubbles = d.find_elements(By.CSS_SELECTOR, "#chat .message.bot")
        return bubbles and bubbles[-1].text.strip() == answer

    wait.until(bot_text)
    assert QUESTION in browser.find_element(By.CSS_SELECTOR, "#chat .message.user").text
    browser.save_screenshot(str(tmp_path / "web_chat.png"))

    browser.find_element(By.CSS_SELECTOR, "#report-button").click()
    wait.until(lambda d: "Differential" in d.find_element(By.CSS_SELECTOR, "#report").text)
    report = browser.find_element(By.CSS_SELECTOR, "#report").text
    assert PAD_PHOTO.name in report and "Suggested next step" in report

    banner = browser.find_element(By.CSS_SELECTOR, "#disclaimer")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    assert banner.is_displayed() and DISCLAIMER in banner.text
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", banner)
    assert 0 <= top < 100, "the disclaimer should stay pinned at the top of the window"

    browser.save_screenshot(str(tmp_path / "web_report.png"))
    for name in ("web_chat.png", "web_report.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        print(f"screenshot: {tmp_path / name}")


def test_overlay_under_the_answer_and_the_unlike_photo_notice(trusted_model_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from dermvqa.trust.ood import NOTICE, load_summary
    from dermvqa.infer.report import trained_families

    model_dir, world = trusted_model_dir
    model, processor = load_model(model_dir, device="cpu")
    demo = build_app(model, processor, load_labels(model_dir), "trusted", max_new_tokens=8,
                     families=trained_families(model_dir), ood=load_summary(model_dir))
    port = free_port()
    launch(demo, port=port, block=False)
    try:
        wait = WebDriverWait(browser, 90)
        browser.get(f"http://127.0.0.1:{port}/")
        upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))[0]
        upload.send_keys(str(world / "images" / "synthetic" / "lesion_00003.png"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo img"))
        browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
        browser.find_element(By.CSS_SELECTOR, "#send").click()
        overlay = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#explanation img"))[0]
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", overlay) > 300)
        chat_box = browser.find_element(By.CSS_SELECTOR, "#chat").rect
        assert overlay.rect["y"] > chat_box["y"] + chat_box["height"] - 1, "the overlay sits under the answer"
        assert NOTICE not in browser.find_element(By.CSS_SELECTOR, "#ood-notice").text
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", overlay)
        browser.save_screenshot(str(tmp_path / "web_overlay.png"))

        browser.get(f"http://127.0.0.1:{port}/")  # a fresh page: a new photo
        upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))[0]
        upload.send_keys(str(PAD_PHOTO))
        wait.until(lambda d: NOTICE in d.find_element(By.CSS_SELECTOR, "#ood-notice").text)
        browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
        browser.find_element(By.CSS_SELECTOR, "#send").click()
        wait.until(lambda d: any(NOTICE in b.text for b in d.find_elements(By.CSS_SELECTOR, "#chat .message.bot")))
        browser.save_screenshot(str(tmp_path / "web_ood.png"))
    finally:
        demo.close()
    for name in ("web_overlay.png", "web_ood.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        print(f"screenshot: {tmp_path / name}")
