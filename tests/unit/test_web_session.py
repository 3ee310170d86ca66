"""The dashboard's sign-in cookie: signed with a key derived from the operator token,
expiring, and refused when forged, altered, expired or made under another token."""

from __future__ import annotations

from provisioner.web.routes import _local
from provisioner.web.session import LIFETIME, Sessions, cookie_value


def test_a_session_cookie_holds_until_it_expires_and_cannot_be_forged():
    now = [1_000_000.0]
    sessions = Sessions("operator-token-1", clock=lambda: now[0])
    value = sessions.issue()
    assert sessions.valid(value) and "operator-token-1" not in value
    version, expires, mac = value.split(".")
    assert not sessions.valid(f"{version}.{int(expires) + 3600}.{mac}"), "a later expiry is a new signature"
    assert not sessions.valid(f"{version}.{expires}.{'0' * len(mac)}")
    assert not sessions.valid(None) and not sessions.valid("") and not sessions.valid("v1..") \
        and not sessions.valid("v1.1e9.x") and not sessions.valid("v2." + value[3:])
    assert not Sessions("operator-token-2", clock=lambda: now[0]).valid(value), "a new token ends every session"
    now[0] += LIFETIME + 1
    assert not sessions.valid(value), "expired"
    assert sessions.token_matches("operator-token-1") and not sessions.token_matches("") \
        and not sessions.token_matches("operator-token-")


def test_the_cookie_is_read_from_the_header_and_sign_in_only_returns_to_the_dashboard():
    assert cookie_value("a=1; provisioner_session=v1.2.abc; b=2") == "v1.2.abc"
    assert cookie_value("provisioner_sessionx=1") is None and cookie_value("") is None
    assert _local("/ui/nodes/x") == "/ui/nodes/x"
    for hostile in ("//evil.example/ui/", "https://evil.example/", "/v1/nodes", "/ui\\\\evil", "", None):
        assert _local(hostile) == "/ui/racks", hostile
