"""Guests per role, the provisioner's side. `deploy` turns a roles file into a plan over
the hosts (what runs where now, from the guests table; each host's CPUs and memory),
checks everything it can before anything is created (the file, its images, its
templates for every guest, the placement, a connection to every host it touches or
that runs guests), then
hands the plan to a deploy job (guestjobs.py). The single-guest commands (reset,
delete, console) and a host's housekeeping (gc) work on one host directly."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from ..config import Settings
from ..errors import Conflict, InvalidInput, NotFound, ProvisionerError
from ..guests.placement import Guest, Plan, place
from ..guests.render import config_files
from ..guests.roles import Role, parse_roles
from ..hypervisor.domains import GuestHost
from ..images import Catalog
from ..network.addresses import mac_for, network_config
from ..network.endpoints import Slot, plan_slots
from ..statuses import GUEST_BUSY, GuestState, JobKind, PlanAction
from ..store import Store
from .endpoints import EndpointService
from .guesthosts import HostLinks, HostRecord, find_host, host_records, register_host
from .guestjobs import ADD_BATCH, FIRST_ROLL_BATCH, REMOVE_BATCH, GuestJobs, guest_of

LOG = logging.getLogger(__name__)


def _image_doc(image: Any) -> dict[str, Any]:
    return {"ref": image.ref, "sha256": image.sha256, "format": image.format, "size": image.size,
            "virtual_size": image.virtual_size}


def _spec_sha(base: dict[str, Any], app: dict[str, Any] | None, files: dict[str, str], guest: Guest) -> str:
    doc = {"base": base["sha256"], "app": app["sha256"] if app else None, "files": files,
           "cores": len(guest.cores), "memory_mib": guest.memory_mib}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class GuestService:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog, endpoints: EndpointService) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.endpoints = endpoints
        self.network = settings.guest_network
        self.links = HostLinks(settings)
        self.jobs = GuestJobs(store, self.links, catalog, settings.guests_ready_timeout,
                              settings.guests_max_parallel_hosts, endpoints)

    # -- hosts ------------------------------------------------------------------
    def host_list(self) -> list[dict[str, Any]]:
        out = []
        for record in host_records(self.store).values():
            doc = record.doc()
            doc["guests"] = [g["name"] for g in self.store.guests(host=record.name)]
            out.append(doc)
        return out

    def add_host(self, body: dict[str, Any]) -> dict[str, Any]:
        return register_host(self.store, self.links, body)

    def remove_host(self, name: str) -> dict[str, Any]:
        self.store.remove_host(name)
        return {"removed": name}

    def gc(self, name: str) -> dict[str, Any]:
        """Remove from a host's pool every base no guest there uses; never one in use,
        nor one a running deploy job is about to use."""
        host = find_host(self.store, name)
        pending = {e["spec"][k]["sha256"] for j in self.store.running_job_ids()
                   for e in self.store.job_guests(j) for k in ("base", "app") if e["spec"].get(k)}
        with self.links.guest_host(host) as gh:
            removed = gh.gc(pending)
        for volume in removed:
            self.store.set_host_image(name, volume[5:].split(".")[0], False)
        LOG.info("host %s: gc removed %s", name, ", ".join(removed) or "nothing")
        return {"host": name, "removed": removed}

    # -- the plan -----------------------------------------------------------------
    def roles_of(self, body: dict[str, Any]) -> list[Role]:
        text = body.get("roles")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("send the roles file's text as 'roles'")
        templates = body.get("templates") or {}
        if not isinstance(templates, dict):
            raise InvalidInput("'templates' must map template names to their text")

        def read(name: str) -> str:
            if name not in templates:
                raise InvalidInput(f"the user_data template {name!r} was not sent")
            return str(templates[name])

        return parse_roles(text, source=str(body.get("source") or "roles file"), read=read)

    def _images(self, roles: list[Role]) -> dict[str, dict[str, Any]]:
        images: dict[str, dict[str, Any]] = {}
        for role in roles:
            for ref in filter(None, (role.base, role.app)):
                try:
                    images[ref] = _image_doc(self.catalog.resolve(ref))
                except NotFound as exc:
                    raise InvalidInput(f"role {role.name}: unknown image {ref!r} (see 'provisioner image list')") \
                        from exc
        return images

    def survey(self, names: set[str]) -> dict[str, set[str]]:
        """The guests running on each of these hosts, as their libvirtd says; a host that
        cannot be reached, or answers with another key, stops the deploy before anything
        is changed. (Hosts gone from the records are skipped: their guests are placed again.)"""
        records = host_records(self.store)

        def look(name: str) -> tuple[str, set[str] | ProvisionerError]:
            try:
                with self.links.connect(records[name]) as host:
                    return name, host.running_guests()
            except ProvisionerError as exc:
                return name, exc

        found: dict[str, set[str]] = {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            for name, result in pool.map(look, sorted(n for n in names if n in records and records[n].available)):
                if isinstance(result, ProvisionerError):
                    raise type(result)(f"{result}; nothing was changed")
                found[name] = result
        return found

    def plan(self, body: dict[str, Any], observed: dict[str, set[str]] | None = None,
             away: dict[str, str] | None = None) -> dict[str, Any]:
        """observed: the guests running on each host (survey()); a guest the table has as
        ready that its host does not run (its host was reimaged, someone removed it) is
        repaired. away: hosts whose guests must go elsewhere (host -> why): hosts out for
        repair always are; a guest-aware reimage adds the hosts it is about to reimage."""
        roles = self.roles_of(body)
        by_role = {r.name: r for r in roles}
        images = self._images(roles)
        records = host_records(self.store)
        away = {**{n: f"its host {n} is out for repair" for n, r in records.items() if r.fenced},
                **(away or {})}
        rows = {g["name"]: g for g in self.store.guests()}
        busy = [n for n, r in rows.items() if r["state"] in GUEST_BUSY]
        if busy:
            raise Conflict(f"guests {', '.join(sorted(busy))} are being changed by job "
                           f"{rows[busy[0]]['job_id']}: wait for it")
        held = sorted({r["host"] for r in rows.values() if r["host"] in records and r["host"] not in away
                       and not records[r["host"]].available})
        if held:
            why = "; ".join(f"{h}: {records[h].why}" for h in held)
            raise Conflict(f"hosts that run guests cannot take changes now ({why}): wait for them, "
                           "or deploy again when they are back")
        hosts = [r for r in records.values() if r.available and r.name not in away]
        existing, moved = [], set()
        for r in rows.values():
            role = by_role.get(r["role"])
            if role is not None and r["index"] <= role.count and r["host"] in records and \
                    (role.vcpus != len(r["cores"]) or role.memory_mib != r["memory_mib"]):
                moved.add(r["name"])  # resized: placed again, possibly elsewhere
                continue
            existing.append(guest_of(r))
        plan: Plan = place(roles, [h.placement() for h in hosts], existing,
                           reserved_cores=self.settings.guests_reserved_cores,
                           reserved_memory_mib=self.settings.guests_reserved_memory_mib)
        slots = plan_slots(roles, [Slot.from_row(r) for r in self.store.endpoints()], self.network,
                           self._own_ports())
        taken = [r["address"] for r in rows.values() if r.get("address")]
        entries: list[dict[str, Any]] = []
        removed = {g.name for g in plan.remove}
        for g in plan.remove:
            entries.append({"guest": g.name, "action": PlanAction.REMOVE, "batch": REMOVE_BATCH, "host": g.host,
                            "spec": {"guest": asdict(g), "was": rows[g.name]["state"]}})
        for placed in plan.keep + plan.add:
            role = by_role[placed.role]
            g = Guest(placed.name, placed.role, placed.index, placed.host, placed.cores, placed.memory_mib,
                      (placed.index - 1) % role.upgrade_domains)
            base = images[role.base]
            app = images[role.app] if role.app else None
            row = rows.get(g.name)
            network = self._address(g, row, taken, records)
            files = config_files(role, g, g.host, network.pop("config") if network else None,
                                 network["address"] if network else None, base["ref"])
            spec = {"guest": asdict(g), "base": base, "app": app, "files": files, "network": network,
                    "spec_sha256": _spec_sha(base, app, files, g), "was": None, "old_host": None}
            if row is None or g.name in removed:
                action, batch = PlanAction.ADD, ADD_BATCH
                if g.name in removed:  # its host is gone, or must be left: made again elsewhere
                    entries[:] = [e for e in entries if e["guest"] != g.name]
                    old = rows[g.name]["host"]
                    spec.update(old_host=old, was=rows[g.name]["state"],
                                because=away.get(old, f"its host {old} is gone"))
                    action = PlanAction.MOVE
            elif g.name in moved:
                action, batch = PlanAction.ROLL, FIRST_ROLL_BATCH + g.upgrade_domain
                spec.update(old_host=row["host"], was=row["state"], because="it was resized")
            elif row["state"] != GuestState.READY or (observed is not None and row["host"] in observed
                                             and g.name not in observed[row["host"]]):
                action, batch = PlanAction.REPAIR, ADD_BATCH
                spec["was"] = row["state"]
            elif row["spec_sha256"] != spec["spec_sha256"]:
                action, batch = PlanAction.ROLL, FIRST_ROLL_BATCH + g.upgrade_domain
                spec["was"] = row["state"]
            else:
                action, batch = PlanAction.KEEP, -1
            entries.append({"guest": g.name, "action": action, "batch": batch, "host": g.host, "spec": spec})
        return {"hosts": [h.doc() for h in hosts], "entries": entries, "endpoints": [s.doc() for s in slots]}

    def _own_ports(self) -> dict[int, str]:
        """TCP ports the provisioner listens on, on every address (a VIP cannot take them)."""
        s = self.settings
        ports = {s.server_http_port: "HTTP API and boot server (server.http_port)"} \
            if s.server_listen in ("0.0.0.0", "") else {}
        if s.dns_domain:
            ports[s.dns_port] = "DNS (dns.port)"
        return ports

    def _address(self, guest: Guest, row: dict[str, Any] | None, taken: list[str],
                 records: dict[str, HostRecord]) -> dict[str, Any] | None:
        """The guest's place on the guest network: kept for life once given (a roll, a move,
        a repair keep it), or the lowest free address of network.guest_range."""
        if self.network is None:
            return None
        record = records.get(guest.host)
        if record is not None and not record.bridge:
            raise InvalidInput(f"host {guest.host} has no bridge for the guest network, so {guest.name} could not "
                               "be reached: a node's host image makes br0 (reimage it); a registered host says "
                               "which bridge with 'host add --bridge'; nothing was changed")
        address = row.get("address") if row else None
        if not address:
            address = self.network.allocate(taken, f"guest {guest.name}")
            taken.append(address)
        mac = (row.get("mac") if row else None) or mac_for(address)
        config = network_config(address, mac, self.network.prefix,
                                str(self.network.gateway) if self.network.gateway else None)
        return {"address": address, "mac": mac, "config": config}

    def plan_doc(self, plan: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        guests = []
        for e in sorted(plan["entries"], key=lambda e: (e["batch"] if e["batch"] >= 0 else 99, e["guest"])):
            g, spec = e["spec"]["guest"], e["spec"]
            guests.append({"name": g["name"], "role": g["role"], "action": e["action"], "batch": e["batch"],
                           "host": g["host"], "old_host": spec.get("old_host"), "cores": g["cores"],
                           "memory_mib": g["memory_mib"], "upgrade_domain": g["upgrade_domain"],
                           "base": (spec.get("base") or {}).get("ref"), "app": (spec.get("app") or {}).get("ref"),
                           "address": (spec.get("network") or {}).get("address")})
        counts: dict[str, int] = {}
        for g in guests:
            counts[g["action"]] = counts.get(g["action"], 0) + 1
        endpoints_changed = plan["endpoints"] != self.store.endpoints()
        return {"hosts": plan["hosts"], "guests": guests, "counts": counts, "dry_run": dry_run,
                "endpoints": plan["endpoints"], "endpoints_changed": endpoints_changed,
                "changes": endpoints_changed or any(g["action"] != PlanAction.KEEP for g in guests)}

    def deploy(self, body: dict[str, Any]) -> dict[str, Any]:
        observed = self.survey({g["host"] for g in self.store.guests()})
        plan = self.plan(body, observed)
        doc = self.plan_doc(plan, bool(body.get("dry_run")))
        if body.get("dry_run"):
            return doc
        work = [e for e in plan["entries"] if e["action"] != PlanAction.KEEP]
        source = str(body.get("source") or "roles file")
        kept: dict[str, Any] = {k: body[k] for k in ("roles", "templates", "source") if k in body}
        if not work:
            self.store.replace_endpoints(plan["endpoints"])
            self.store.save_deployment(source, kept)
            self.endpoints.changed()
            doc["job"] = None
            return doc
        touched = {e["host"] for e in work} | {e["spec"].get("old_host") for e in work if e["spec"].get("old_host")}
        # Every host the plan touches must answer with its recorded key before anything
        # is created; the survey has already reached those that run guests.
        self.survey(touched - set(observed))
        job_id = self.store.create_deploy_job(source, {"kind": JobKind.DEPLOY}, work)
        self.store.save_deployment(source, kept)  # what healing and reimages place guests by
        self.store.replace_endpoints(plan["endpoints"])
        self.endpoints.changed()  # new guests join their endpoints' configs, not yet admitted
        LOG.info("deploy job %d: %s", job_id, ", ".join(f"{e['action']} {e['guest']}" for e in work))
        self.jobs.start(job_id)
        doc["job"] = job_id
        return doc

    def heal(self, host: str) -> int | None:
        """Place the guests of a host out for repair again on healthy hosts, by the roles file
        last deployed, keeping each one's name, address and endpoint; the heal job's id (None
        when none of its guests is left to move). InvalidInput names what is short when no
        host has room; nothing is changed then."""
        body = self.store.last_deployment()
        if body is None:
            raise Conflict(f"no roles file is on record to place {host}'s guests by: run 'provisioner deploy "
                           "ROLES' (it places them on other hosts)")
        plan = self.plan(body)
        work = [e for e in plan["entries"] if e["action"] == PlanAction.MOVE and e["spec"]["old_host"] == host]
        if not work:
            return None
        for e in work:
            e["batch"] = ADD_BATCH  # they are down already: all at once, in one batch
        self.survey({e["host"] for e in work})
        job_id = self.store.create_deploy_job(f"heal {host}", {"kind": JobKind.HEAL, "host": host}, work,
                                              kind=JobKind.HEAL)
        LOG.warning("heal job %d: %s", job_id, ", ".join(f"{e['guest']} {host} -> {e['host']}" for e in work))
        self.jobs.start(job_id)
        return job_id

    # -- one guest ----------------------------------------------------------------
    def _guest_host(self, name: str) -> tuple[dict[str, Any], HostRecord]:
        row = self.store.guest(name)
        if row["state"] in GUEST_BUSY:
            raise Conflict(f"guest {name} is {row['state']} (job {row['job_id']}): wait for it")
        return row, find_host(self.store, row["host"])

    def show(self, name: str) -> dict[str, Any]:
        row = self.store.guest(name)
        doc = dict(row)
        doc["base"] = self._ref(row["base_sha256"])
        doc["app"] = self._ref(row["app_sha256"])
        doc["serving"] = bool(doc.get("serving"))
        doc["dns"] = f"{name}.{self.settings.dns_domain}" if self.settings.dns_domain and row.get("address") else None
        doc["endpoints"] = self.endpoints.membership(row)
        return doc

    def _ref(self, sha: str | None) -> str | None:
        if not sha:
            return None
        rows = self.store.images_by_sha(sha)
        return f"{rows[-1]['name']}:{rows[-1]['version']}" if rows else sha[:16]

    def reset(self, name: str) -> dict[str, Any]:
        """Discard the guest's overlay and start it again on its pristine base (same name,
        cores and config drive); its readiness is then awaited in the background
        (the guest's state goes from resetting to ready)."""
        row, host = self._guest_host(name)
        gh = self.links.guest_host(host)
        try:
            self.endpoints.drain(name)  # out of its endpoint before its disk goes
            gh.reset(name)
        except ProvisionerError as exc:
            gh.close()
            self.store.set_guest(name, state=GuestState.FAILED, last_error=f"reset: {exc}")
            raise
        self.store.set_guest(name, state=GuestState.RESETTING, last_error=None)
        threading.Thread(target=self._await_ready, args=(gh, name), name=f"reset-{name}", daemon=True).start()
        LOG.info("guest %s: overlay discarded, started again on its pristine base", name)
        return {"reset": name, "host": row["host"], "state": GuestState.RESETTING}

    def _await_ready(self, gh: GuestHost, name: str) -> None:
        """Owns `gh` from here on: closes it whatever happens."""
        try:
            seconds = gh.wait_ready(name, timeout=self.settings.guests_ready_timeout)
            self.endpoints.admit(name)
            self.store.set_guest(name, state=GuestState.READY, ready_seconds=round(seconds, 1), last_error=None)
            LOG.info("guest %s: ready after its reset (%.1fs)", name, seconds)
        except ProvisionerError as exc:
            self.store.set_guest(name, state=GuestState.FAILED, last_error=f"reset: {exc}")
        finally:
            gh.close()

    def delete(self, name: str) -> dict[str, Any]:
        row, host = self._guest_host(name)
        self.endpoints.drain(name)
        with self.links.guest_host(host) as gh:
            gh.delete(name)
        self.store.delete_guest(name)
        self.endpoints.changed()
        LOG.info("guest %s: deleted from %s", name, row["host"])
        return {"deleted": name, "host": row["host"],
                "note": "the roles file still counts it: the next deploy makes it again unless its count is lowered"}

    def console(self, name: str, max_bytes: int = 64 * 1024) -> bytes:
        row = self.store.guest(name)
        return self.links.console(find_host(self.store, row["host"]), name, max_bytes)

