"""Who may see the portal: each login link works once, a session lasts twelve hours to the
second, a form needs the session's own CSRF token, and the link the CLI prints is the current
one. Driven directly, one fresh state directory per test (the HTTP side is in
test_portal_http.py)."""

import stat

import pytest

from quickstart.localcloud.portal import login
from quickstart.localcloud.portal.login import Sessions, csrf_ok, login_url

HOURS_12 = 12 * 3600


def current_token(state_dir):
    return (state_dir / "portal-login-token").read_text()


@pytest.fixture
def clock(monkeypatch):
    """A settable time.time() for the session lifetimes."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(login.time, "time", lambda: now[0])
    return now


def test_the_token_file_is_the_owners_alone(tmp_path):
    Sessions(tmp_path)
    assert len(current_token(tmp_path)) >= 40
    assert stat.S_IMODE((tmp_path / "portal-login-token").stat().st_mode) == 0o600


def test_a_token_file_left_readable_by_others_is_made_the_owners_alone(tmp_path):
    (tmp_path / login.TOKEN_FILE).write_text("old")
    (tmp_path / login.TOKEN_FILE).chmod(0o644)
    Sessions(tmp_path)
    assert stat.S_IMODE((tmp_path / login.TOKEN_FILE).stat().st_mode) == 0o600


def test_a_restart_replaces_an_older_longer_token_whole(tmp_path):
    (tmp_path / "portal-login-token").write_text("a-stale-token-from-an-earlier-run-" * 4)
    sessions = Sessions(tmp_path)
    token = current_token(tmp_path)
    assert "stale" not in token
    assert sessions.exchange(token) is not None


def test_a_login_link_works_once_and_the_next_one_is_written_for_the_cli(tmp_path):
    sessions = Sessions(tmp_path)
    first = current_token(tmp_path)

    session_id = sessions.exchange(first)

    assert session_id and sessions.find(session_id) is not None
    assert sessions.exchange(first) is None  # used up
    second = current_token(tmp_path)
    assert second != first
    other = sessions.exchange(second)
    assert other and other != session_id
    assert sessions.find(session_id).csrf != sessions.find(other).csrf


@pytest.mark.parametrize("wrong", ["", "nope", None])
def test_a_wrong_or_empty_token_opens_nothing_and_keeps_the_link_valid(tmp_path, wrong):
    sessions = Sessions(tmp_path)
    token = current_token(tmp_path)
    assert sessions.exchange(wrong or "") is None
    assert current_token(tmp_path) == token
    assert sessions.exchange(token) is not None


def test_a_session_lasts_twelve_hours_to_the_second_then_is_gone(tmp_path, clock):
    sessions = Sessions(tmp_path)
    session_id = sessions.exchange(current_token(tmp_path))
    started = clock[0]

    clock[0] = started + HOURS_12
    assert sessions.find(session_id) is not None  # its last second
    clock[0] = started + HOURS_12 + 1
    assert sessions.find(session_id) is None
    clock[0] = started  # even a clock set back does not revive it
    assert sessions.find(session_id) is None


@pytest.mark.parametrize("session_id", [None, "", "made-up"])
def test_no_or_an_unknown_session_cookie_finds_nothing(tmp_path, session_id):
    sessions = Sessions(tmp_path)
    sessions.exchange(current_token(tmp_path))
    assert sessions.find(session_id) is None


def test_logging_out_ends_only_that_session(tmp_path):
    sessions = Sessions(tmp_path)
    mine = sessions.exchange(current_token(tmp_path))
    theirs = sessions.exchange(current_token(tmp_path))
    sessions.end(None)  # a logout without a cookie ends nothing
    sessions.end(mine)
    assert sessions.find(mine) is None
    assert sessions.find(theirs) is not None


def test_a_form_needs_its_sessions_own_csrf_token(tmp_path):
    sessions = Sessions(tmp_path)
    mine = sessions.find(sessions.exchange(current_token(tmp_path)))
    theirs = sessions.find(sessions.exchange(current_token(tmp_path)))
    assert csrf_ok(mine, mine.csrf) is True
    for sent in (None, "", theirs.csrf, mine.csrf[:-1]):
        assert csrf_ok(mine, sent) is False


def test_the_login_link_is_the_current_token_under_the_base_url(tmp_path):
    assert login_url(tmp_path, "https://127.0.0.1:8443") is None  # no portal here
    Sessions(tmp_path)
    token = current_token(tmp_path)
    expected = f"https://127.0.0.1:8443/portal/login?token={token}"
    assert login_url(tmp_path, "https://127.0.0.1:8443/") == expected
    assert login_url(str(tmp_path), "https://127.0.0.1:8443") == expected
    (tmp_path / "portal-login-token").write_text(f"  {token}\n")
    assert login_url(tmp_path, "https://127.0.0.1:8443") == expected
    (tmp_path / "portal-login-token").write_text("\n")
    assert login_url(tmp_path, "https://127.0.0.1:8443") is None
