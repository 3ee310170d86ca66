"""A real browser for the dashboard's tests and benchmarks: Debian's Chromium, headless,
driven through Debian's ChromeDriver by Selenium (which then downloads nothing), with the
flags that keep it off the network it is not allowed to reach."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def browser(width: int = 1400, height: int = 900) -> Iterator[webdriver.Chrome]:
    profile = Path(tempfile.mkdtemp(prefix="pv-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text_of(driver: webdriver.Chrome, element_id: str) -> str | None:
    """An element's text read in one step inside the page (None when it is not there).
    The dashboard's fragments are swapped by polling: an element found by WebDriver and then
    read can be gone between the two calls (a stale element); one script cannot."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : null;", element_id)


def attribute_of(driver: webdriver.Chrome, element_id: str, name: str) -> str | None:
    """An element's attribute read in one step inside the page (see text_of)."""
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        element_id, name)
