"""gpic.http: the one Retry-After parser, the full-jitter backoff and the rate limiter that the
fetch stage and the collectors share."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from gpic.http import RateLimit, full_jitter, retry_after

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()


def at_now() -> float:
    return NOW


@pytest.mark.parametrize("value, seconds", [("7", 7.0), (" 120 ", 120.0), ("0", 0.0)])
def test_retry_after_reads_delta_seconds(value, seconds):
    assert retry_after(value, now=at_now) == seconds


def test_retry_after_reads_http_dates_in_gmt():
    assert retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=at_now) == 30.0
    assert retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=at_now) == 0.0  # passed: no wait, not a negative one
    assert retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now=at_now) == 60.0  # RFC 850 form


def test_a_date_without_a_zone_is_utc_whatever_the_machine_s_zone(monkeypatch):
    """asctime, the third HTTP date form, has no zone; every HTTP date is GMT."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert retry_after("Wed Oct 21 07:28:45 2015", now=at_now) == 45.0
        assert retry_after("Wed, 21 Oct 2015 07:28:45 -0000", now=at_now) == 45.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Wed, 99 Foo 2015 07:28:00 GMT", "\x00"])
def test_retry_after_garbage_is_none(value):
    assert retry_after(value, now=at_now) is None


def test_full_jitter_stays_within_its_exponential_cap():
    rng = random.Random(3)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (60, 3.0), (5000, 3.0)]:
        waits = [full_jitter(retry, 0.5, 3.0, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling  # the whole window, not a step


def test_full_jitter_draws_from_the_given_generator():
    assert [full_jitter(n, 0.1, 0.3, random.Random(7)) for n in (1, 2, 3)] == [
        random.Random(7).uniform(0, cap) for cap in (0.1, 0.2, 0.3)]


class FakeTime:
    def __init__(self):
        self.now, self.waits = 100.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_rate_limit_spaces_calls_and_returns_its_wait():
    fake = FakeTime()
    bucket = RateLimit(per_second=2.0, burst=1, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.take() for _ in range(5)] == [0.0, 0.5, 0.5, 0.5, 0.5]
    assert fake.waits == [0.5] * 4


def test_rate_limit_idle_time_refills_at_most_the_burst():
    fake = FakeTime()
    bucket = RateLimit(per_second=1.0, burst=3, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    fake.now += 60  # a minute idle: three at once again, not sixty
    assert [bucket.take() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_rate_limit_queues_concurrent_callers_one_interval_apart():
    """Workers of one fetcher asking at the same moment start one interval apart (real time)."""
    import threading
    import time

    bucket = RateLimit(per_second=20.0)
    starts: list[float] = []
    workers = [threading.Thread(target=lambda: (bucket.take(), starts.append(time.monotonic())))
               for _ in range(5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    starts.sort()
    assert all(later - earlier >= 0.045 for earlier, later in zip(starts, starts[1:])), starts


def test_a_rate_of_zero_never_waits():
    fake = FakeTime()
    bucket = RateLimit(per_second=0, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.take() for _ in range(3)] == [0.0] * 3 and fake.waits == []
