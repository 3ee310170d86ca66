"""`provisioner serve`: wiring of the API/HTTP server, TFTP, DHCP and the workers, and
a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import faulthandler
import logging
import resource
import signal
import socket
import threading
import time
from types import FrameType
from typing import Callable

from .api.http import HttpService, Router
from .api.routes import artifact_paths, build_router
from .api.server import Limits
from .boot.accesslog import AccessLog
from .boot.tftp import TftpService
from .config import Settings
from .errors import ConfigError
from .power import PowerDriver
from .services import Services
from .web.routes import WebRoutes

LOG = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings, driver: PowerDriver | None = None) -> None:
        self.settings = settings
        self.svc = Services.build(settings, driver)
        s = settings
        try:
            self.http = HttpService(self._router(), listen=s.server_listen, port=s.server_http_port,
                                    socket_path=s.server_socket,
                                    access_log=AccessLog(s.log_dir / "http-access.log"),
                                    limits=Limits(max_connections=s.http_max_connections, max_busy=s.http_max_busy,
                                                  request_timeout=s.http_request_timeout,
                                                  idle_timeout=s.http_idle_timeout, io_timeout=s.http_io_timeout),
                                    observe=self.svc.conductor.metrics.http)
        except OSError as exc:
            raise ConfigError(f"cannot serve HTTP on {s.server_listen}:{s.server_http_port}: {exc}") from exc
        self.tftp = TftpService(
            ipxe_dir=s.boot_ipxe_dir, empty_root=s.data_dir / "tftp-root",
            render_script=lambda: self.svc.renderer.render("boot.ipxe.j2", http_port=self.http.port),
            counters=self.svc.counters, access_log=AccessLog(s.log_dir / "tftp.log"), listen=s.server_listen,
            port=s.server_tftp_port, max_transfers=s.tftp_max_transfers, max_per_client=s.tftp_max_per_client)
        self.svc.conductor.pressure_sources.append(("the API turned requests away as busy",
                                                    lambda: self.http.loop.refused_at))
        self._stopped = threading.Event()

    def start(self) -> None:
        _raise_open_files_limit(self.settings.http_max_connections + 1024)
        for path in artifact_paths(self.settings.artifacts_dir):
            if not path.is_file():
                LOG.warning("boot artifact %s is missing: nodes cannot boot the maintenance image "
                            "until it is built ('make maintenance-image')", path)
        self.tftp.start()
        if not self.tftp.wait_listening():
            raise ConfigError(f"cannot serve TFTP on {self.settings.server_listen}:"
                              f"{self.settings.server_tftp_port} (port in use or not permitted)")
        self.svc.controller.start(self.settings.controller_address or _own_address(self.settings.server_listen,
                                                                                      self.http.port))
        if self.svc.dhcp is not None:
            self.svc.dhcp.start(self.svc.served_nodes())
        self.svc.multicast.start()
        self.svc.endpoints.start()
        self.svc.conductor.start()
        self.svc.controller.adopt_jobs(own=True)  # its own after a restart, and any whose controller is gone
        self.svc.watch.start()
        # The API goes last: once it answers, restarts have been resumed and every
        # server is up, so "healthy" means fully started.
        self.http.start()
        LOG.info("provisioner serving: http %s:%d, tftp %s:%d, socket %s, data %s",
                 self.settings.server_listen, self.http.port, self.settings.server_listen,
                 self.settings.server_tftp_port, self.settings.server_socket, self.settings.data_dir)

    def _router(self) -> Router:
        """The API's routes, and the dashboard's over them (it reads the API's documents)."""
        router = build_router(self.svc)
        for route in WebRoutes(self.svc, router).routes():
            router.add(route)
        return router

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        LOG.info("provisioner stopping")
        started = time.monotonic()
        parts: list[tuple[str, Callable[[], None]]] = [("host watch", self.svc.watch.stop),
                                                        ("conductor", self.svc.conductor.stop),
                                                        ("jobs", self.svc.jobs.stop),
                                                        ("controller", self.svc.controller.stop),
                                                        ("multicast", self.svc.multicast.stop),
                                                        ("endpoints", self.svc.endpoints.stop)]
        if self.svc.dhcp is not None:
            parts.append(("dhcp", self.svc.dhcp.stop))
        parts += [("tftp", self.tftp.stop), ("http", self.http.stop), ("store", self.svc.store.close)]
        took = []
        for name, stop in parts:
            t0 = time.monotonic()
            stop()
            took.append(f"{name} {time.monotonic() - t0:.1f}s")
        LOG.info("provisioner stopped in %.1fs (%s)", time.monotonic() - started, ", ".join(took))

    def run_forever(self) -> None:
        done = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # `kill -USR1` prints every thread's stack to stderr (the daemon's log): what a
        # stalled step is waiting on, without stopping anything.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        self.start()
        try:
            done.wait()
        finally:
            self.stop()


def _raise_open_files_limit(wanted: int) -> None:
    """Every open HTTP connection is a file descriptor; the soft limit is often 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _own_address(listen: str, port: int) -> str:
    """The URL other controllers reach this one at, when controller.address is not set."""
    host = socket.getfqdn() if listen in ("", "0.0.0.0", "::") else listen
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
