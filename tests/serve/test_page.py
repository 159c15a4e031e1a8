"""The web page end to end in headless Chromium (Debian's, driven by selenium): sign in with a token,
ask a question, upload a conversation, forget it; a screenshot is taken."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and DRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them with apt-get)",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()


def test_sign_in_ask_upload_and_forget_in_the_page(served, browser, demo_conversations, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    _, url, tokens = served
    wait = WebDriverWait(browser, 120)
    browser.get(url.removesuffix("/v1") + "/")
    browser.find_element(By.ID, "token").send_keys(tokens["alice"])
    browser.find_element(By.ID, "signin").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "who"), "signed in as alice"))
    # the token is kept for this tab only ("remember me" unticked); the page ran under its CSP
    assert browser.execute_script("return sessionStorage.getItem('paramem-token')") == tokens["alice"]
    assert browser.execute_script("return localStorage.getItem('paramem-token')") is None
    assert browser.find_element(By.ID, "model").get_attribute("value") == "paramem:alice"
    rows = browser.find_elements(By.CSS_SELECTOR, "#conversations tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == [demo_conversations[0].id]

    browser.find_element(By.ID, "question").send_keys("What did I plant on my balcony?")
    browser.find_element(By.CSS_SELECTOR, "#ask button").click()
    wait.until(lambda b: "…" not in b.find_element(By.ID, "chat").text)
    assert "assistant:" in browser.find_element(By.ID, "chat").text
    browser.find_element(By.ID, "recall").click()  # what the memory recalls of each conversation
    wait.until(seen.text_to_be_present_in_element((By.ID, "recollections"), f"{demo_conversations[0].id}: "))

    new = demo_conversations[4]
    upload = tmp_path / "new.jsonl"
    messages = [{"role": m.role, "content": m.content} for m in new.messages]
    upload.write_text(json.dumps({"id": new.id, "timestamp": new.timestamp, "messages": messages}) + "\n")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "upload").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "job"), "learned 1 conversations"))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#conversations tr")) == 2)

    forget = f'button[data-conversation="{new.id}"]'
    browser.find_element(By.CSS_SELECTOR, forget).click()
    wait.until(seen.alert_is_present())
    browser.switch_to.alert.dismiss()  # Forget asks first: said no, nothing is forgotten
    time.sleep(1)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#conversations tr")) == 2
    browser.find_element(By.CSS_SELECTOR, forget).click()
    wait.until(seen.alert_is_present())
    browser.switch_to.alert.accept()
    wait.until(seen.text_to_be_present_in_element((By.ID, "job"), f"forgot {new.id}"))
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#conversations tr")) == 1)
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("PARAMEM_SCREENSHOT"):  # keep it where asked (the README's picture)
        shutil.copyfile(shot, os.environ["PARAMEM_SCREENSHOT"])
