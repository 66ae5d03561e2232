"""The portal's answer cache (web/backend.py AnswerCache): one fetch for requests asking at the same
moment, answers kept per user for the given seconds only, a user's write forgets their answers,
errors are never kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sen_portal.web.backend import AnswerCache, BackendError

from tests.support import wait_for

ANA, BICH = ("ana", "doctor"), ("bich", "doctor")


def waiting_for_the_fetch(monkeypatch) -> list[int]:
    """One entry per request that found the same answer's fetch in flight and waits for it."""
    from sen_portal.web import backend

    waiting: list[int] = []
    wait = backend._Flight.wait

    def counted(self, seconds: float):
        waiting.append(1)
        return wait(self, seconds)

    monkeypatch.setattr(backend._Flight, "wait", counted)
    return waiting


def test_requests_at_the_same_moment_share_one_fetch(monkeypatch):
    cache, calls, gate = AnswerCache(), [], threading.Event()
    waiting = waiting_for_the_fetch(monkeypatch)

    def fetch():
        calls.append(1)
        gate.wait(60)
        return {"n": len(calls)}

    # the fetch goes on once the other nine wait for it; without sharing, each would have fetched
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(cache.get, (ANA, "worklist"), 60, fetch) for _ in range(10)]
        wait_for(lambda: len(waiting) == 9, timeout=30)
        gate.set()
        answers = [f.result() for f in futures]
    assert len(calls) == 1 and all(a == {"n": 1} for a in answers)
    # seconds=0 keeps nothing: the next request fetches again
    assert cache.get((ANA, "chart"), 0, lambda: {"n": 2}) == {"n": 2}
    assert cache.get((ANA, "chart"), 0, lambda: {"n": 3}) == {"n": 3}


class _Clock:
    """The cache's wall clock, moved by the test: a pause of the machine (a loaded CI runner) between
    two reads must not expire an answer the test expects kept."""

    def __init__(self) -> None:
        self.now = 1_796_500_000.0

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_answers_are_kept_per_user_for_the_seconds_given_and_forgotten_on_a_write(monkeypatch):
    from sen_portal.web import backend

    clock = _Clock()
    monkeypatch.setattr(backend, "time", clock)
    cache = AnswerCache()
    assert cache.get((ANA, "chart"), 0.3, lambda: "ana's") == "ana's"
    clock.now += 0.1
    assert cache.get((ANA, "chart"), 0.3, lambda: "fetched again") == "ana's"
    assert cache.get((BICH, "chart"), 0.3, lambda: "bich's") == "bich's"  # never another user's
    cache.forget(ANA)
    assert cache.get((ANA, "chart"), 0.3, lambda: "after the write") == "after the write"
    clock.now += 0.29
    assert cache.get((BICH, "chart"), 0.3, lambda: "x") == "bich's"  # kept its 0.3 s
    clock.now += 0.02
    assert cache.get((BICH, "chart"), 0.3, lambda: "expired") == "expired"  # and no longer


def test_an_answer_fetched_before_the_users_last_write_is_not_used():
    cache = AnswerCache()
    assert cache.get((ANA, "task"), 60, lambda: "before") == "before"
    wrote_at = time.time() + 0.01  # the write, served by another worker process (its cache not forgotten)
    time.sleep(0.02)
    assert cache.get((ANA, "task"), 60, lambda: "after", not_before=wrote_at) == "after"
    assert cache.get((ANA, "task"), 60, lambda: "again", not_before=wrote_at) == "after"


def test_errors_reach_every_waiter_and_are_not_kept(monkeypatch):
    cache, calls, gate = AnswerCache(), [], threading.Event()
    waiting = waiting_for_the_fetch(monkeypatch)

    def failing():
        calls.append(1)
        gate.wait(60)
        raise BackendError("down", "ehr")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.get, (ANA, "chart"), 5, failing) for _ in range(4)]
        wait_for(lambda: len(waiting) == 3, timeout=30)  # the fetch fails once the other three wait for it
        gate.set()
        for f in futures:
            with pytest.raises(BackendError):
                f.result()
    assert len(calls) == 1  # the one failure reached them all
    assert cache.get((ANA, "chart"), 5, lambda: "recovered") == "recovered"


def test_an_answer_fetched_before_another_users_news_is_not_used_and_news_is_asked_only_for_a_kept_one():
    """``news`` (web/sent.py: when a consult of the user's clinic or hub was last sent by anyone): an answer kept from
    before it is fetched again, one fetched after it is used; nothing kept, it is not asked (a database read)."""
    cache, asked = AnswerCache(), []

    def news(at: float):
        def newest() -> float:
            asked.append(at)
            return at
        return newest

    assert cache.get((ANA, "worklist"), 60, lambda: "before", news=news(0.0)) == "before"
    assert asked == []  # nothing kept yet: not asked
    assert cache.get((ANA, "worklist"), 60, lambda: "x", news=news(0.0)) == "before"  # no news since
    sent_at = time.time() + 0.01  # a nurse sends a consult to the hub, through any process
    time.sleep(0.02)
    assert cache.get((ANA, "worklist"), 60, lambda: "after", news=news(sent_at)) == "after"
    assert cache.get((ANA, "worklist"), 60, lambda: "again", news=news(sent_at)) == "after"  # fetched after it
    assert len(asked) == 3


def test_news_is_not_asked_for_an_answer_that_would_be_fetched_again_anyway():
    """An answer kept past its seconds, or fetched before the user's own last write, is fetched again whatever the
    news says: the news (a database read) is not asked for it. Asked before: on every page of a user whose kept
    answer had expired."""
    cache, asked = AnswerCache(), []

    def news() -> float:
        asked.append(1)
        return 0.0

    assert cache.get((ANA, "worklist"), 0.05, lambda: "first", news=news) == "first"
    time.sleep(0.1)  # kept past its seconds
    assert cache.get((ANA, "worklist"), 0.05, lambda: "second", news=news) == "second"
    assert asked == []
    assert cache.get((ANA, "worklist"), 0.05, lambda: "x", news=news) == "second"  # kept: the news is asked
    assert asked == [1]
    wrote = time.time() + 0.01  # the user's own write, after the answer was fetched
    time.sleep(0.02)
    assert cache.get((ANA, "worklist"), 60, lambda: "third", not_before=wrote, news=news) == "third"
    assert asked == [1]
    assert cache.get((ANA, "worklist"), 60, lambda: "y", not_before=wrote, news=news) == "third"
    assert asked == [1, 1]


def test_a_full_cache_drops_its_oldest_half():
    cache = AnswerCache(size=4)
    for i in range(4):
        cache.get((ANA, i), 60, lambda i=i: i)
    cache.get((ANA, "new"), 60, lambda: "new")
    assert cache.get((ANA, 0), 60, lambda: "refetched") == "refetched"
    assert cache.get((ANA, 3), 60, lambda: "refetched") == 3


def test_a_fresh_read_never_takes_an_answer_kept_for_the_same_key():
    """The invoice page's shell may use a summary kept a few seconds; its status box (seconds=0) must
    read billing again, though both ask for the same path as the same user."""
    cache = AnswerCache()
    assert cache.get((ANA, "summary"), 60, lambda: "kept for the shell") == "kept for the shell"
    assert cache.get((ANA, "summary"), 0, lambda: "fresh") == "fresh"
    assert cache.get((ANA, "summary"), 60, lambda: "x") == "kept for the shell"  # the kept one stays for shells


def test_a_demo_users_development_token_is_signed_once_and_verifies(tmp_path, monkeypatch):
    """The development token: the issuer's key read once per process, the token kept per user,
    and every claim the APIs read (what ``sen_shared.auth.issue_dev_token`` would sign)."""
    from types import SimpleNamespace

    from flask import Flask, session
    from sen_portal import caches
    from sen_portal.web import backend
    from sen_shared.auth import TokenVerifier, ensure_dev_key

    key = tmp_path / "dev.pem"
    ensure_dev_key(key)
    cfg = SimpleNamespace(dev_key_path=str(key), jwt_issuer="sen-dev", jwt_audience="sen")
    monkeypatch.setattr(backend, "settings", lambda: cfg)
    caches.forget_all()  # no token kept from a test before
    monkeypatch.setattr("sen_shared.auth._signing_keys", {})
    loads = []
    real = ensure_dev_key
    monkeypatch.setattr("sen_shared.auth.ensure_dev_key", lambda p: loads.append(p) or real(p))
    app = Flask("t")
    app.secret_key = "k"
    verifier = TokenVerifier(issuer="sen-dev", audience="sen", dev_key_path=key)

    def token_of(user):
        with app.test_request_context("/"):
            session["user"] = user
            return backend.user_token()

    an = {"username": "an", "role": "doctor", "name": "BS. Nguyễn Văn An", "facility": "bvdk-dong-thap",
          "practitioner": "bs-nguyen-van-an"}
    tam = {"username": "tam", "role": "clinic", "name": "Võ Minh Tâm", "facility": "tyt-my-hiep"}
    first = token_of(an)
    assert token_of(an) == first  # kept for the user
    other = token_of(tam)
    assert other != first and loads.count(str(key)) == 1  # the portal read the key once
    p = verifier.verify(first)
    assert (p.sub, p.roles, p.facility, p.practitioner, p.name) == (
        "portal-an", frozenset({"doctor"}), "bvdk-dong-thap", "bs-nguyen-van-an", "BS. Nguyễn Văn An")
    q = verifier.verify(other)
    assert (q.roles, q.facility, q.practitioner) == (frozenset({"clinic"}), "tyt-my-hiep", None)
    with pytest.raises(ValueError):
        token_of({"username": "x", "role": "superuser"})
