from provisioner import states
from provisioner.states import Event, State


def test_inspect_path_reaches_ready():
    s = states.next_state(State.ENROLLED, Event.INSPECT)
    assert s == State.INSPECTING and states.is_in_progress(s)
    assert states.IN_PROGRESS[s] == State.READY
    assert states.next_state(s, Event.DONE) == State.READY


def test_failure_lands_in_a_failed_state_and_can_be_retried():
    failed = states.next_state(State.INSPECTING, Event.FAIL)
    assert failed in states.FAILED_STATES and failed in states.STABLE
    assert states.next_state(failed, Event.INSPECT) == State.INSPECTING


def test_the_table_forbids_what_it_does_not_list():
    assert states.next_state(State.ENROLLED, Event.DONE) is None
    assert states.next_state(State.READY, Event.FAIL) is None


def test_every_state_is_stable_or_in_progress_never_both():
    for state in State:
        assert (state in states.STABLE) != (state in states.IN_PROGRESS)
