"""Each peer's bit rate follows its link: down when its REMB says the link is full, probing back up
when there is room, never flooding a link at its limit; resends held to a budget; the track hears
its peer's REMB through aiortc's sender. (Over loopback: ``test_stream_server.py``.)"""

from __future__ import annotations

import itertools
import math

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    pack_remb_fci,
)
from stream_utils import run

from streamer.stream import bitrate
from streamer.stream.bitrate import BITRATES, PeerBitrate
from streamer.stream.camera_encoder import CameraEncoder
from streamer.stream.stage import View
from streamer.stream.stats import PipelineStats
from streamer.stream.tracks import AvatarTrack

FPS = 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Link:
    """A link of ``capacity`` bits/s whose queue drops what exceeds it, and a receiver that estimates
    it as WebRTC's delay-based estimator does: once more is sent than fits, 0.85 x what arrives;
    otherwise climbing 8% a second, to at most 1.5 x what arrives (+10 kbit/s). Its first estimate
    is ``start`` if given (Chromium's starts near 300 kbit/s), else from what arrives. The receiver
    sends a REMB (if ``remb``) and a receiver report each second: cumulative losses, as RTCP counts
    them, over packets of 1200 bytes, with ``random_loss`` of what fits lost as well (radio)."""

    def __init__(
        self, capacity: float, start: float | None = None, remb: bool = True, random_loss: float = 0.0
    ) -> None:
        self.capacity, self.sends_remb, self.random_loss = capacity, remb, random_loss
        self.estimate: float | None = start
        self.highest_seq, self.lost = 0, 0.0
        self._started = start is None  # (a given start is the first estimate sent)

    def carry(self, sent_bps: float) -> None:
        """One second of ``sent_bps`` through the link: count the packets and the losses."""
        packets = round(sent_bps / 8 / 1200)
        dropped = max(0.0, 1.0 - self.capacity / sent_bps) if sent_bps > 0 else 0.0
        self.highest_seq += packets
        self.lost += packets * (dropped + (1.0 - dropped) * self.random_loss)

    def remb(self, sent_bps: float) -> int:
        arriving = min(sent_bps, self.capacity)
        if not self._started and self.estimate is not None:
            self._started = True
        elif sent_bps > self.capacity:
            self.estimate = 0.85 * arriving
        elif self.estimate is None:
            self.estimate = arriving
        else:
            self.estimate = max(self.estimate, min(1.08 * self.estimate, 1.5 * arriving + 10_000))
        return int(self.estimate)


class Policer(Link):
    """A link that drops what exceeds ``capacity`` without queueing it first (a token-bucket
    policer): the delay-based estimate never sees it full and never falls; the losses show only in
    the receiver reports."""

    def remb(self, sent_bps: float) -> int:
        return super().remb(min(sent_bps, self.capacity))


def _drive(
    peer: PeerBitrate, clock: Clock, link: Link, seconds: float, content_bps: float = 900_000
) -> list[int]:
    """Send ``seconds`` of pictures (each stream sends what the content needs, at most its rate),
    then each second the link's REMB and receiver report; returns the peer's rate each second."""
    rates = []
    for second in range(int(seconds)):
        sent_bits = 0.0
        for _ in range(FPS):
            bps = min(content_bps, peer.bitrate)
            peer.sent(int(bps / FPS / 8))
            sent_bits += bps / FPS
            clock.now += 1.0 / FPS
        link.carry(sent_bits)
        if link.sends_remb:
            peer.estimate(link.remb(sent_bits))
        peer.report(link.highest_seq, int(link.lost))
        rates.append(peer.bitrate)
    return rates


def test_a_healthy_link_keeps_the_top_rate() -> None:
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Link(capacity=20_000_000), seconds=120)
    assert set(rates) == {BITRATES[0]} and peer.steps_down == 0
    assert peer.estimate_bps is not None and peer.estimate_bps > BITRATES[0]


def test_no_estimate_keeps_the_top_rate() -> None:
    clock = Clock()
    peer = PeerBitrate(clock)
    for _ in range(10 * FPS):
        peer.sent(4000)
        clock.now += 1.0 / FPS
    assert peer.bitrate == BITRATES[0] and peer.summary()["estimate_bps"] is None
    assert peer.summary()["sent_bps"] == pytest.approx(4000 * 8 * FPS, rel=0.05)


def test_a_slow_link_steps_down_at_once_and_probes_up_ever_less_often() -> None:
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Link(capacity=450_000, start=600_000), seconds=300)
    # the second estimate, which falls (the first has no trend), goes straight to a rate that fits,
    # without waiting for a whole window of what was sent
    first_low = next(i for i, r in enumerate(rates) if r < BITRATES[0])
    assert first_low == 1 and rates[first_low] <= 450_000, rates[:5]
    # it then sits at the highest rate that fits, probing the next one up ever less often
    assert sum(r == 350_000 for r in rates[first_low:]) >= 0.9 * len(rates[first_low:])
    probes = [i for i in range(1, len(rates)) if rates[i] > rates[i - 1]]
    assert 2 <= len(probes) <= 8, probes  # (in 300 s; each overfills the link for one estimate)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps == sorted(gaps) and gaps[-1] >= bitrate.MAX_PROBE_WAIT_S, gaps
    assert max(rates[first_low:]) <= 500_000  # never back to the top on this link
    # a failed probe is taken back at the first estimate that falls under it, not a window later
    assert all(rates[i + 1] < rates[i] for i in probes if i + 1 < len(rates)), probes


def test_the_rate_follows_a_link_that_narrows_and_recovers() -> None:
    clock = Clock()
    peer, link = PeerBitrate(clock), Link(capacity=20_000_000)
    assert set(_drive(peer, clock, link, seconds=30)) == {BITRATES[0]}
    link.capacity = 300_000
    narrow = _drive(peer, clock, link, seconds=30)
    assert narrow[math.ceil(bitrate.RATE_WINDOW_S) + 1 :].count(250_000) >= 20, narrow
    link.capacity = 20_000_000
    recovered = _drive(peer, clock, link, seconds=90)
    # one step at a time, each after a wait with room (longer at first: probes failed on the narrow
    # link, and a probe that holds sets the wait back)
    back = recovered.index(BITRATES[0])
    assert 4 * bitrate.PROBE_AFTER_S <= back <= 60, recovered
    assert recovered[back:] == [BITRATES[0]] * len(recovered[back:])


def test_a_new_peers_estimate_starting_low_is_not_taken_for_a_slow_link() -> None:
    """Chromium's estimate starts near 300 kbit/s and climbs while the top rate goes out: on a
    healthy link that is a rising estimate, not a full one. On a slow link it stops rising."""
    clock = Clock()
    peer = PeerBitrate(clock)
    for _ in range(FPS // 2):  # its first estimate comes 1.5 s after the start, as Chromium's did
        peer.sent(int(BITRATES[0] / FPS / 8))
        clock.now += 1.0 / FPS
    rates = _drive(peer, clock, Link(capacity=20_000_000, start=300_000), seconds=40)
    assert set(rates) == {BITRATES[0]} and peer.steps_down == 0
    assert peer.estimate_bps is not None and peer.estimate_bps > BITRATES[0]  # (it climbed past it)
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Link(capacity=450_000, start=300_000), seconds=10)
    # its estimate rises from the start and then holds below what is sent: with packets lost, that
    # is a full link too (the losses step it down first, the held estimate the rest of the way)
    assert rates[6] <= 450_000, rates


def test_an_estimate_held_steady_with_nothing_lost_is_not_a_full_link() -> None:
    """aiortc's estimator on a busy machine held a healthy loopback link's estimate at 450 kbit/s
    for seconds (packets arriving in bursts after a stall read as a link with room to spare) while
    the avatar began to move and the stream climbed past it: with nothing lost that is no sign of a
    full link. The same hold after a fall is one."""
    clock = Clock()
    peer = PeerBitrate(clock)
    link = Link(capacity=20_000_000)
    for _ in range(20):  # 20 s of pictures at 1 Mbit/s, the estimate held at 450 kbit/s
        for _ in range(FPS):
            peer.sent(int(BITRATES[0] / FPS / 8))
            clock.now += 1.0 / FPS
        link.carry(BITRATES[0])
        peer.estimate(450_000)
        peer.report(link.highest_seq, int(link.lost))
    assert peer.bitrate == BITRATES[0] and peer.steps_down == 0 and peer.loss == 0.0
    peer.estimate(440_000)  # a fall: now it is
    assert peer.bitrate == 350_000 and peer.steps_down == 1


def test_content_that_needs_little_is_not_taken_for_a_slow_link() -> None:
    """A still avatar sends far below its rate; the estimate then sits at 1.5 x that. When it starts
    to move, what is sent jumps over the estimate, which climbs after it: a rising estimate is not
    a full link, so the rate stays."""
    clock = Clock()
    peer, link = PeerBitrate(clock), Link(capacity=20_000_000)
    still = _drive(peer, clock, link, seconds=60, content_bps=120_000)
    assert peer.estimate_bps is not None and peer.estimate_bps < 0.3 * BITRATES[0]
    moving = _drive(peer, clock, link, seconds=30, content_bps=900_000)
    assert set(still + moving) == {BITRATES[0]} and peer.steps_down == 0


def test_a_link_that_drops_without_queueing_is_found_by_its_loss() -> None:
    """Behind a policer the delay-based estimate keeps climbing while a third of the packets are
    lost: the receiver reports' loss steps the rate down, and probes up grow rarer as they fail."""
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Policer(420_000), seconds=200)
    first_low = next(i for i, r in enumerate(rates) if r < BITRATES[0])
    assert first_low <= 2 and rates[first_low] <= 500_000, rates[:5]
    assert sum(r <= 420_000 for r in rates[first_low:]) >= 0.9 * len(rates[first_low:]), rates
    probes = [i for i in range(1, len(rates)) if rates[i] > rates[i - 1]]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert 2 <= len(probes) <= 8 and gaps == sorted(gaps), probes
    # (the estimate stays above the link: it never sees the drops)
    assert peer.steps_down_on_loss >= 2 and peer.estimate_bps is not None and peer.estimate_bps > 500_000
    assert peer.summary()["loss"] is not None


def test_a_peer_with_no_remb_follows_its_loss_both_ways() -> None:
    clock = Clock()
    peer = PeerBitrate(clock)
    policer = Policer(300_000, remb=False)
    narrow = _drive(peer, clock, policer, seconds=300)
    # down to the lowest rate within seconds, then probing the next one up ever less often
    assert narrow[10:].count(250_000) >= 0.9 * len(narrow[10:]) and max(narrow[10:]) <= 350_000, narrow
    assert peer.estimate_bps is None
    policer.capacity = 20_000_000
    recovered = _drive(peer, clock, policer, seconds=150)
    # one step at a time, each after a wait with no loss; the first after the longest wait, the
    # others after the shortest again once a probe has held
    back = recovered.index(BITRATES[0])
    assert 4 * bitrate.PROBE_AFTER_S <= back <= 100, recovered  # (253 s when a wait never went back)
    assert recovered[back:] == [BITRATES[0]] * len(recovered[back:])


def test_what_was_sent_is_counted_from_a_new_peers_first_picture_without_the_keyframe() -> None:
    """A new peer's first second of pictures is a second of its rate, however long the connection
    took to set up; right after a change the switch's keyframe does not count."""
    clock = Clock()
    peer = PeerBitrate(clock)
    clock.now += 1.5  # ICE and DTLS
    peer.sent(20_000)  # the first picture: a keyframe
    for _ in range(FPS + 3):
        clock.now += 1.0 / FPS
        peer.sent(1_000)
    assert peer.sent_bps() == pytest.approx((FPS + 3) * 1_000 * 8 / (1 + 3 / FPS), rel=0.01)
    for _ in range(2 * FPS):  # a whole window later
        clock.now += 1.0 / FPS
        peer.sent(1_000)
    peer.estimate(200_000)
    peer.estimate(150_000)  # a fall below the 240 kbit/s sent: a step down, to another stream,
    assert peer.bitrate == BITRATES[-1]  # which starts at a keyframe
    peer.sent(30_000)
    for _ in range(FPS + 3):
        clock.now += 1.0 / FPS
        peer.sent(1_000)
    assert peer.sent_bps() == pytest.approx((FPS + 3) * 1_000 * 8 / (1 + 3 / FPS), rel=0.01)


def test_loss_is_counted_across_a_wrap_of_16_bit_sequence_numbers() -> None:
    """aiortc's receiver reports give the 16-bit highest sequence number, which wraps."""
    clock = Clock()
    peer = PeerBitrate(clock)
    peer.report(65_500, 0)
    clock.now += 1.1
    peer.report(64, 30)  # 100 packets later, 30 of them lost
    assert peer.loss == pytest.approx(0.3) and peer.steps_down_on_loss == 1


def test_some_loss_below_the_threshold_keeps_the_rate() -> None:
    """A link losing 5% of its packets at random (radio, not a full link) keeps its rate."""
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Link(capacity=20_000_000, random_loss=0.05), seconds=60)
    assert set(rates) == {BITRATES[0]} and peer.loss == pytest.approx(0.05, abs=0.01)
    # ... and, below a full link, such loss holds the rate: no probe up, however much room the
    # estimate shows (each would fill the link again)
    clock = Clock()
    peer = PeerBitrate(clock)
    rates = _drive(peer, clock, Policer(420_000, random_loss=0.05), seconds=90)
    low = next(i for i, r in enumerate(rates) if r <= 420_000)
    assert rates[low:] == [350_000] * len(rates[low:]) and peer.steps_up == 0, rates


def test_resends_are_held_to_a_share_of_the_rate() -> None:
    """A NACK storm (every lost packet asked for again and again) gets a budget's worth of resends,
    refilled over time; a lower rate gets a smaller budget."""
    clock = Clock()
    peer = PeerBitrate(clock)
    per_second = bitrate.RETRANSMIT_SHARE * BITRATES[0] / 8 / bitrate.RETRANSMIT_PACKET_BYTES
    burst = [peer.may_resend() for _ in range(200)]
    assert sum(burst) == int(per_second * bitrate.RETRANSMIT_BURST_S) and not burst[-1]
    clock.now += 0.2
    assert sum(peer.may_resend() for _ in range(200)) == int(per_second * 0.2)
    assert peer.summary()["resends_allowed"] == sum(burst) + int(per_second * 0.2)
    assert peer.summary()["resends_refused"] == 400 - peer.summary()["resends_allowed"]
    clock.now += 10.0  # saved up for no longer than the burst
    assert sum(peer.may_resend() for _ in range(200)) == int(per_second * bitrate.RETRANSMIT_BURST_S)
    _drive(peer, clock, Link(capacity=100_000), seconds=8)  # a link that takes only the lowest rate
    assert peer.bitrate == BITRATES[-1]
    low = per_second * BITRATES[-1] / BITRATES[0]
    assert sum(peer.may_resend() for _ in range(200)) == int(low * bitrate.RETRANSMIT_BURST_S)


# -- the track reads REMB from aiortc's sender ----------------------------------------------------


class FakeSender:
    """What the track uses of aiortc's RTCRtpSender: its SSRC and its RTCP handler."""

    def __init__(self) -> None:
        self._ssrc = 1234
        self.handled: list[object] = []
        self.resent: list[int] = []

    async def _handle_rtcp_packet(self, packet: object) -> None:
        self.handled.append(packet)

    async def _retransmit(self, seq: int) -> None:
        self.resent.append(seq)


def _remb(bps: int, ssrcs: list[int]) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=99, media_ssrc=0, fci=pack_remb_fci(bps, ssrcs))


def _attached_track(clock: Clock) -> tuple[AvatarTrack, FakeSender, list[tuple[View, int]]]:
    """A track attached to a fake sender, its rate on ``clock``; the list gets each move of its view."""
    moved: list[tuple[View, int]] = []
    track = AvatarTrack(
        View(), PipelineStats(), lambda v, previous: CameraEncoder(), lambda v, b: moved.append((v, b))
    )
    track.link = PeerBitrate(clock)
    sender = FakeSender()
    track.attach(sender)
    return track, sender, moved


def test_the_track_hears_its_peers_remb_and_moves_the_view() -> None:
    clock = Clock()
    track, sender, moved = _attached_track(clock)
    view = track.view
    for _ in range(4 * FPS):  # 4 s of pictures at 1 Mbit/s
        track.link.sent(int(BITRATES[0] / FPS / 8))
        clock.now += 1.0 / FPS
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=99, media_ssrc=1234)

    async def main() -> None:
        await sender._handle_rtcp_packet(_remb(400_000, [777]))  # another stream's estimate
        await sender._handle_rtcp_packet(pli)
        await sender._handle_rtcp_packet(_remb(420_000, [1234]))  # the first: no trend yet
        assert moved == []
        await sender._handle_rtcp_packet(_remb(400_000, [777, 1234]))

    run(main())
    assert moved == [(view, 350_000)]
    assert len(sender.handled) == 4  # aiortc's own handling still gets every packet
    assert track.peer_stats()["bitrate"] == 350_000 and track.peer_stats()["estimate_bps"] == 400_000


def test_the_track_hears_its_peers_loss_reports_and_moves_the_view() -> None:
    """Receiver reports about the track's own stream (not another's) count its loss; a third lost
    over a second moves the view down, and aiortc's own handling still gets every report."""
    clock = Clock()
    track, sender, moved = _attached_track(clock)
    view = track.view

    def rr(ssrc: int, highest: int, lost: int) -> RtcpRrPacket:
        info = RtcpReceiverInfo(
            ssrc=ssrc, fraction_lost=0, packets_lost=lost, highest_sequence=highest, jitter=0, lsr=0, dlsr=0
        )
        return RtcpRrPacket(ssrc=99, reports=[info])

    async def main() -> None:
        await sender._handle_rtcp_packet(rr(1234, 70_000, 10))
        await sender._handle_rtcp_packet(rr(777, 5_000, 0))
        for _ in range(FPS + 1):  # a second of pictures at 1 Mbit/s
            track.link.sent(int(BITRATES[0] / FPS / 8))
            clock.now += 1.0 / FPS
        await sender._handle_rtcp_packet(rr(777, 5_100, 90))  # another stream's loss: not ours
        assert moved == [] and track.link.loss is None
        await sender._handle_rtcp_packet(rr(1234, 70_100, 43))  # 33 of the last 100 lost

    run(main())
    assert track.link.loss == pytest.approx(0.33)
    assert moved == [(view, 700_000)]  # (1 Mbit/s x (1 - 0.33 / 2) = 835 kbit/s)
    assert len(sender.handled) == 4
    stats = track.peer_stats()
    assert stats["loss"] == 0.33 and stats["steps_down_on_loss"] == 1 and stats["bitrate"] == 700_000


def test_the_track_holds_its_senders_resends_to_the_budget() -> None:
    track, sender, _ = _attached_track(Clock())

    async def main() -> None:
        for seq in range(500):  # what aiortc's NACK handler calls, once per packet asked for
            await sender._retransmit(seq)

    run(main())
    assert 0 < len(sender.resent) == track.peer_stats()["resends_allowed"] < 20
    assert sender.resent == list(range(len(sender.resent)))  # the first ones asked for went out
