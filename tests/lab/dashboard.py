"""The dashboard in a real browser, on the lab's daemon: Chromium reaches it through the
lab's dashboard port (provisioner/lab/forward.py: TCP into the provisioning network),
signs in with the operator token, and watches tiles change without reloading.
Screenshots go to build/screenshots (CI's artefacts)."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import attribute_of, browser, text_of


SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def scrape(handle) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The lab daemon's GET /metrics over TCP (the lab's dashboard port) with the operator
    token, parsed by prometheus_client: (name, sorted labels) -> value."""
    token = (handle.data / "operator.token").read_text().strip()
    request = urllib.request.Request(handle.lab.dashboard_url.removesuffix("/ui") + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Dashboard:
    def __init__(self, handle) -> None:
        self.handle = handle
        assert handle.lab.status()["dashboard"], "the lab's dashboard port is not up (see logs/forward.log)"
        self.base = handle.lab.dashboard_url.removesuffix("/ui")
        self._browser = browser()
        self.driver = self._browser.__enter__()
        self.token = (handle.data / "operator.token").read_text().strip()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self._browser.__exit__(None, None, None)

    def __enter__(self) -> "Dashboard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait_for(self, what: str, css: str, timeout: float = 30):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)), what)

    def sign_in(self, path: str = "/ui/racks") -> None:
        self.open(path)
        self.wait_for("the login form", "#token").send_keys(self.token)
        self.driver.find_element(By.ID, "sign-in").click()
        WebDriverWait(self.driver, 20).until(lambda d: d.current_url.endswith(path), f"back at {path}")

    def shot(self, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"[dashboard] screenshot {path}")
        return path

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.handle)

    def tile_state(self, node_id: int) -> str | None:
        return attribute_of(self.driver, f"node-{node_id}", "data-state")

    def click(self, element_id: str, timeout: float = 30) -> None:
        """Click an element by id once it is there, again if a poll swapped it in between."""
        WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                      ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
            lambda d: d.find_element(By.ID, element_id).click() or True, f"#{element_id} clicked")

    def text(self, element_id: str) -> str:
        """An element's text now ("" when absent), read in one step: never stale."""
        return (text_of(self.driver, element_id) or "").strip()

    def wait_text(self, what: str, element_id: str, predicate=bool, timeout: float = 20) -> str:
        """Wait until the element's text satisfies `predicate`; return that text."""
        def satisfied(_driver) -> list[str] | None:
            text = self.text(element_id)
            return [text] if predicate(text) else None
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(satisfied, what)[0]

    def watch_tile(self, node_id: int) -> "TileWatch":
        return TileWatch(self, node_id)


class TileWatch:
    """Every state a node's tile showed, read twice a second in the page as loaded, with a
    mark set in the page first: if the page were reloaded, the mark would be gone."""

    def __init__(self, dash: Dashboard, node_id: int) -> None:
        self.dash, self.node_id = dash, node_id
        self.seen: list[str] = []
        dash.driver.execute_script("window.provisionerTestMark = 'not reloaded';")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            state = self.dash.tile_state(self.node_id)
            if state and (not self.seen or self.seen[-1] != state):
                self.seen.append(state)
            time.sleep(0.5)

    def stop(self, until: str, timeout: float = 20.0) -> list[str]:
        """Stop once the tile shows `until` (what the daemon says now: a poll or two later),
        or after `timeout`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and (not self.seen or self.seen[-1] != until):
            time.sleep(0.2)
        self._stop.set()
        self._thread.join()
        return self.seen

    def reloaded(self) -> bool:
        return self.dash.driver.execute_script("return window.provisionerTestMark;") != "not reloaded"
