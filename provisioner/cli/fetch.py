"""Fetch an image from a URL into a local cache, resuming an interrupted download with a
Range request, so `image import URL` run again picks up where it stopped."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import InvalidInput, ProvisionerError

CHUNK = 1 << 20


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "provisioner" / "downloads"


def fetch(url: str, progress: Callable[[int, int | None], None]) -> Path:
    """The downloaded file (complete); a partial download is kept and resumed next time."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{url!r}: only http:// and https:// URLs can be imported")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    name = Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1].split("?", 1)[0])).name or "image"
    done_path = folder / f"{key}-{name}"
    part = done_path.with_name(done_path.name + ".part")
    if done_path.exists():
        return done_path
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
            if have and resp.status != 206:
                have = 0  # the server cannot resume: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length else None
            with part.open("ab" if have else "wb") as out:
                got = have
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    progress(got, total)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            os.replace(part, done_path)
            return done_path
        raise ProvisionerError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise ProvisionerError(f"{url}: download interrupted ({exc}); run the same import again to "
                               "resume it") from exc
    if total is not None and got != total:
        raise ProvisionerError(f"{url}: got {got} of {total} bytes; run the same import again to resume it")
    os.replace(part, done_path)
    return done_path
