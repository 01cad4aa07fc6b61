"""The order rule's check (bench/order_rule.py), used by the storm test and bench/queue_scale.py: a pair served
against the queue order is excused only by a refused call of the earlier place in flight with the later one's."""

from __future__ import annotations

from bench.order_rule import Attempt, AttemptLog, unexplained_inversions


def log_of(*attempts: Attempt) -> AttemptLog:
    log = AttemptLog()
    log.attempts.extend(attempts)
    return log


def test_served_in_queue_order_is_no_inversion() -> None:
    log = log_of(Attempt("a", 0.0, 0.5, 200), Attempt("b", 0.1, 0.6, 200))
    assert unexplained_inversions([(1, 0.0, "a"), (2, 0.1, "b")], log) == []


def test_a_later_place_served_while_the_earlier_was_refused_in_flight_is_excused() -> None:
    log = log_of(Attempt("a", 0.0, 0.2, 429), Attempt("b", 0.1, 0.6, 200), Attempt("a", 0.3, 0.9, 200))
    assert unexplained_inversions([(1, 0.3, "a"), (2, 0.1, "b")], log) == []


def test_a_later_place_served_while_the_earlier_waited_is_an_inversion() -> None:
    # a's refusal was answered before b's call was sent: a waited, not in flight, and b went first
    log = log_of(Attempt("a", 0.0, 0.05, 429), Attempt("b", 0.1, 0.6, 200), Attempt("a", 0.7, 1.2, 200))
    assert unexplained_inversions([(1, 0.7, "a"), (2, 0.1, "b")], log) == [("a", "b")]


def test_a_later_place_served_with_no_refusal_of_the_earlier_is_an_inversion() -> None:
    log = log_of(Attempt("a", 0.0, 0.9, 200), Attempt("b", 0.1, 0.6, 200))
    assert unexplained_inversions([(1, 0.5, "a"), (2, 0.2, "b")], log) == [("a", "b")]


def test_recording_marks_each_call_with_its_start_and_restores_the_client() -> None:
    from chalicelib.pcc import client

    real = client.start
    answers = iter([client.PccCallError(429, {"error": "at capacity"}), {"sessionId": "s1"}])

    def fake(agent: str, payload: object, *args: object, **kwargs: object) -> dict[str, str]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client.start = fake  # type: ignore[assignment]
    try:
        with AttemptLog().recording() as log:
            try:
                client.start("agent", {"body": {"n": 7}}, "pk")
            except client.PccCallError:
                pass
            client.start("agent", {"body": {"n": 7}}, "pk")
        assert [(a.marker, a.status) for a in log.attempts] == [(7, 429), (7, 200)]
        assert client.start is fake
    finally:
        client.start = real  # type: ignore[assignment]


def test_a_dispatcher_attempt_is_timed_as_the_dispatcher_saw_it() -> None:
    """Two attempts the dispatcher had in flight together must overlap in the log even when one's claim write
    delayed its call, or its outcome waited to be recorded: an attempt is timed from the moment the dispatcher
    sent it to the moment it recorded the outcome."""
    import time

    from chalicelib.pcc import client
    from chalicelib.start import attempt as attempts
    from chalicelib.start import dispatcher

    real_start, real_attempt, real_record = client.start, attempts.attempt, dispatcher.Run._record
    recorded: list[object] = []

    def fake_start(agent: str, payload: object, *args: object, **kwargs: object) -> dict[str, str]:
        return {"sessionId": "s"}

    def fake_attempt(settings: object, agent: str, request: object, wait: float,
                     clock: attempts.CallClock) -> str:
        time.sleep(0.05)  # the claim
        client.start("agent", {"body": {"n": "late"}}, "pk")
        return "started"

    client.start, attempts.attempt = fake_start, fake_attempt  # type: ignore[assignment]
    dispatcher.Run._record = lambda run, flight: recorded.append(flight)  # type: ignore[method-assign,assignment,misc]
    try:
        with AttemptLog().recording() as log:
            clock = attempts.CallClock()
            sent = time.monotonic()
            assert attempts.attempt(None, "agent", {}, 1.0, clock) == "started"  # type: ignore[arg-type]
            assert log.attempts == []  # not yet recorded by the dispatcher
            time.sleep(0.05)  # the dispatcher's thread was busy
            flight = dispatcher.Flight(1, None, sent, 1, clock=clock)  # type: ignore[arg-type]
            dispatcher.Run._record(None, flight)  # type: ignore[arg-type]
        [attempt] = log.attempts
        assert attempt.marker == "late" and attempt.status == 200 and attempt.sent == sent
        assert attempt.answered - sent >= 0.1 and recorded == [flight]
    finally:
        client.start, attempts.attempt, dispatcher.Run._record = real_start, real_attempt, real_record  # type: ignore[method-assign]
