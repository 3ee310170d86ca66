"""A throwaway PostgreSQL (Debian's postgresql-15) in a directory of its own, listening
only on a unix socket there: the lab's database when it runs on PostgreSQL (`lab up
--database postgresql`), and the one tests and benchmarks start. PostgreSQL refuses to
run as root, so under root it runs as the `postgres` user the package made."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import LabError

BIN = Path("/usr/lib/postgresql/15/bin")


class PgServer:
    def __init__(self, where: Path | None = None, directory: Path | None = None) -> None:
        """A new temporary directory (under `where`), or `directory` as it is."""
        if directory is not None:
            self.dir = directory
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="pv-pg-", dir=where or "/tmp"))
        self.data = self.dir / "data"
        self.started = False

    def _as_owner(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> "PgServer":
        try:
            return self._start()
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise LabError(f"PostgreSQL did not start: {' '.join(exc.cmd[-3:])}: "
                           f"{(exc.stderr or '').strip()[-500:]}") from exc

    def _start(self) -> "PgServer":
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o755)
        subprocess.run(self._as_owner(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "provisioner",
                                      "-E", "UTF8", "--locale=C", "--no-sync"),
                       check=True, capture_output=True, text=True)
        options = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off " \
                  "-c full_page_writes=off -c max_connections=200"
        subprocess.run(self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                      str(self.dir / "server.log"), "-w", "-t", "60", "start"),
                       check=True, capture_output=True, text=True)
        self.started = True
        self.create("provisioner")
        return self

    def url(self, database: str = "provisioner") -> str:
        return f"postgresql://provisioner@/{database}?host={self.dir}"

    def create(self, database: str) -> str:
        subprocess.run([str(BIN / "createdb"), "-h", str(self.dir), "-U", "provisioner", database],
                       check=True, capture_output=True, text=True)
        return self.url(database)

    def drop(self, database: str) -> None:
        subprocess.run([str(BIN / "dropdb"), "-h", str(self.dir), "-U", "provisioner", "--force", database],
                       check=True, capture_output=True, text=True)

    def stop(self) -> None:
        if self.started or self.running:
            subprocess.run(self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                                          "stop"), capture_output=True)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
