"""The pure part of webhooks (chalicelib/domain/webhooks.py): the schedule, what an answer
means, which URLs and addresses may be called, and signatures the `standardwebhooks` package verifies."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from chalicelib.domain import webhooks as hooks


def test_the_default_schedule_is_svix_s_and_jitter_stays_within_ten_percent():
    assert hooks.DEFAULT_SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    rng = random.Random(1)
    for attempts, step in enumerate(hooks.DEFAULT_SCHEDULE[1:], start=1):
        delays = [hooks.next_delay(hooks.DEFAULT_SCHEDULE, attempts, rng=rng) for _ in range(200)]
        assert all(step * 0.9 - 1 <= d <= step * 1.1 + 1 for d in delays if d is not None)
        assert len(set(delays)) > 1 or step < 10
    assert hooks.next_delay(hooks.DEFAULT_SCHEDULE, len(hooks.DEFAULT_SCHEDULE)) is None  # used up


def test_a_retry_after_longer_than_the_step_wins_and_is_capped():
    assert hooks.next_delay((0, 5, 300), 1, jitter=0, retry_after=120) == 120
    assert hooks.next_delay((0, 5, 300), 2, jitter=0, retry_after=10) == 300
    assert hooks.next_delay((0, 5), 1, jitter=0, retry_after=10**9) == hooks.MAX_RETRY_AFTER
    assert hooks.retry_after_seconds(429, "30") == 30 and hooks.retry_after_seconds(503, " 7 ") == 7
    assert hooks.retry_after_seconds(500, "30") is None and hooks.retry_after_seconds(429, "Wed, 21 Oct") is None


@pytest.mark.parametrize("text", ["", "a,b", "5,-1"])
def test_a_bad_schedule_is_refused(text):
    with pytest.raises(ValueError):
        hooks.parse_schedule(text)


def test_only_2xx_is_success_and_410_means_stop():
    assert [hooks.judge(s) for s in (200, 204, 299)] == [hooks.Verdict.DELIVERED] * 3
    assert [hooks.judge(s) for s in (None, 301, 302, 400, 429, 500, 503)] == [hooks.Verdict.RETRY] * 7
    assert hooks.judge(410) is hooks.Verdict.GONE


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1",
                                     "224.0.0.1", "100.100.100.200"])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(hooks.UrlRefused):
        hooks.check_address(ipaddress.ip_address(address))


def test_public_addresses_pass():
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        hooks.check_address(ipaddress.ip_address(address))


def test_urls_https_only_and_no_private_literal_unless_allowed():
    strict = {"allow_http": False, "allow_private": False}
    assert hooks.check_url("https://hooks.example.com/x", **strict)
    for url in ("http://hooks.example.com/", "https://127.0.0.1/", "https://[::1]/", "https://localhost/",
                "https://user:pw@hooks.example.com/", "https:///nohost", "javascript:alert(1)"):
        with pytest.raises(hooks.UrlRefused):
            hooks.check_url(url, **strict)
    assert hooks.check_url("http://127.0.0.1:8080/hook", allow_http=True, allow_private=True)


def test_signatures_verify_with_standardwebhooks_one_per_secret():
    old, new = hooks.new_secret(), hooks.new_secret()
    assert old.startswith("whsec_") and old != new
    body = '{"type":"webhook.test","data":{}}'
    headers = hooks.sign("msg_1", body, [new, old], at=datetime.now(UTC))
    assert headers["webhook-id"] == "msg_1" and len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "webhook.test", "data": {}}


def test_task_events_from_state_changes():
    assert hooks.task_events([(1, "completed", "allow"), (2, "completed", "review"), (3, "failed", None),
                              (4, "processing", None)]) == [
        (hooks.COMPLETED, 1), (hooks.COMPLETED, 2), (hooks.REVIEW_REQUIRED, 2), (hooks.FAILED, 3)]
