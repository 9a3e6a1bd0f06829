"""retry.decide: which cloud errors are retried, after how long, and when the portal gives up."""

from __future__ import annotations

import random

import pytest

from requests_app import retry
from requests_app.cloud.errors import CloudError


@pytest.fixture(autouse=True)
def budget(settings):
    settings.PORTAL_RETRY_BASE_SECONDS = 2.0
    settings.PORTAL_RETRY_MAX_DELAY_SECONDS = 60.0
    settings.PORTAL_STEP_MAX_ATTEMPTS = 8
    settings.PORTAL_STEP_RETRY_WINDOW_SECONDS = 600.0
    settings.PORTAL_REPLICATION_WINDOW_SECONDS = 300.0
    settings.PORTAL_VERIFY_WINDOW_SECONDS = 120.0


class Top:
    """An rng whose uniform(a, b) is always b: shows the upper bound of the jitter."""

    def uniform(self, a: float, b: float) -> float:
        return b


def transient(code: str = "InternalServerError", retry_after: float | None = None) -> CloudError:
    return CloudError("Azure had a hiccup.", permanent=False, code=code, status=500, retry_after=retry_after)


def test_a_permanent_error_is_never_retried() -> None:
    error = CloudError("No.", permanent=True, code="AuthorizationFailed", status=403, retry_after=5)
    assert retry.decide(error, attempts=1, elapsed=0) == retry.Decision(False, reason="permanent")


def test_a_transient_error_is_retried_after_a_backoff() -> None:
    decision = retry.decide(transient(), attempts=1, elapsed=0, rng=random.Random(1))
    assert decision.retry and 0 <= decision.delay <= 2.0


def test_retry_after_is_honoured_as_given_never_shortened() -> None:
    for seconds in (1, 7, 90):  # 90: above the backoff's own cap, and still taken as given
        decision = retry.decide(transient(retry_after=seconds), attempts=1, elapsed=0, rng=Top())
        assert decision == retry.Decision(True, delay=seconds)


def test_a_retry_after_beyond_the_window_gives_up_instead_of_waiting_past_it() -> None:
    decision = retry.decide(transient(retry_after=120), attempts=2, elapsed=500)
    assert not decision.retry and decision.reason == "gave up after 2 attempts over 500 s"


def test_the_backoff_is_full_jitter_between_zero_and_a_doubling_capped_bound() -> None:
    assert [retry.backoff(n, Top()) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    rng = random.Random(42)
    samples = [retry.backoff(3, rng) for _ in range(2000)]
    assert 0 <= min(samples) < 0.1 and 7.9 < max(samples) <= 8.0  # the whole range [0, 8], not just near 8
    assert 3.5 < sum(samples) / len(samples) < 4.5  # uniform: mean about half the bound


def test_it_gives_up_after_the_maximum_attempts() -> None:
    assert retry.decide(transient(), attempts=7, elapsed=10).retry
    decision = retry.decide(transient(), attempts=8, elapsed=10)
    assert decision == retry.Decision(False, reason="gave up after 8 attempts")


def test_it_gives_up_when_the_next_wait_would_end_outside_the_step_window() -> None:
    assert retry.decide(transient(), attempts=3, elapsed=590, rng=Top()).retry  # 590 + 8 <= 600
    assert not retry.decide(transient(), attempts=3, elapsed=595, rng=Top()).retry  # 595 + 8 > 600


@pytest.mark.parametrize(("code", "window"), [("PrincipalNotFound", 300.0), ("AADSTS70021", 120.0)])
def test_replication_and_propagation_have_their_own_window_and_no_attempt_cap(code, window) -> None:
    assert retry.window_for(transient(code)) == window
    # Many quick attempts are fine within the window: only time bounds these.
    assert retry.decide(transient(code), attempts=50, elapsed=window - 61, rng=Top()).retry
    decision = retry.decide(transient(code), attempts=50, elapsed=window - 1, rng=Top())
    assert not decision.retry and decision.reason.startswith("gave up after 50 attempts over")


def test_other_errors_use_the_step_window() -> None:
    assert retry.window_for(transient("ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity")) == 600.0
    assert retry.window_for(transient("AADSTS700213")) == 600.0
