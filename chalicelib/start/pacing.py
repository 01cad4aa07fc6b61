"""The dispatcher's pacing rule (Pacer): when its next Pipecat Cloud call may go, adapting to the rate at which
capacity frees. Pure: a monotonic clock and the answers it is told, no AWS, no HTTP.

Calls are spaced by an interval that adapts to the rate at which capacity frees (SHRINK_* / GROW below), between
1 / DISPATCH_CALLS_PER_SECOND and RETRY_CAP_SECONDS; it starts at RETRY_BASE_SECONDS, or from the interval between
successes measured by the previous run (the rate of recent successes sets it once calls are being refused; a
refusal's growth is spread over the attempts in flight, so it moves as much per round trip at any latency, as TCP
grows its window by 1/w per ACK). A refusal is Pipecat Cloud's quick capacity check while a success waits for the
bot, so an attempt unanswered well past the refusal time counts as a success for pacing (Pacer.likely_started): the
pace follows capacity, not the bot's start time. Measured in bench/queue_scale.py.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

# Pacing (Pacer): the wait halves with each success while every recent answer is one, grows x1.5 per round
# trip of refusals, and otherwise spaces calls at TARGET_SUCCESS x the interval between recent successes;
# tuned on the capacity model of bench/queue_scale.py (drain <= 1.10x the ideal at <= 1.5 calls per bot).
SHRINK_AFTER_SUCCESS, GROW, TARGET_SUCCESS, SMOOTHING = 0.5, 1.5, 0.85, 0.3
HISTORY_MIN, RATE_SAMPLES, STREAK, HISTORY_SECONDS = 12, 4, 2, 3.0
# A refusal (429) is Pipecat Cloud's quick capacity check; a success waits for the bot to start (0.5-3 s). So an
# attempt still unanswered SLOW_FACTOR x the measured refusal time after it was sent (and at least SLOW_MIN_SECONDS)
# has very likely found capacity: the next place goes then, not one bot start later (Pacer.likely_started).
SLOW_FACTOR, SLOW_MIN_SECONDS, REFUSAL_SMOOTHING = 3.0, 0.2, 0.2


@dataclass
class Pacer:
    """When the next attempt may be sent (monotonic clock), adapting to the rate at which capacity frees.

    From the last answers (HISTORY_MIN, or twice the attempts in flight, sent within HISTORY_SECONDS of the
    newest):
    - all of them successes, or STREAK successes in a row: capacity was waiting for us (or has started to free
      again after a long refusal), so the next place goes at once and the wait halves with each success;
    - refusals among them, and enough answers to measure: calls go at 1 / TARGET_SUCCESS times the rate of
      successes they show (while some calls are refused, successes come at the rate capacity frees), so about
      1 call in 6 is refused and a place that frees waits a fraction of the interval for the next call;
    - too few answers yet, or only refusals: the wait grows by GROW per round trip of refusals.
    """

    base: float
    cap: float
    min_gap: float
    interval: float | None  # measured seconds between successes: the drain rate, for the ETA
    wait: float = 0.0
    last_call: float = float("-inf")
    last_success: float | None = None
    next_call: float = 0.0
    streak: int = 0  # successes since the last refusal
    history: deque[tuple[float, bool]] = field(default_factory=lambda: deque(maxlen=HISTORY_MIN))
    refusal_seconds: float | None = None  # smoothed send -> answer time of refused attempts

    def __post_init__(self) -> None:
        self.wait = self._clamp(TARGET_SUCCESS * self.interval if self.interval else self.base)
        self.next_call = time.monotonic() + self.wait  # a 429 just queued the work: not at once

    def _clamp(self, seconds: float) -> float:
        return max(self.min_gap, min(self.cap, seconds))

    def called(self) -> float:
        """An attempt is sent now; returns its send time (hand it back with its answer)."""
        self.last_call = time.monotonic()
        self.next_call = self.last_call + self.wait
        return self.last_call

    def success(self, sent_at: float | None = None, in_flight: int = 1, *, foreseen: bool = False) -> None:
        """Capacity was there (`foreseen`: likely_started already acted on it). Updates `interval`, the measured
        time between successes (the ETA's drain rate)."""
        now = time.monotonic()
        if self.last_success is not None:
            gap = now - self.last_success
            self.interval = gap if self.interval is None else SMOOTHING * gap + (1 - SMOOTHING) * self.interval
        self.last_success = now
        self._answered(self.last_call if sent_at is None else sent_at, True, in_flight, foreseen=foreseen)

    def miss(self, sent_at: float | None = None, in_flight: int = 1, took: float | None = None) -> None:
        """Refused (429); `took`: how long Pipecat Cloud took to refuse (its call alone), else since `sent_at`."""
        sent = self.last_call if sent_at is None else sent_at
        took = max(0.0, time.monotonic() - sent if took is None else took)
        self.refusal_seconds = took if self.refusal_seconds is None else \
            REFUSAL_SMOOTHING * took + (1 - REFUSAL_SMOOTHING) * self.refusal_seconds
        self._answered(sent, False, in_flight)

    def slow_after(self) -> float | None:
        """How long an attempt may stay unanswered before it counts as likely started (None: no refusal measured
        yet, so nothing to compare with)."""
        if self.refusal_seconds is None:
            return None
        return max(SLOW_MIN_SECONDS, SLOW_FACTOR * self.refusal_seconds)

    def likely_started(self) -> None:
        """An attempt is unanswered past slow_after(): it is starting a bot. It counts in the streak of successes
        at once (its real answer is recorded later with foreseen=True and does not count twice), and moves the
        pace as a success would where that is clear: capacity starting to free after refusals only (no success
        among the recent answers), or STREAK successes in a row: the next place goes at once, the wait shrinks.
        Amid a mix of answers, pacing stays on the measured rate."""
        self.streak += 1
        successes = sum(1 for _, ok in self.history if ok)
        if successes == 0 or successes == len(self.history) or self.streak >= STREAK:
            self.wait = self._clamp(self.wait * SHRINK_AFTER_SUCCESS)
            self.next_call = time.monotonic()

    def _answered(self, sent_at: float, ok: bool, in_flight: int, *, foreseen: bool = False) -> None:
        size = max(HISTORY_MIN, 2 * in_flight)
        if self.history.maxlen != size:
            self.history = deque(self.history, maxlen=size)
        self.history.append((sent_at, ok))
        while len(self.history) > RATE_SAMPLES and self.history[0][0] < sent_at - HISTORY_SECONDS:
            self.history.popleft()  # the news of a few seconds ago, not of a long refusal before
        self.streak = (self.streak if foreseen else self.streak + 1) if ok else 0
        successes = sum(1 for _, success in self.history if success)
        span = max(t for t, _ in self.history) - min(t for t, _ in self.history)
        if successes == len(self.history) or self.streak >= STREAK:
            if not foreseen:
                self.wait = self._clamp(self.wait * SHRINK_AFTER_SUCCESS)
                self.next_call = time.monotonic()  # capacity is there: the next place goes at once
            return
        if successes and len(self.history) >= RATE_SAMPLES and span > 0:
            self.wait = self._clamp(TARGET_SUCCESS * span / successes)
        elif not ok:
            self.wait = self._clamp(self.wait * GROW ** (1 / max(1, in_flight)))
        self.next_call = self.last_call + self.wait

    def moved_on(self) -> None:
        """A place left without a capacity answer (failed for good): the next may go at once."""
        self.next_call = self.last_call + self.min_gap

    def woken(self) -> None:
        self.next_call = max(time.monotonic(), self.last_call + self.min_gap)
