"""Process helpers the lab stops its parts with."""

import subprocess
import time

from provisioner.lab import system


def test_an_exited_child_is_not_alive_though_nobody_reaped_it():
    proc = subprocess.Popen(["true"])
    end = time.monotonic() + 10
    while system.pid_alive(proc.pid):
        assert time.monotonic() < end, "an exited child still counted as alive (a zombie)"
        time.sleep(0.01)


def test_a_running_process_is_alive_and_stop_pids_ends_it():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert system.pid_alive(proc.pid)
        system.stop_pids([proc.pid], grace=5)
        assert not system.pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
