"""The dashboard's routes under /ui. Pages read the API's own documents (the route table,
dispatched in process, as the unix socket's operator would), so the dashboard shows what
the CLI shows. Every page and fragment needs a session (the login form turns the operator
token into a signed cookie); an action also needs htmx's request header, which a form on
another site cannot send, and each asks for a confirmation in the page first."""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import jinja2

from ..errors import InvalidInput, NotFound, ProvisionerError
from ..services import Services
from ..states import STEP_LABELS, State, Step
from ..statuses import AuthKind
from ..api.http import Request, Response, Route, Router
from . import rackpages
from .rackpages import RackRange, paginate
from .session import COOKIE, Sessions, cookie_value

LOG = logging.getLogger(__name__)
HERE = Path(__file__).parent
# What the pages load, and where each comes from (package.json pins the versions).
ASSETS = {
    "htmx.min.js": (HERE / "node_modules/htmx.org/dist/htmx.min.js", "text/javascript"),
    "pico.min.css": (HERE / "node_modules/@picocss/pico/css/pico.min.css", "text/css"),
    "dashboard.css": (HERE / "static/dashboard.css", "text/css"),
}
POLL_SECONDS = 2
# Scripts and styles only from the daemon itself: an inspected hostname or a console line
# that smuggles markup is escaped, and nothing inline would run even if it were not.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Page = Callable[[Request], Response]


class WebRoutes:
    def __init__(self, svc: Services, router: Router) -> None:
        self.svc = svc
        self.router = router
        self.sessions = Sessions(svc.operator_token)
        self.env = templates()

    # -- plumbing ---------------------------------------------------------------------
    def api(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None) -> Any:
        """An API document, as the local operator gets it."""
        req = Request(method=method, path=path, query=query or {}, headers={},
                      body=json.dumps(body).encode() if body is not None else b"", client="dashboard", local=True)
        response = self.router.dispatch(req)
        return json.loads(response.body) if response.body else None

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(template).render(controller=self.svc.controller.name, **context)
        return Response(status=status, body=html.encode(), content_type="text/html; charset=utf-8",
                        headers=dict(SECURITY_HEADERS))

    def signed_in(self, req: Request) -> bool:
        return self.sessions.valid(cookie_value(req.headers.get("cookie", "")))

    def page(self, handler: Page) -> Page:
        """A page: without a session, to the login form (htmx is told to go there too)."""
        def guarded(req: Request) -> Response:
            if not self.signed_in(req):
                if req.headers.get("hx-request"):
                    return Response(status=200, headers={"HX-Redirect": "/ui/login"})
                return _redirect("/ui/login?next=" + urllib.parse.quote(req.path, safe=""))
            return handler(req)
        return guarded

    def action(self, handler: Callable[[Request], str]) -> Page:
        """A change, answered with one line the page shows: a session, htmx's header (a
        cross-site form cannot send it) and a same-origin Origin when the browser sends one."""
        def guarded(req: Request) -> Response:
            if not self.signed_in(req):
                return self.render("flash.html.j2", status=401, ok=False, text="signed out: sign in again")
            origin = req.headers.get("origin")
            if req.headers.get("hx-request") != "true" or (origin and urllib.parse.urlsplit(origin).netloc
                                                           != req.headers.get("host")):
                return self.render("flash.html.j2", status=403, ok=False, text="refused: not from this dashboard")
            try:
                text, ok = handler(req), True
            except ProvisionerError as exc:
                text, ok = str(exc), False
            LOG.info("dashboard: %s %s: %s", req.method, req.path, text)
            return self.render("flash.html.j2", ok=ok, text=text)
        return guarded

    # -- sign in and out ------------------------------------------------------------------
    def login_form(self, req: Request) -> Response:
        return self.render("login.html.j2", error="", next=_local(req.query.get("next")))

    def login(self, req: Request) -> Response:
        form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace"), max_num_fields=4)
        token = (form.get("token") or [""])[0].strip()
        target = _local((form.get("next") or [""])[0])
        if not self.sessions.token_matches(token):
            LOG.warning("dashboard: a sign-in from %s with a wrong token", req.client)
            return self.render("login.html.j2", status=401, error="That is not the operator token.", next=target)
        response = _redirect(target)
        response.headers["Set-Cookie"] = self.sessions.set_cookie()
        return response

    def logout(self, req: Request) -> Response:
        response = _redirect("/ui/login")
        response.headers["Set-Cookie"] = Sessions.clear_cookie()
        return response

    def asset(self, req: Request) -> Response:
        name = req.params["asset"]
        if name not in ASSETS:
            raise NotFound(f"no dashboard file {name!r}")
        path, kind = ASSETS[name]
        if not path.is_file():
            raise NotFound(f"{path} is missing: 'make setup' installs the dashboard's libraries (npm ci)")
        response = Response(body=path.read_bytes(), content_type=kind)
        response.headers["Cache-Control"] = "max-age=3600"
        return response

    # -- pages ----------------------------------------------------------------------------
    def all_nodes(self, **query: str) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        cursor = ""
        while True:
            doc = self.api("GET", "/v1/nodes", {"limit": "5000", **query, **({"cursor": cursor} if cursor else {})})
            nodes += doc["nodes"]
            if not doc["next"]:
                return nodes
            cursor = doc["next"]

    def racks(self, req: Request) -> Response:
        """A page of racks (see rackpages.py): the newest event is read first, so that
        whatever moves while the page is drawn is swapped in again by its first poll."""
        last = self.api("GET", "/v1/events", {"after": "0", "limit": "1"})["last"]
        counts = self.counts()
        pages = paginate(counts["sizes"])
        raw = req.query.get("page", "1")
        if not raw.isdigit() or len(raw) > 6 or int(raw) < 1:
            raise InvalidInput("page must be a page number, from 1")
        page = pages[min(int(raw), len(pages)) - 1]  # past the end (the fleet shrank): the last
        racks = {rack: self.all_nodes(rack=rack) for rack in page.racks}
        return self.render("racks.html.j2", racks=racks, counts=counts, after=last, span=page.range, pages=pages,
                           page=page, total=sum(counts["sizes"].values()))

    def counts(self) -> dict[str, Any]:
        """Nodes by state, fleet-wide and per rack, and each rack's size (one GROUP BY,
        however many nodes)."""
        per_rack = self.api("GET", "/v1/racks")["nodes"]
        fleet: dict[str, int] = {}
        for states in per_rack.values():
            for state, n in states.items():
                fleet[state] = fleet.get(state, 0) + n
        order = [s.value for s in State]
        return {"fleet": [(s, fleet[s]) for s in order if fleet.get(s)],
                "racks": {rack: [(s, states[s]) for s in order if states.get(s)] for rack, states in per_rack.items()},
                "sizes": {rack: sum(states.values()) for rack, states in per_rack.items()}}

    def changes(self, req: Request) -> Response:
        """What moved since event `after` among the racks of the poll's range, swapped in
        out of band, and the poller again with the newest event's id; 204 (nothing to
        swap) if nothing moved. A moved node's tile replaces its own; a rack that gained
        nodes is drawn again whole, and if a rack was born in the range, every rack of
        the range is (each swap replaces by id, so a repeated one changes nothing) unless
        the range outgrew a page: then the browser is told to load the page again.
        Nodes writing an image are sent each time: their progress moves without events."""
        raw = req.query.get("after", "0")
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidInput("after must be an event id")
        span = RackRange.parse(req.query)
        feed = self.api("GET", "/v1/events", {"after": raw, "limit": "5000"})
        names = {e["node"] for e in feed["events"] if e.get("node")}
        enrolled = {e["node"] for e in feed["events"] if e.get("node") and e["event"] == "enroll"}
        busy = [n for n in self.all_nodes(state=State.DEPLOYING.value)
                if n["progress"] and span.holds(n["rack"])]  # only a write has progress
        if not names and not busy:
            return Response(status=204)
        moved = {n["name"]: n for n in busy}
        for name in sorted(names - set(moved)):
            try:
                doc = self.api("GET", f"/v1/nodes/{urllib.parse.quote(name, safe='')}")
            except NotFound:
                continue  # deleted since
            if span.holds(doc["rack"]):
                moved[name] = doc
        counts = self.counts()
        shown = sorted(rack for rack in counts["sizes"] if span.holds(rack))
        grown: dict[str, int] = {}
        for doc in moved.values():
            if doc["name"] in enrolled:
                grown[doc["rack"]] = grown.get(doc["rack"], 0) + 1
        born = any(n == counts["sizes"].get(rack) for rack, n in grown.items())
        if born and len(shown) > 1 and sum(counts["sizes"][r] for r in shown) > rackpages.TILES_PER_PAGE:
            # The range outgrew a page (racks enrolled while it was open): the browser
            # loads the page again, cut afresh, rather than draw them all every poll.
            return Response(status=200, headers={"HX-Refresh": "true"})
        redrawn = shown if born else sorted(grown)
        racks = {rack: self.all_nodes(rack=rack) for rack in redrawn}
        return self.render("changes.html.j2", after=feed["next"], span=span, counts=counts, every_rack=born,
                           racks=racks, nodes=[n for n in moved.values() if n["rack"] not in racks],
                           live_counts=[rack for rack in shown if rack not in racks])

    def node(self, req: Request) -> Response:
        name = urllib.parse.quote(req.params["node"], safe="")
        node = self.api("GET", f"/v1/nodes/{name}")
        events = self.api("GET", f"/v1/nodes/{name}/events")["events"][-30:]
        guests = self.api("GET", "/v1/guests", {"host": node["name"]})["guests"]
        nights = self.api("GET", "/v1/nights/machines", {"nodes": node["name"]})["machines"].get(node["name"])
        return self.render("node.html.j2", node=node, events=list(reversed(events)), guests=guests, nights=nights,
                           inspection=json.dumps(node.get("inspection"), indent=2, sort_keys=True)
                           if node.get("inspection") else "")

    def node_summary(self, req: Request) -> Response:
        node = self.api("GET", f"/v1/nodes/{urllib.parse.quote(req.params['node'], safe='')}")
        return self.render("node_summary.html.j2", node=node)

    def console(self, req: Request) -> Response:
        name = req.params["node"]
        try:
            doc = self.api("GET", f"/v1/nodes/{urllib.parse.quote(name, safe='')}/console", {"bytes": "16384"})
            text = doc["text"]
        except NotFound as exc:
            text = str(exc)
        return self.render("console.html.j2", name=name, text=text)

    def jobs(self, req: Request) -> Response:
        return self.render("jobs.html.j2", jobs=self.api("GET", "/v1/jobs", {"limit": "50"})["jobs"])

    def job(self, req: Request) -> Response:
        job = self.api("GET", f"/v1/jobs/{urllib.parse.quote(req.params['job'], safe='')}")
        fragment = "job_members.html.j2" if req.headers.get("hx-request") else "job.html.j2"
        return self.render(fragment, job=job)

    def images(self, req: Request) -> Response:
        return self.render("images.html.j2", images=self.api("GET", "/v1/images")["images"])

    def roles(self, req: Request) -> Response:
        guests = self.api("GET", "/v1/guests")["guests"]
        roles: dict[str, list[dict[str, Any]]] = {}
        for guest in guests:
            roles.setdefault(guest["role"], []).append(guest)
        endpoints: dict[str, list[dict[str, Any]]] = {}
        for endpoint in self.api("GET", "/v1/endpoints")["endpoints"]:
            endpoints.setdefault(endpoint["role"], []).append(endpoint)
            roles.setdefault(endpoint["role"], [])
        return self.render("roles.html.j2", roles=roles, endpoints=endpoints)

    # -- actions (each confirmed in the page first) -------------------------------------------
    def power(self, req: Request) -> str:
        action = req.params["action"]
        if action not in ("on", "off", "cycle"):
            raise InvalidInput("power action must be on, off or cycle")
        results = self.api("POST", "/v1/power", body={"action": action, "target": req.params["node"]})["results"]
        return "; ".join(f"{r['node']}: power {r['power_state']}" if r["ok"] else f"{r['node']}: {r['error']}"
                         for r in results) or f"power {action}: nothing to do"

    def inspect(self, req: Request) -> str:
        node = self.api("POST", f"/v1/nodes/{urllib.parse.quote(req.params['node'], safe='')}/inspect")
        return f"{node['name']}: inspection started ({node['state']})"

    def rollback(self, req: Request) -> str:
        job = self.api("POST", "/v1/rollback", body={"target": req.params["node"]})
        return f"rollback job {job['id']} started"

    def abort(self, req: Request) -> str:
        raw = req.params["job"]
        if not raw.isdigit():
            raise NotFound(f"no job {raw!r}")
        job = self.api("POST", "/v1/jobs/abort", body={"job": int(raw)})
        return f"job {job['id']}: abort requested; nodes under way finish, no new one starts"

    def routes(self) -> list[Route]:
        none = AuthKind.NONE  # the dashboard checks its own session (a redirect, not a 401)
        pages: list[tuple[str, str, Page, str]] = [
            ("GET", "/ui", lambda req: _redirect("/ui/racks"), "The dashboard"),
            ("GET", "/ui/racks", self.page(self.racks), "Dashboard: racks as grids of nodes, live (?page=N)"),
            ("GET", "/ui/changes", self.page(self.changes), "Dashboard: what moved since an event, in a range of racks (fragment)"),
            ("GET", "/ui/nodes/{node}", self.page(self.node), "Dashboard: one node"),
            ("GET", "/ui/nodes/{node}/summary", self.page(self.node_summary), "Dashboard: a node's state (fragment)"),
            ("GET", "/ui/nodes/{node}/console", self.page(self.console), "Dashboard: a node's console tail"),
            ("GET", "/ui/jobs", self.page(self.jobs), "Dashboard: jobs"),
            ("GET", "/ui/jobs/{job}", self.page(self.job), "Dashboard: one job, live"),
            ("GET", "/ui/images", self.page(self.images), "Dashboard: the image catalog"),
            ("GET", "/ui/roles", self.page(self.roles), "Dashboard: roles, their guests and endpoints"),
            ("POST", "/ui/nodes/{node}/power/{action}", self.action(self.power), "Dashboard: power a node"),
            ("POST", "/ui/nodes/{node}/inspect", self.action(self.inspect), "Dashboard: inspect a node again"),
            ("POST", "/ui/nodes/{node}/rollback", self.action(self.rollback), "Dashboard: roll a node back"),
            ("POST", "/ui/jobs/{job}/abort", self.action(self.abort), "Dashboard: abort a job"),
            ("GET", "/ui/login", self.login_form, "Dashboard: sign in"),
            ("POST", "/ui/login", self.login, "Dashboard: sign in with the operator token"),
            ("POST", "/ui/logout", self.logout, "Dashboard: sign out"),
            ("GET", "/ui/static/{asset}", self.asset, "Dashboard: its scripts and styles"),
        ]
        return [Route(method, path, handler, none, summary) for method, path, handler, summary in pages]


def templates() -> jinja2.Environment:
    """The pages' templates. Autoescaped: inspection data, console text and messages come
    from machines. A field an API document lacks renders empty (ChainableUndefined): a
    live view must not fail on an optional field, such as a write's total before it is known."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = _ago
    env.filters["size"] = _size
    env.filters["q"] = lambda v: urllib.parse.quote(str(v), safe="")
    env.globals.update(step_label=_step_label, poll=POLL_SECONDS)
    return env


def _step_label(step: str | None) -> str:
    if not step:
        return ""
    try:
        return STEP_LABELS[Step(step)]
    except ValueError:
        return str(step)


def _redirect(location: str) -> Response:
    return Response(status=303, headers={"Location": location})


def _local(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/racks"


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, int(time.time() - float(ts)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


__all__ = ["COOKIE", "WebRoutes"]
