"""Resumable image download: stream over HTTP into a .part file, hashing as it goes;
after a broken connection ask for the rest with a Range request; verify the sha256
before the file may be used, and throw it away if it does not match. What has arrived is
synced to disk every SYNC_EVERY bytes, so after a power cut the next boot resumes from
there instead of from zero."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

LOG = logging.getLogger("agent")
CHUNK = 1 << 20
SYNC_EVERY = 64 << 20


class ChecksumMismatch(Exception):
    pass


class DownloadFailed(Exception):
    pass


class _Hasher:
    """sha256 on its own thread, fed the chunks as they are written: hashlib lets go of
    the GIL on large updates, so hashing overlaps the network and the disk instead of
    adding to them."""

    def __init__(self, digest: "hashlib._Hash") -> None:
        self.digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()


def _hash_existing(path: Path, digest: "hashlib._Hash") -> int:
    done = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
            done += len(chunk)
    return done


@dataclass(frozen=True)
class Transfer:
    """How an image arrived: bytes received over multicast and over HTTP by this call
    (what an earlier boot left in the .part file is in neither)."""

    multicast: int = 0
    http: int = 0

    @property
    def total(self) -> int:
        return self.multicast + self.http


# How far an image has come, and by which path ("http" or "multicast").
Progress = Callable[[int, int, str], None]


class PartWriter:
    """Appends what arrives, by whichever path, to the .part file: hashed on the way,
    synced every SYNC_EVERY bytes (a power cut leaves a prefix to resume from), progress
    told every 2 s. Never past the image's size."""

    def __init__(self, out: BinaryIO, hasher: "_Hasher", done: int, size: int, progress: Progress,
                 path: str) -> None:
        self.out, self.hasher, self.done, self.size = out, hasher, done, size
        self.progress, self.path = progress, path
        self._unsynced = 0
        self._told = time.monotonic()

    @property
    def room(self) -> int:
        return self.size - self.done

    def write(self, chunk: bytes) -> None:
        chunk = chunk[:self.room]
        self.out.write(chunk)
        self.hasher.update(chunk)
        self.done += len(chunk)
        self._unsynced += len(chunk)
        if self._unsynced >= SYNC_EVERY:
            self.sync()
        if time.monotonic() - self._told >= 2.0:
            self.progress(self.done, self.size, self.path)
            self._told = time.monotonic()

    def sync(self) -> None:
        self.out.flush()
        os.fsync(self.out.fileno())
        self._unsynced = 0


# Receive what a multicast session delivers through the writer (on an empty .part
# file); the bytes written.
MulticastReceive = Callable[[PartWriter], int]


def fetch(url: str, dest: Path, *, sha256: str, size: int, token: str | None,
          progress: Progress = lambda done, total, path: None,
          multicast: MulticastReceive | None = None,
          attempts: int = 20, timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> Transfer:
    """Download url to dest (verified). A multicast session, when offered, goes first on
    a fresh download; HTTP fetches the rest. A file that fails its checksum after a
    resumed or mixed transfer is fetched once more whole over HTTP before giving up."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    done = _hash_existing(part, digest) if part.exists() else 0
    if done > size:
        part.unlink()
        digest, done = hashlib.sha256(), 0
    resumed_at = done
    if done:
        LOG.info("agent: resuming %s at byte %d of %d", dest.name, done, size)
    hasher = _Hasher(digest)
    received = 0
    try:
        if multicast is not None and done == 0:
            with part.open("ab") as out:
                received = done = multicast(PartWriter(out, hasher, 0, size, progress, "multicast"))
            if done < size:
                LOG.info("agent: %s: multicast delivered %d of %d bytes; HTTP from byte %d",
                         dest.name, done, size, done)
        transferred = _receive(url, part, done, size, token, hasher, progress, attempts, timeout, sleep)
    finally:
        hasher.close()
    actual = hasher.hexdigest()
    if actual != sha256:
        part.unlink()
        if resumed_at or received:
            LOG.warning("agent: %s failed its checksum after a %s transfer: fetching it whole over HTTP",
                        dest.name, "resumed" if resumed_at else "multicast")
            again = fetch(url, dest, sha256=sha256, size=size, token=token, progress=progress,
                          attempts=attempts, timeout=timeout, sleep=sleep)
            return Transfer(multicast=received, http=transferred + again.http)
        raise ChecksumMismatch(f"checksum mismatch: the image's sha256 is {actual}, expected {sha256}; "
                               "the download was discarded")
    os.replace(part, dest)
    return Transfer(multicast=received, http=transferred)


def _receive(url: str, part: Path, done: int, size: int, token: str | None, hasher: _Hasher,
             progress: Progress, attempts: int, timeout: float, sleep: Callable[[float], None]) -> int:
    """Append the rest of the file to part, from byte `done`; the bytes received."""
    failures = 0
    start = done
    with part.open("ab") as out:
        writer = PartWriter(out, hasher, done, size, progress, "http")
        while writer.done < size:
            done = writer.done
            headers = {"Range": f"bytes={done}-"} if done else {}
            if token:
                headers["X-Agent-Token"] = token
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                            timeout=timeout) as resp:
                    if done and resp.status != 206:
                        raise DownloadFailed(f"server ignored the Range request (HTTP {resp.status})")
                    while writer.room and (chunk := resp.read(CHUNK)):
                        writer.write(chunk)
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500:
                    raise DownloadFailed(f"{url}: HTTP {exc.code}") from exc
                failures += 1
            except (OSError, urllib.error.URLError) as exc:
                failures += 1
                LOG.warning("agent: download of %s broke at byte %d (%s)", part.name, writer.done, exc)
            if writer.done < size:
                if failures >= attempts:
                    raise DownloadFailed(f"{url}: gave up after {failures} broken connections at byte "
                                         f"{writer.done}")
                out.flush()
                sleep(min(2.0 * failures, 15.0))
        writer.sync()
    progress(writer.done, size, "http")
    return writer.done - start


def verify(path: Path, sha256: str) -> bool:
    digest = hashlib.sha256()
    _hash_existing(path, digest)
    return digest.hexdigest() == sha256
