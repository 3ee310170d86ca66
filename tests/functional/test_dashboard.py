"""The dashboard over plain HTTP, as a browser and as a hostile client would use it: the
login, a page per kind, the live fragments, and the actions' guards. (The lab drives it
in a real browser: tests/lab/test_dashboard.py.)"""

from __future__ import annotations

import http.client
import subprocess
import time
import urllib.parse

from provisioner.web import rackpages

from .conftest import Running


def call(running: Running, method: str, path: str, body: str = "", headers: dict | None = None):
    host, port = running.url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body.encode(), headers=headers or {})
    resp = conn.getresponse()
    data = resp.read().decode()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def enroll(running: Running, name: str, rack: str, i: int) -> None:
    code, _, err = running.cli(*running.enroll_args(f"52:54:00:77:01:0{i}", "10.0.0.9", rack, "--name", name,
                                                    "--no-inspect"))
    assert code == 0, err


def sign_in(running: Running) -> str:
    token = running.settings.operator_token_file.read_text().strip()
    status, headers, _ = call(running, "POST", "/ui/login", urllib.parse.urlencode({"token": token, "next": "/ui/jobs"}),
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"] == "/ui/jobs"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    return cookie.split(";")[0]


def test_the_dashboard_needs_a_sign_in_and_shows_the_fleet(running, monkeypatch):
    for i, name in enumerate(("web-1", "web-2")):
        code, _, err = running.cli(*running.enroll_args(f"52:54:00:77:00:0{i}", "10.0.0.9", "rack-1", "--name", name,
                                                        "--no-inspect"))
        assert code == 0, err
    # Signed out: every page goes to the login form, and keeps where it was going.
    status, headers, _ = call(running, "GET", "/ui/nodes/web-1")
    assert status == 303 and headers["Location"] == "/ui/login?next=%2Fui%2Fnodes%2Fweb-1"
    status, headers, _ = call(running, "GET", "/ui/racks", headers={"Cookie": "provisioner_session=v1.99999999999.forged"})
    assert status == 303, "a forged cookie is no session"
    status, _, page = call(running, "POST", "/ui/login", "token=wrong", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and "That is not the operator token." in page
    status, headers, _ = call(running, "POST", "/ui/login", "token=" + running.settings.operator_token_file.read_text()
                              .strip() + "&next=//evil.example/", {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["Location"] == "/ui/racks", "never sent to another site after signing in"
    cookie = sign_in(running)
    auth = {"Cookie": cookie}
    status, headers, page = call(running, "GET", "/ui/racks", headers=auth)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert 'id="rack-rack-1"' in page and "web-1" in page and "web-2" in page and 'data-state="enrolled"' in page
    for path, words in (("/ui/nodes/web-1", "Power off"), ("/ui/jobs", "No job yet"), ("/ui/images", "No image yet"),
                        ("/ui/roles", "No guest yet"), ("/ui/static/htmx.min.js", "htmx"),
                        ("/ui/static/pico.min.css", "Pico CSS")):
        status, _, page = call(running, "GET", path, headers=auth)
        assert status == 200 and words in page, (path, page[:300])
    # A machine's last nights, with what stands out, on its page.
    for i, passed in enumerate((False, True, False)):
        running.client.post("/v1/nights", {"pool": "rack-1", "job": None, "started_at": 1.7e9 + i, "ended_at": 1.7e9 + 9,
                                           "machines": [{"name": "web-1", "rack": "rack-1", "passed": passed,
                                                         "reason": None if passed else "checks: disk: 1 bad sector",
                                                         "phases": [["write-image", 60.0]]}]})
    status, _, page = call(running, "GET", "/ui/nodes/web-1", headers=auth)
    assert "Last nights" in page and "failed 2 of its last 3 nights" in page and "1 bad sector" in page
    status, _, page = call(running, "GET", "/ui/nodes/nope", headers=auth)
    assert status == 404 and "no node" in page
    assert call(running, "GET", "/ui/static/..%2F..%2Fsession.py", headers=auth)[0] == 404

    # Live: nothing moved since the page's last event, then a node moved.
    status, _, page = call(running, "GET", "/ui/racks", headers=auth)
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    assert call(running, "GET", f"/ui/changes?after={after}", headers=auth)[0] == 204
    running.client.post("/v1/power", {"action": "on", "target": "web-2"})
    status, _, page = call(running, "GET", f"/ui/changes?after={after}", headers=auth)
    assert status == 200 and 'hx-swap-oob="true"' in page and "web-2" in page and "web-1" not in page
    assert 'id="legend" hx-swap-oob="true"' in page and "enrolled 2" in page, "the counts are live too"
    # A node enrolled after the page loaded: its rack is drawn again, with it.
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    enroll(running, "web-3", "rack-1", 3)
    status, _, page = call(running, "GET", f"/ui/changes?after={after}", headers=auth)
    assert '<section class="rack" id="rack-rack-1" hx-swap-oob="true">' in page and "web-3" in page
    assert 'id="racks"' not in page
    # A rack born since: every rack of the page's range is drawn again, the new one with them.
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    enroll(running, "db-1", "rack-2", 4)
    status, _, page = call(running, "GET", f"/ui/changes?after={after}", headers=auth)
    assert '<div id="racks" hx-swap-oob="true">' in page and 'id="rack-rack-2"' in page and "web-3" in page
    assert call(running, "GET", "/ui/changes?after=0&from=../x", headers=auth)[0] == 400

    # Pages of whole racks when the fleet outgrows one (a budget of 3 tiles here): each
    # page draws its racks, its poll keeps to its range.
    monkeypatch.setattr(rackpages, "TILES_PER_PAGE", 3)
    status, _, page = call(running, "GET", "/ui/racks", headers=auth)
    assert status == 200 and "page 1 of 2" in page and 'id="rack-rack-1"' in page and 'id="rack-rack-2"' not in page
    assert 'href="/ui/racks?page=2"' in page and "upto=rack-2" in page
    status, _, page = call(running, "GET", "/ui/racks?page=2", headers=auth)
    assert "page 2 of 2" in page and 'id="rack-rack-2"' in page and "web-1" not in page and "from=rack-2" in page
    assert "page 2 of 2" in call(running, "GET", "/ui/racks?page=9", headers=auth)[2], "past the end: the last"
    assert call(running, "GET", "/ui/racks?page=x", headers=auth)[0] == 400
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    running.client.post("/v1/power", {"action": "on", "target": "web-1"})
    status, _, page = call(running, "GET", f"/ui/changes?after={after}&from=rack-2&upto=", headers=auth)
    assert "web-1" not in page and 'id="legend"' in page, "another page's node is not swapped in here"
    # Racks born in the last page's range: drawn in it while it fits a page, then the
    # browser is told to load the page again (cut afresh) rather than draw them all.
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    enroll(running, "db-2", "rack-3", 7)
    status, headers, page = call(running, "GET", f"/ui/changes?after={after}&from=rack-2&upto=", headers=auth)
    assert '<div id="racks" hx-swap-oob="true">' in page and 'id="rack-rack-3"' in page and "HX-Refresh" not in headers
    after = page.split("/ui/changes?after=")[1].split("&")[0]
    enroll(running, "db-3", "rack-4", 8)
    enroll(running, "db-4", "rack-4", 9)
    status, headers, page = call(running, "GET", f"/ui/changes?after={after}&from=rack-2&upto=", headers=auth)
    assert status == 200 and headers.get("HX-Refresh") == "true" and not page
    monkeypatch.undo()

    # Actions: htmx's header is required (a form on another site cannot send it).
    action = "/ui/nodes/web-1/power/off"
    status, _, page = call(running, "POST", action, headers=auth)
    assert status == 403 and "refused" in page
    status, _, page = call(running, "POST", action, headers={**auth, "HX-Request": "true", "Origin": "http://evil.example"})
    assert status == 403
    status, _, page = call(running, "POST", action, headers={**auth, "HX-Request": "true"})
    assert status == 200 and "web-1: power off" in page
    status, _, page = call(running, "POST", "/ui/jobs/12345/abort", headers={**auth, "HX-Request": "true"})
    assert status == 200 and 'class="flash bad"' in page
    assert call(running, "POST", action, headers={"HX-Request": "true"})[0] == 401

    # Signing out ends the session in the browser.
    status, headers, _ = call(running, "POST", "/ui/logout", headers=auth)
    assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]


def test_in_a_real_browser_actions_are_confirmed_and_answered_in_the_page(running, workdir):
    """Debian's Chromium through Selenium: sign in, power a node off from its page and abort
    a job from its page, each after the page's confirmation; the answer shows in the page
    and the page stays whole (a fragment must not replace the place answers go)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import attribute_of, browser, text_of

    for i, name in enumerate(("web-1", "web-2")):
        code, _, err = running.cli(*running.enroll_args(f"52:54:00:78:00:0{i}", "10.0.0.9", "rack-1", "--name", name,
                                                        "--no-inspect"))
        assert code == 0, err
        with running.daemon.svc.store._tx() as db:  # as if inspected: ready
            db.execute("UPDATE nodes SET state = 'ready' WHERE name = ?", (name,))
    image = workdir / "host.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    assert running.cli("image", "import", str(image), "--name", "host")[0] == 0
    token = running.settings.operator_token_file.read_text().strip()
    with browser() as b:
        wait = WebDriverWait(b, 15, poll_frequency=0.1)  # a poll is every 2 s
        b.get(running.url + "/ui/nodes/web-2")
        b.find_element(By.ID, "token").send_keys(token)
        b.find_element(By.ID, "sign-in").click()
        wait.until(lambda d: d.current_url.endswith("/ui/nodes/web-2"))
        b.find_element(By.ID, "power-off").click()
        assert b.switch_to.alert.text == "Power off web-2?"
        b.switch_to.alert.dismiss()  # said no: nothing is sent
        b.find_element(By.ID, "power-off").click()
        b.switch_to.alert.accept()
        wait.until(lambda d: "web-2: power off" in (text_of(d, "flash") or ""))
        assert running.client.get("/v1/nodes/web-2")["power_state"] == "off"
        assert [e for e in running.client.get("/v1/nodes/web-2/events")["events"] if e["event"] == "power"][-1]

        code, out, err = running.cli("reimage", "rack-1", "--image", "host", "--max-unavailable", "1", "--no-wait")
        assert code == 0, out + err
        job = running.client.get("/v1/jobs?limit=1")["jobs"][-1]["id"]

        b.get(running.url + f"/ui/jobs/{job}")
        assert text_of(b, "job-status") == "running"
        b.find_element(By.ID, "abort").click()
        b.switch_to.alert.accept()
        wait.until(lambda d: "abort requested" in (text_of(d, "flash") or ""))
        assert running.client.get(f"/v1/jobs/{job}")["abort"]
        time.sleep(2.5)  # a poll of the job's fragment later, the page is still whole
        assert text_of(b, "flash") and text_of(b, "job-status")

        # Nodes enrolled while the racks page is open appear in it, in their rack or in
        # a rack born since, without a reload.
        b.get(running.url + "/ui/racks")
        wait.until(lambda d: attribute_of(d, "poller", "hx-get"))
        b.execute_script("window.provisionerTestMark = 'not reloaded';")
        enroll(running, "web-3", "rack-1", 5)
        enroll(running, "db-1", "rack-2", 6)
        ids = [running.client.get(f"/v1/nodes/{n}")["id"] for n in ("web-3", "db-1")]
        wait.until(lambda d: all(attribute_of(d, f"node-{i}", "data-state") == "enrolled" for i in ids))
        assert "rack-2" in (text_of(b, "rack-rack-2") or "") and "web-3" in (text_of(b, "rack-rack-1") or "")
        assert b.execute_script("return window.provisionerTestMark;") == "not reloaded"
        assert not [e for e in b.get_log("browser") if e["level"] == "SEVERE"], b.get_log("browser")
