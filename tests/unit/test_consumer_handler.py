"""The pure handler with fakes: one email per event, retries of transient errors only."""

from __future__ import annotations

import threading
import time

import pytest

from email_consumer.errors import (
    EventBusy,
    SmtpRejected,
    SmtpUnavailable,
    StoreUnavailable,
    UncertainDelivery,
)
from email_consumer.handler import HandlingResult, Outcome, WelcomeEmailHandler
from email_consumer.ports import ClaimAnswer, RenderedEmail
from email_consumer.rendering import WelcomeRenderer
from email_consumer.retry_policy import RetryPolicy
from email_consumer.settings import parse_mail_from
from shared.events import UserRegistered, new_user_registered
from tests.support.consumer_fakes import FakeProcessedEvents, FakeSender

NO_WAIT = RetryPolicy(attempts=3, initial_backoff_s=0.0, max_backoff_s=0.0, max_total_s=60)


def _event() -> UserRegistered:
    return new_user_registered(
        user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
        username="alice",
        email="alice@example.com",
        full_name=None,
    )


def _handler(
    sender: FakeSender,
    store: FakeProcessedEvents,
    policy: RetryPolicy = NO_WAIT,
    *,
    resend_after_s: float = 0.0,
) -> WelcomeEmailHandler:
    return WelcomeEmailHandler(
        renderer=WelcomeRenderer(parse_mail_from("welcome@example.com")),
        sender=sender,
        processed=store,
        policy=policy,
        claim_lease_s=60,
        uncertain_resend_after_s=resend_after_s,
    )


def test_an_event_is_sent_once_and_recorded() -> None:
    sender, store = FakeSender(), FakeProcessedEvents()
    event = _event()
    result = _handler(sender, store).handle(event)
    assert result.outcome is Outcome.SENT
    assert result.attempts == 1
    (sent,) = sender.sent
    assert sent.envelope_to == event.data.email
    assert f"X-Event-ID: {event.event_id}\r\n".encode() in sent.data
    assert store.rows[event.event_id][0] == "sent"


def test_a_redelivered_event_is_a_duplicate_and_sends_nothing() -> None:
    sender, store = FakeSender(), FakeProcessedEvents()
    handler, event = _handler(sender, store), _event()
    handler.handle(event)
    result = handler.handle(event)
    assert result.outcome is Outcome.DUPLICATE
    assert len(sender.sent) == 1


def test_transient_errors_are_retried_in_process_until_success() -> None:
    sender = FakeSender([SmtpUnavailable("refused"), SmtpUnavailable("refused")])
    result = _handler(sender, FakeProcessedEvents()).handle(_event())
    assert result.outcome is Outcome.SENT
    assert result.attempts == 3
    assert len(sender.sent) == 1


def test_transient_errors_beyond_the_attempts_fail_and_free_the_claim() -> None:
    sender = FakeSender([SmtpUnavailable("refused")] * 3)
    store = FakeProcessedEvents()
    event = _event()
    result = _handler(sender, store).handle(event)
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 3
    assert isinstance(result.error, SmtpUnavailable)
    assert not result.permanent
    assert event.event_id not in store.rows, "a later retry must be able to claim it at once"


def test_a_permanent_error_is_not_retried() -> None:
    sender = FakeSender([SmtpRejected(550, "no such user")])
    result = _handler(sender, FakeProcessedEvents()).handle(_event())
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 1
    assert result.permanent
    assert sender.sent == []


def test_an_event_held_by_another_delivery_is_retried_then_seen_as_sent() -> None:
    sender, store = FakeSender(), FakeProcessedEvents()
    event = _event()
    assert store.claim(event.event_id, "other-worker", 60) is ClaimAnswer.CLAIMED

    class FinishingStore(FakeProcessedEvents):
        def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
            answer = store.claim(event_id, token, lease_s)
            store.mark_sent(event_id, "other-worker")  # the other delivery finishes meanwhile
            return answer

    result = _handler(sender, FinishingStore()).handle(event)
    assert result.outcome is Outcome.DUPLICATE
    assert result.attempts == 2
    assert sender.sent == []


def test_two_concurrent_deliveries_of_one_event_send_one_email() -> None:
    store = FakeProcessedEvents()
    event = _event()
    gate = threading.Barrier(2)

    class SlowSender(FakeSender):
        def send(self, email: RenderedEmail) -> None:
            time.sleep(0.05)
            super().send(email)

    sender = SlowSender()
    policy = RetryPolicy(attempts=50, initial_backoff_s=0.01, max_backoff_s=0.02, max_total_s=30)
    results = []

    def deliver() -> None:
        gate.wait()
        results.append(_handler(sender, store, policy).handle(event))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.outcome.value for r in results) == ["duplicate", "sent"]
    assert len(sender.sent) == 1


def test_a_store_outage_is_a_transient_failure() -> None:
    class DownStore(FakeProcessedEvents):
        def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
            raise StoreUnavailable("database down")

    sender = FakeSender()
    result = _handler(sender, DownStore()).handle(_event())
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, StoreUnavailable)
    assert sender.sent == []


def test_shutting_down_stops_in_process_retries() -> None:
    stopping = threading.Event()
    stopping.set()
    sender = FakeSender([SmtpUnavailable("refused")] * 10)
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(parse_mail_from("welcome@example.com")),
        sender=sender,
        processed=FakeProcessedEvents(),
        policy=RetryPolicy(attempts=10, initial_backoff_s=5, max_backoff_s=5, max_total_s=60),
        claim_lease_s=60,
        stopping=stopping,
    )
    result = handler.handle(_event())
    assert result.outcome is Outcome.FAILED
    assert result.attempts == 1


@pytest.mark.parametrize("error", [SmtpRejected(554, "spam"), SmtpUnavailable("timeout")])
def test_failures_carry_the_error(error: Exception) -> None:
    result = _handler(FakeSender([error] * 5), FakeProcessedEvents()).handle(_event())
    assert result.error is not None
    assert type(result.error) is type(error)


class MarkFailingStore(FakeProcessedEvents):
    """Fails `mark_sent` the first `failures` times, as a database blip would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.claims = 0

    def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
        self.claims += 1
        return super().claim(event_id, token, lease_s)

    def mark_sent(self, event_id: str, token: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database blip")
        super().mark_sent(event_id, token)


def test_a_store_blip_while_marking_sends_once_and_retries_only_the_mark() -> None:
    sender, store = FakeSender(), MarkFailingStore(failures=1)
    event = _event()
    result = _handler(sender, store).handle(event)
    assert result.outcome is Outcome.SENT
    assert len(sender.sent) == 1
    assert store.claims == 1, "the event must not be claimed again after its email went out"
    assert store.rows[event.event_id][0] == "sent"


def test_a_mark_failing_past_the_lease_never_sends_a_second_email() -> None:
    # A lease that runs out at once: a retry that claimed again would win and send again.
    sender, store = FakeSender(), MarkFailingStore(failures=1)
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(parse_mail_from("welcome@example.com")),
        sender=sender,
        processed=store,
        policy=NO_WAIT,
        claim_lease_s=0.000_001,
    )
    result = handler.handle(_event())
    assert len(sender.sent) == 1
    assert store.claims == 1
    assert result.outcome is Outcome.SENT


def test_a_store_down_after_the_send_still_acknowledges_the_sent_email() -> None:
    sender, store = FakeSender(), MarkFailingStore(failures=100)
    result = _handler(sender, store).handle(_event())
    assert result.outcome is Outcome.SENT, "the email went out: the delivery is done"
    assert len(sender.sent) == 1
    assert store.claims == 1


class FailsFirstSendPerThread(FakeSender):
    """Each thread's first send fails (transiently) once every thread has reached it."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.everyone_failing = threading.Barrier(threads, timeout=10)
        self.local = threading.local()
        self.sent: list[RenderedEmail] = []
        self.lock = threading.Lock()

    def send(self, email: RenderedEmail) -> None:
        if not getattr(self.local, "failed", False):
            self.local.failed = True
            self.everyone_failing.wait()
            raise SmtpUnavailable("connection reset")
        with self.lock:
            self.sent.append(email)


def test_threads_retrying_at_the_same_time_each_keep_their_own_count() -> None:
    # One handler (and its retry controllers) serves the whole pool: retries running side by
    # side must neither share attempt counts nor stop each other early.
    threads = 8
    sender = FailsFirstSendPerThread(threads)
    store = FakeProcessedEvents()
    handler = WelcomeEmailHandler(
        renderer=WelcomeRenderer(parse_mail_from("welcome@example.com")),
        sender=sender,
        processed=store,
        policy=RetryPolicy(attempts=2, initial_backoff_s=0.0, max_backoff_s=0.0, max_total_s=60),
        claim_lease_s=60,
    )
    events = [
        new_user_registered(
            user_id="0b6f3c52-2f5e-4b35-8d0e-8f2b7f0b7b1a",
            username=f"user{number}",
            email=f"user{number}@example.com",
            full_name=None,
        )
        for number in range(threads)
    ]
    results: list[HandlingResult | None] = [None] * threads

    def handle(number: int) -> None:
        results[number] = handler.handle(events[number])

    workers = [threading.Thread(target=handle, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = [(r.outcome, r.attempts) if r else None for r in results]
    assert outcomes == [(Outcome.SENT, 2)] * threads
    assert len(sender.sent) == threads


def test_the_event_is_claimed_only_once_a_connection_is_held() -> None:
    # Waiting for a free SMTP connection must not eat into the claim's lease: the claim comes
    # after the reservation, and the send inside it.
    sender = FakeSender()

    class CheckingStore(FakeProcessedEvents):
        def claim(self, event_id: str, token: str, lease_s: float) -> ClaimAnswer:
            assert getattr(sender.holding, "value", False), "claimed without a connection"
            return super().claim(event_id, token, lease_s)

    result = _handler(sender, CheckingStore()).handle(_event())
    assert result.outcome is Outcome.SENT
    assert len(sender.sent) == 1


class StoringSender(FakeSender):
    """Every send reaches the server (it is counted) but its outcome is uncertain."""

    def __init__(self, uncertain: int) -> None:
        super().__init__()
        self.uncertain = uncertain
        self.reached: list[RenderedEmail] = []

    def send(self, email: RenderedEmail) -> None:
        self.reached.append(email)
        if self.uncertain > 0:
            self.uncertain -= 1
            raise UncertainDelivery("no reply to the final dot")
        super().send(email)


def test_an_uncertain_send_is_not_retried_and_holds_the_event_as_maybe_sent() -> None:
    sender, store = StoringSender(uncertain=1), FakeProcessedEvents()
    event = _event()
    result = _handler(sender, store, resend_after_s=3600).handle(event)
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, UncertainDelivery)
    assert result.error.final is False
    assert not result.permanent
    assert result.attempts == 1
    assert len(sender.reached) == 1, "never resent at once"
    assert store.rows[event.event_id][0] == "uncertain"
    # Another delivery before the wait is over finds the event busy, sends nothing.
    again = _handler(sender, store, resend_after_s=3600).handle(event)
    assert isinstance(again.error, EventBusy)
    assert len(sender.reached) == 1


def test_after_the_wait_the_event_is_resent_once_with_the_same_message_id() -> None:
    sender, store = StoringSender(uncertain=1), FakeProcessedEvents()
    handler, event = _handler(sender, store, resend_after_s=0), _event()
    handler.handle(event)
    result = handler.handle(event)
    assert result.outcome is Outcome.SENT
    first, second = sender.reached
    assert first.message_id == second.message_id
    assert first.data == second.data
    assert store.rows[event.event_id][0] == "sent"
    assert handler.handle(event).outcome is Outcome.DUPLICATE


def test_two_uncertain_sends_mean_never_again() -> None:
    sender, store = StoringSender(uncertain=2), FakeProcessedEvents()
    handler, event = _handler(sender, store, resend_after_s=0), _event()
    assert isinstance(handler.handle(event).error, UncertainDelivery)
    second = handler.handle(event)
    assert isinstance(second.error, UncertainDelivery)
    assert second.error.final is True
    for _ in range(3):  # redeliveries, a `dlq replay`
        assert handler.handle(event).outcome is Outcome.DUPLICATE
    assert len(sender.reached) == 2


def test_a_resend_that_fails_before_the_message_went_out_keeps_its_one_resend() -> None:
    sender = StoringSender(uncertain=1)
    store = FakeProcessedEvents()
    handler, event = _handler(sender, store, resend_after_s=0), _event()
    handler.handle(event)
    sender.failures = [SmtpUnavailable("refused")] * 3  # the whole in-process budget
    outage = handler.handle(event)
    assert isinstance(outage.error, SmtpUnavailable)
    assert store.rows[event.event_id][0] == "uncertain"
    assert handler.handle(event).outcome is Outcome.SENT
    assert len(sender.sent) == 1
