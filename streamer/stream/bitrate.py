"""Each peer's bit rate: one step down when its link is full, a probe back up when it has room.

A camera's stream is encoded once per bit rate its peers use (one of :data:`BITRATES`), so a
viewer on a slow link gets a smaller stream without lowering anybody else's, at the price of one
more encode for each rate in use. :class:`PeerBitrate` picks the rate of one peer from the
*REMB* messages of its receiver (RTCP "receiver estimated maximum bitrate": Chromium sends one
about once a second and at once when its estimate falls, aiortc at most every half second) and
from what was sent to it. The receivers' delay-based estimators (WebRTC's AIMD) lower their
estimate only when packets queue up, to 0.85 times what arrives, and then hold it; otherwise it
climbs about 8% a second, to at most 1.5 times what arrives. They also hold it when packets arrive
faster than they were sent (after a stall of the sender or the receiver: aiortc's, on a busy
machine, held a healthy loopback link's estimate at 450 kbit/s for seconds). So:

* **down** when the estimate has fallen, or holds after a fall or while packets are lost, and is
  below :data:`CONGESTED` times the rate the peer was sent over the last :data:`RATE_WINDOW_S`:
  straight to the highest rate at or below the estimate. (A rising estimate below what is sent is
  one still catching up, as when a still avatar starts to move or a new peer's estimator starts
  low: Chromium's starts near 300 kbit/s and climbs 8% a second. One held since it last rose, with
  nothing lost, says nothing of the link. A peer's first estimate has no trend, so it decides
  nothing.) Right after a change (a new peer, a new rate) what was sent is counted from the change
  once :data:`FIRST_WINDOW_S` have passed, so that a new viewer on a slow link steps down within
  a second or two instead of sending the top rate into it for a whole window.
* **up** one step when the estimate stayed at or above the next rate up, and at or above
  :data:`HEADROOM` times the rate sent, for :data:`PROBE_AFTER_S`. A probe whose estimate falls
  below the new rate is taken back at once; one pushed back down within :data:`FAILED_PROBE_S`
  doubles the wait before the next (up to :data:`MAX_PROBE_WAIT_S`), so a link at its limit is not
  flooded every few seconds; one that holds sets the wait back.

Delay-based estimates miss a link that drops packets without queueing them first (a token-bucket
policer, common on mobile networks): the estimate stays high while a third of the packets are lost.
So the peer's RTCP receiver reports count too (:meth:`PeerBitrate.report`): a loss above
:data:`LOSS_HIGH` of the packets sent over :data:`LOSS_WINDOW_S` is a full link whatever the
estimate says (down as WebRTC's loss-based controller goes: to the rate sent, or the next rate
down if more, times ``1 - loss / 2``; at least one step), and a probe up needs a loss below
:data:`LOSS_LOW`. A peer that sends no REMB probes up on low loss alone. Loss at one rate says
nothing of the next: each change starts its count afresh.

A peer that sends neither REMB nor receiver reports keeps the top rate, as every peer did before
rates were adapted. A peer whose stream sends well under its rate (a still avatar) cannot show room
for the next rate up (its estimate stops at 1.5 times what arrives); it climbs again once the
picture needs its rate.

Resends (answers to the peer's RTCP NACKs) are held to :data:`RETRANSMIT_SHARE` of the peer's
rate. aiortc resends every packet asked for, at once: on a full link each loss asks for more
resends, which cause more losses, until resends fill the link (measured behind a 500 kbit/s link:
about 190 resends a second beside 60 new packets, and the picture froze).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: The bit rates a stream is encoded at (bits/s), highest first. Neighbours are less than 1.5x
#: apart: a healthy link's estimate tops out at 1.5x what it carries, so it can show room for the
#: next rate up.
BITRATES = (1_000_000, 700_000, 500_000, 350_000, 250_000)
#: What was sent is measured over this many seconds (the camera encoder's KEYFRAME_INTERVAL_S, so
#: that each window holds about one keyframe).
RATE_WINDOW_S = 3.0
#: Right after a change, what was sent is counted over the time since the change, once this many
#: seconds have passed (behind a 500 kbit/s link Chromium's estimate was steady 1.5 s after its
#: first report, and the link's queue overflowed soon after).
FIRST_WINDOW_S = 1.0
#: An estimate below this share of the rate sent means the link is full.
CONGESTED = 0.9
#: An estimate at least this many times the rate sent means room to try the next rate up.
HEADROOM = 1.3
#: Seconds with room (once the rate sent at this bit rate is known) before a probe up.
PROBE_AFTER_S = 4.0
#: A step down this soon after a step up means the probe failed; a probe that held this long resets
#: the wait to :data:`PROBE_AFTER_S`.
FAILED_PROBE_S = 15.0
#: The longest wait before probing again.
MAX_PROBE_WAIT_S = 60.0
#: Loss above this share of the packets sent (as receiver reports count it: before resends) is a full
#: link ...
LOSS_HIGH = 0.10
#: ... and below this share leaves room to probe up (WebRTC's loss-based controller uses the same two).
LOSS_LOW = 0.02
#: Loss is counted over at least this many seconds of receiver reports, and this many packets.
LOSS_WINDOW_S = 1.0
LOSS_MIN_PACKETS = 20
#: Receiver reports kept for that (a still stream may take long to send LOSS_MIN_PACKETS).
MAX_REPORTS = 256
#: Resent packets may use at most this share of the peer's rate ...
RETRANSMIT_SHARE = 0.15
#: ... counted as packets of this size (aiortc's largest), saved up for at most this long.
RETRANSMIT_PACKET_BYTES = 1200
RETRANSMIT_BURST_S = 0.5


class PeerBitrate:
    """The bit rate one peer's stream is encoded at, adapted to its REMB estimates.

    Call :meth:`sent` for each picture sent, :meth:`estimate` for each REMB and :meth:`report` for
    each receiver report; read :attr:`bitrate`. Not thread-safe: all run on the event loop.

    Args:
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.level = 0  # index into BITRATES
        self.estimate_bps: int | None = None  # the newest REMB
        self._after_fall = False  # whether the estimate last moved down
        self.steps_down = self.steps_up = 0
        self._changed_at = clock()  # (for a new peer: when its first picture went out)
        self._first_picture: int | None = None  # bytes of the first picture since the change
        self._new_peer = True  # nothing sent yet
        self._last_step_up: float | None = None
        self._probe_wait = PROBE_AFTER_S
        self._room_since: float | None = None  # when the estimate last rose above HEADROOM x sent
        self._sent: deque[tuple[float, int]] = deque()  # (when, bytes) since the last change
        self.loss: float | None = None  # share of packets lost, the newest measure (for the stats)
        self._loss: float | None = None  # ... at this rate (for the decisions)
        self.steps_down_on_loss = 0
        # (when, extended highest sequence number, cumulative packets lost) since the last change
        self._reports: deque[tuple[float, int, int]] = deque(maxlen=MAX_REPORTS)
        self.resends_allowed = self.resends_refused = 0
        self._resend_tokens = self._resend_capacity()
        self._resend_at = self._changed_at

    @property
    def bitrate(self) -> int:
        """The rate (bits/s) to encode this peer's stream at."""
        return BITRATES[self.level]

    def sent(self, nbytes: int) -> None:
        """A picture of ``nbytes`` went out to the peer."""
        now = self._clock()
        if self._first_picture is None:  # the switch's keyframe (or a new peer's first picture)
            if self._new_peer:
                self._changed_at, self._new_peer = now, False  # count from it, not from setup
            self._first_picture = nbytes
        self._sent.append((now, nbytes))
        while self._sent and self._sent[0][0] < now - RATE_WINDOW_S:
            self._sent.popleft()

    def sent_bps(self) -> float | None:
        """The rate sent at this bit rate over the last :data:`RATE_WINDOW_S`, or since the change
        when that was less long ago, leaving out the switch's keyframe then; None until
        :data:`FIRST_WINDOW_S` have passed since the change (a shorter span is mostly the keyframe)."""
        now = self._clock()
        window = min(now - self._changed_at, RATE_WINDOW_S)
        if window < FIRST_WINDOW_S:
            return None
        total = sum(n for t, n in self._sent if t >= now - window)
        if window < RATE_WINDOW_S and self._first_picture is not None:
            total -= self._first_picture
        return max(total, 0) * 8 / window

    def estimate(self, bps: int) -> None:
        """The peer's receiver estimated it can take ``bps`` bits/s: step down or up if need be."""
        now = self._clock()
        previous, self.estimate_bps = self.estimate_bps, int(bps)
        # Estimators lower it only when packets queue, and then hold it: a full link is a fall, or
        # a hold after one or with losses (a first estimate has no trend; a hold after a rise, with
        # nothing lost, is no sign).
        if previous is not None and bps != previous:
            self._after_fall = bps < previous
        losing = self._loss is not None and self._loss >= LOSS_LOW
        falling = previous is not None and bps <= previous and (self._after_fall or losing)
        self._probe_held(now)
        sent = self.sent_bps()
        if sent is None:  # just changed: too soon to know what this rate sends
            probing = self._last_step_up is not None and self._last_step_up == self._changed_at
            if probing and falling and bps < CONGESTED * self.bitrate:
                self._step_down(bps, now)  # the probe overfills the link: back at once
            return
        if falling and bps < CONGESTED * sent and self.level < len(BITRATES) - 1:
            self._step_down(bps, now)
        elif self.level > 0 and bps >= max(HEADROOM * sent, BITRATES[self.level - 1]) and self._little_loss():
            self._room(now)
        else:
            self._room_since = None

    def report(self, highest_seq: int, cumulative_lost: int) -> None:
        """A receiver report about the peer's stream: its extended highest sequence number and the
        packets lost so far. Steps down on high loss, or up on low loss for a peer with no REMB."""
        now = self._clock()
        self._probe_held(now)
        # the newest earlier report at least a window and LOSS_MIN_PACKETS back
        for i in range(len(self._reports) - 1, -1, -1):
            when, seq0, lost0 = self._reports[i]
            expected = _seq_distance(seq0, int(highest_seq))
            if when <= now - LOSS_WINDOW_S and expected >= LOSS_MIN_PACKETS:
                break
        else:
            self._reports.append((now, int(highest_seq), int(cumulative_lost)))
            return
        for _ in range(i):  # (the older ones are no longer needed)
            self._reports.popleft()
        self._reports.append((now, int(highest_seq), int(cumulative_lost)))
        self.loss = self._loss = min(max((int(cumulative_lost) - lost0) / expected, 0.0), 1.0)
        if self._loss > LOSS_HIGH and self.level < len(BITRATES) - 1:
            # from what was sent (a stream sends about its rate), but not below the next rate down: a
            # still picture sending little is not a measure of the link
            sent = self.sent_bps()
            base = self.bitrate if sent is None else max(sent, BITRATES[self.level + 1])
            self.steps_down_on_loss += 1
            self._step_down(base * (1.0 - self._loss / 2), now)
        elif self.estimate_bps is None and self.level > 0 and self._little_loss():
            self._room(now)  # no REMB: low loss is the only sign of room
        elif self.estimate_bps is None:
            self._room_since = None

    def _little_loss(self) -> bool:
        """Whether loss allows a probe up (unknown loss does: a peer may send no reports)."""
        return self._loss is None or self._loss < LOSS_LOW

    def _probe_held(self, now: float) -> None:
        """A probe up that no step down has followed for :data:`FAILED_PROBE_S` held: the next wait
        is the shortest again."""
        if self._last_step_up is not None and now - self._last_step_up >= FAILED_PROBE_S:
            self._probe_wait = PROBE_AFTER_S

    def _room(self, now: float) -> None:
        """The link has room for the next rate up: step up once it has had room for the wait."""
        if self._room_since is None:
            self._room_since = now
        if now - self._room_since >= self._probe_wait:
            self._last_step_up = now
            self.steps_up += 1
            self._change(self.level - 1, now)

    def _step_down(self, bps: int, now: float) -> None:
        """To the highest lower rate that fits ``bps`` (a stream sends about its rate, or less)."""
        level = next(
            (i for i in range(self.level + 1, len(BITRATES)) if BITRATES[i] <= bps), len(BITRATES) - 1
        )
        failed_probe = self._last_step_up is not None and now - self._last_step_up < FAILED_PROBE_S
        self._probe_wait = min(2 * self._probe_wait, MAX_PROBE_WAIT_S) if failed_probe else PROBE_AFTER_S
        self._last_step_up = None  # (a probe holds only while nothing pushes it down)
        self.steps_down += 1
        self._change(level, now)

    def may_resend(self) -> bool:
        """Whether a packet the peer asked for again (RTCP NACK) may be resent now, counted either way
        (aiortc then skips packets it no longer holds)."""
        now = self._clock()
        capacity = self._resend_capacity()
        per_second = capacity / RETRANSMIT_BURST_S
        self._resend_tokens = min(capacity, self._resend_tokens + (now - self._resend_at) * per_second)
        self._resend_at = now
        if self._resend_tokens < 1.0:
            self.resends_refused += 1
            return False
        self._resend_tokens -= 1.0
        self.resends_allowed += 1
        return True

    def _resend_capacity(self) -> float:
        """Packets that may be resent in a burst: RETRANSMIT_BURST_S of the share of the rate."""
        return RETRANSMIT_SHARE * self.bitrate / 8 / RETRANSMIT_PACKET_BYTES * RETRANSMIT_BURST_S

    def _change(self, level: int, now: float) -> None:
        self.level, self._changed_at, self._room_since = level, now, None
        self._sent.clear()
        self._reports.clear()  # (loss at the last rate says nothing about this one)
        self._loss, self._first_picture = None, None

    def summary(self) -> dict[str, Any]:
        """This peer's rate for the stats message."""
        sent = self.sent_bps()
        return {
            "bitrate": self.bitrate,
            "estimate_bps": self.estimate_bps,
            "sent_bps": None if sent is None else round(sent),
            "steps_down": self.steps_down,
            "steps_up": self.steps_up,
            "loss": None if self.loss is None else round(self.loss, 3),
            "steps_down_on_loss": self.steps_down_on_loss,
            "resends_allowed": self.resends_allowed,
            "resends_refused": self.resends_refused,
        }


def _seq_distance(first: int, last: int) -> int:
    """Packets from sequence number ``first`` to ``last``: extended (32-bit) numbers, or 16-bit
    ones that wrapped (aiortc's receiver reports give the 16-bit number)."""
    distance = last - first
    if distance < 0 and first < 1 << 16 and last < 1 << 16:
        distance += 1 << 16
    return distance
