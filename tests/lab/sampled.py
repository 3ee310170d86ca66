"""Run a command (the lab tier) while vmstat samples the machine every 5 s, and say how idle
the machine was on average: the lab tier should keep both cores busy (its groups run side
by side). Exits with the command's own code.

    python -m tests.lab.sampled python -m pytest ... tests/lab"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LOG = Path(__file__).resolve().parents[2] / "build/lab-vmstat.log"


def idle_share(text: str) -> tuple[float, int]:
    """The mean of vmstat's `id` column over its samples (the first line is the average
    since boot: left out), and how many samples there were."""
    lines = [line.split() for line in text.splitlines()]
    header = next((cols for cols in lines if "id" in cols), None)
    if header is None:
        return 0.0, 0
    column = header.index("id")
    samples = [int(cols[column]) for cols in lines if len(cols) == len(header) and cols[column].isdigit()][1:]
    return (sum(samples) / len(samples) if samples else 0.0), len(samples)


def main(argv: list[str]) -> int:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("w") as log:
        vmstat = subprocess.Popen(["vmstat", "-n", "5"], stdout=log, stderr=subprocess.DEVNULL)
        try:
            code = subprocess.call(argv)
        finally:
            vmstat.terminate()
            vmstat.wait()
    idle, samples = idle_share(LOG.read_text())
    print(f"lab tier: the machine was {idle:.0f} % idle on average ({samples} vmstat samples, 5 s apart: {LOG})")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
