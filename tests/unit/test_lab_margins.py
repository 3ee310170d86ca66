"""The lab's margins: steps read from a node's events, measured against their settings."""

from __future__ import annotations

from provisioner import config
from provisioner.lab.margins import margins, step_spans


def ev(ts, event, frm, to, step=None):
    return {"ts": ts, "event": event, "from_state": frm, "to_state": to, "step": step}


EVENTS = [ev(0, "enroll", None, "enrolled"), ev(1, "inspect", "enrolled", "inspecting", "set-boot-device"),
          ev(2, "step", "inspecting", "inspecting", "power-on"), ev(3, "step", "inspecting", "inspecting", "wait-agent"),
          ev(33, "note", "inspecting", "inspecting"), ev(40, "step", "inspecting", "inspecting", "wait-inspection"),
          ev(41, "inspected", "inspecting", "ready")]


def test_a_step_lasts_until_the_next_step_or_change_of_state_not_until_a_note():
    assert step_spans(EVENTS) == [("set-boot-device", 1, 2), ("power-on", 2, 3), ("wait-agent", 3, 40),
                                  ("wait-inspection", 40, 41)]


class FakeClient:
    def get(self, path):
        if path == "/v1/nodes":
            return {"nodes": [{"name": "n1"}]}
        if path == "/v1/guests":
            return {"guests": [{"name": "web-1", "ready_seconds": 300.0}, {"name": "web-2", "ready_seconds": None}]}
        return {"events": EVENTS}


def test_margins_are_shares_of_the_settings_largest_first_and_within_the_window():
    settings = config.load(overrides={"timeouts.agent_boot": 100, "guests.ready_timeout": 600}, environ={})
    found = margins(FakeClient(), settings)
    assert [(m.what, round(m.share, 2)) for m in found[:2]] == [("guest web-1 ready", 0.5), ("n1 wait-agent", 0.37)]
    assert str(found[1]) == " 37%  n1 wait-agent: 37s of 100s"
    assert [m.what for m in margins(FakeClient(), settings, since=42)] == ["guest web-1 ready"]
