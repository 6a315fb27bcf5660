"""The avatar server over loopback with real aiortc clients: pages, stats, orbiting, each viewer's
bit rate, and bad input (malformed JSON, unknown types, invalid SDP, oversize messages, clients
vanishing mid-negotiation or mid-stream): the server answers with an error where it can, frees the
session, keeps serving."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from stream_utils import REPO, http_get, run, self_signed, silhouette, silhouette_change, ws_exchange

from streamer.errors import InputError, StreamError
from streamer.stream.background import ServerThread
from streamer.stream.bitrate import BITRATES, LOSS_HIGH
from streamer.stream.client import ReceivedFrames, StreamClient
from streamer.stream.server import AvatarServer, ServerConfig

FRAMES_TIMEOUT_S = 120.0  # generous: CI machines are slow and shared


def _motion_server(body, avatar) -> ServerThread:
    """A motion-driven server (no webcam tracking: quick) on a free loopback port."""
    from streamer.tracking.demo_motion import demo_motion

    config = ServerConfig(host="127.0.0.1", port=0, size=128, fps=15.0, backend="cpu")
    return ServerThread(config, avatar=avatar, body=body, motion=demo_motion())


@pytest.fixture(scope="module")
def server(body, demo_avatar) -> Iterator[ServerThread]:
    with _motion_server(body, demo_avatar) as st:
        yield st


def _sessions(st: ServerThread) -> int:
    return st.call(lambda: len(st.server.sessions))


def _stages(st: ServerThread) -> list[str]:
    return st.call(lambda: sorted(st.server.stages))


def _wait_until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _assert_freed(st: ServerThread) -> None:
    assert _wait_until(lambda: _sessions(st) == 0 and not _stages(st)), (
        f"session not freed: {_sessions(st)} sessions, stages {_stages(st)}"
    )


async def _watch(url: str, frames: int = 5, stage: str = "main") -> StreamClient:
    client = StreamClient(url, "viewer", stage=stage, received=ReceivedFrames(keep_every=1, keep_scale=1))
    await client.connect(timeout=FRAMES_TIMEOUT_S)
    got = await client.wait_frames(frames, FRAMES_TIMEOUT_S)
    assert got >= frames, f"only {got} avatar frames arrived"
    return client


def _still_serving(st: ServerThread) -> None:
    async def main() -> None:
        client = await _watch(st.url, frames=3)
        await client.close()

    run(main())
    _assert_freed(st)


# -- serving ------------------------------------------------------------------------------------


def test_pages_and_static_modules(server: ServerThread) -> None:
    status, ctype, body = http_get(server.url + "?autostart=1")
    assert status == 200 and ctype.startswith("text/html") and b'id="avatar"' in body
    status, _, body = http_get(server.url + "view")
    assert status == 200 and b'id="avatar"' in body
    status, _, body = http_get(server.url + "xr")
    assert status == 200 and b'id="avatar"' in body and b'id="enter-vr"' in body
    for module in ("connection.js", "page.js", "performer.js", "viewer.js", "overlay.js", "xr.js", "xr-orbit.js"):
        status, ctype, _ = http_get(server.url + "web/js/" + module)
        assert (status, ctype) == (200, "text/javascript; charset=utf-8"), module
    assert http_get(server.url + "web/../../pyproject.toml")[0] == 404
    # a page with a trailing slash redirects to the page, keeping its query
    conn = http.client.HTTPConnection("127.0.0.1", server.server.port, timeout=30)
    try:
        conn.request("GET", "/view/?stage=side")
        reply = conn.getresponse()
        assert (reply.status, reply.getheader("Location")) == (308, "/view?stage=side")
    finally:
        conn.close()
    # another method is refused in words, and /stats is not served to it
    conn = http.client.HTTPConnection("127.0.0.1", server.server.port, timeout=30)
    try:
        conn.request("DELETE", "/stats")
        reply = conn.getresponse()
        assert (reply.status, reply.getheader("Allow")) == (405, "GET, HEAD")
        assert b"GET only" in reply.read()
    finally:
        conn.close()
    status, _, body = http_get(server.url + "nowhere")
    assert status == 404 and b"/view viewer" in body  # says where the pages are
    # HEAD: GET's headers, no body on the wire
    with socket.create_connection(("127.0.0.1", server.server.port), timeout=30) as sock:
        sock.sendall(b"HEAD /view HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest == b"", raw[:300]
    assert f"content-length: {len(http_get(server.url + 'view')[2])}".encode() in head.lower()


def test_viewer_gets_video_stats_and_can_orbit(server: ServerThread) -> None:
    async def main() -> None:
        front = await _watch(server.url, frames=5)
        side = await _watch(server.url, frames=5)
        assert front.received.size == (128, 128)
        assert front.joined["source"] == "motion" and front.joined["ice_servers"] == []
        # both share the stage camera until one orbits
        assert side.send_control({"type": "orbit", "azimuth": 90, "elevation": 10, "zoom": 1.2})
        start = side.received.count
        await side.wait_frames(start + 10, FRAMES_TIMEOUT_S)
        # compare the newest pictures of both peers (the demo motion keeps moving, so compare shapes
        # from the same moment: the side view of a body is much narrower than the front view)
        await asyncio.sleep(0.5)
        a, b = front.received.kept[-1].rgb, side.received.kept[-1].rgb
        assert silhouette_change(a, b) > 0.2
        # a stats message arrives on the data channel about once a second; bad control messages get errors
        assert side.send_control({"type": "orbit", "zoom": "near"})
        deadline = time.monotonic() + 30
        while (side.stats is None or not side.errors) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert side.errors and side.errors[-1]["code"] == "bad_message"
        stats = side.stats
        assert stats is not None and stats["role"] == "viewer"
        assert stats["stage"]["performer"] is False and stats["stage"]["sessions"] == 2  # as /stats says
        assert set(stats["stage"]["stages_ms"]) == {"tracking", "fit", "lbs", "render", "encode"}
        assert stats["peer"]["send_ms"]["n"] > 0 and stats["stage"]["stages_ms"]["encode"]["n"] > 0
        await front.close()
        await side.close()

    run(main())
    _assert_freed(server)


def test_stats_endpoint_reports_the_pipeline(server: ServerThread) -> None:
    async def main() -> None:
        client = await _watch(server.url, frames=20)
        status, ctype, body = http_get(server.url + "stats")
        await client.close()
        assert (status, ctype) == (200, "application/json")
        stats = json.loads(body)
        stage = stats["stages"]["main"]
        for key in ("fps", "latency_ms", "dropped_frames", "stages_ms", "waits_ms", "webcam_fps", "views"):
            assert key in stage, key
        assert stage["source"] == "motion" and stage["frames_sent"] >= 20
        assert stage["stages_ms"]["render"]["n"] > 0 and stage["stages_ms"]["lbs"]["n"] > 0
        assert (
            stage["latency_ms"]["p50"] is not None
            and stage["latency_ms"]["p95"] >= stage["latency_ms"]["p50"]
        )
        assert stats["server"]["sessions"] == 1
        assert stats["server"]["cpu_seconds"] > 0

    run(main())
    _assert_freed(server)


def test_stages_run_side_by_side(server: ServerThread) -> None:
    async def main() -> None:
        a = await _watch(server.url, frames=3, stage="a")
        b = await _watch(server.url, frames=3, stage="b")
        assert _stages(server) == ["a", "b"]
        await a.close()
        assert _wait_until(lambda: _stages(server) == ["b"])
        await b.close()

    run(main())
    _assert_freed(server)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages, code, close",
    [
        (["{not json"], "bad_json", 1008),
        (['{"type": "teleport"}'], "unknown_type", 1008),
        (['{"type": "join", "role": "admin"}'], "bad_message", 1008),
        (['{"type": "offer", "sdp": "v=0\\r\\n"}'], "bad_state", 1008),
        (['{"type": "join", "role": "viewer"}', '{"type": "join", "role": "viewer"}'], "bad_state", 1008),
        (
            ['{"type": "join", "role": "viewer"}', '{"type": "offer", "sdp": "v=0\\r\\nthis is not sdp"}'],
            "bad_sdp",
            1008,
        ),
        (
            [
                '{"type": "join", "role": "viewer"}',
                '{"type": "offer", "sdp": "v=0\\r\\no=- 1 1 IN IP4 0.0.0.0\\r\\ns=-\\r\\nt=0 0\\r\\n"}',
            ],
            "bad_sdp",
            1008,
        ),
        (
            [
                '{"type": "join", "role": "viewer"}',
                '{"type": "offer", "sdp": "v=0\\r\\nthis is garbage\\r\\nm=video x y z\\r\\n"}',
            ],
            "bad_sdp",
            1008,
        ),
        ([json.dumps({"type": "offer", "sdp": "v=0" + "x" * 100_000})], "too_large", 1009),
    ],
    ids=[
        "malformed-json",
        "unknown-type",
        "bad-role",
        "offer-before-join",
        "second-join",
        "invalid-sdp",
        "sdp-without-video",
        "sdp-parser-assert",
        "oversize",
    ],
)
def test_bad_messages_get_an_error_and_free_the_session(server: ServerThread, messages, code, close) -> None:
    replies, close_code = run(ws_exchange(server.url, messages))
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and errors[-1]["code"] == code, replies
    assert not errors[-1]["message"].rstrip().endswith(":"), errors  # it says what is wrong
    assert errors[-1]["message"]
    assert close_code == close
    _assert_freed(server)
    _still_serving(server)


def test_the_answer_takes_the_offers_first_of_vp8_and_h264(server: ServerThread) -> None:
    """A client that decodes only H.264 (hardware decoders, some video-call software), or lists it
    first (the web page's ``?codec=h264``), gets the avatar as H.264; one that lists VP8 first
    (aiortc's and Chromium's order) gets VP8. One encode of the camera per codec."""
    async def main() -> None:
        clients = {
            "video/VP8": StreamClient(server.url, "viewer", received=ReceivedFrames(keep_every=1)),
            "video/H264": StreamClient(
                server.url, "viewer", codecs=("video/H264",), received=ReceivedFrames(keep_every=1)
            ),
        }
        h264_first = StreamClient(server.url, "viewer", codecs=("video/H264", "video/VP8"))
        for client in (*clients.values(), h264_first):
            await client.connect(timeout=FRAMES_TIMEOUT_S)
        for mime, client in (*clients.items(), ("video/H264", h264_first)):
            assert client.video_codec == mime
            assert await client.wait_frames(20, FRAMES_TIMEOUT_S) >= 20  # aiortc decoded them
        assert clients["video/H264"].received.size == (128, 128)
        stage = server.call(lambda: server.server.stages["main"].stage)
        # one encode of the camera per codec and bit rate in use (a peer's link could call for a
        # lower one), however many peers take it
        streams = server.call(stage.streams)
        assert {s["codec"] for s in streams} == {"video/H264", "video/VP8"}
        assert len(streams) == len({(s["codec"], s["bitrate"]) for s in streams}), streams
        # the same avatar: both streams show a body of about the same size (averaged over the
        # pictures each got, so that a decoder a few frames behind the other does not matter)
        a, b = (np.mean([silhouette(f.rgb).mean() for f in c.received.kept]) for c in clients.values())
        assert a > 0.05 and abs(a - b) < 0.05, (a, b)
        for client in (*clients.values(), h264_first):
            await client.close()

    run(main())
    _assert_freed(server)


def test_without_libx264_h264_is_neither_answered_nor_named(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PyAV built without libx264: a client that lists H.264 first gets VP8 (not a black stream in
    a codec the server cannot encode), and one that offers only H.264 is refused in words."""
    import av

    from streamer.stream.camera_encoder import H264, CameraEncoder

    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libx264"})
    with pytest.raises(ValueError, match="this PyAV's"):
        CameraEncoder(codec=H264)

    async def main() -> None:
        client = StreamClient(server.url, "viewer", codecs=("video/H264", "video/VP8"))
        await client.connect(timeout=FRAMES_TIMEOUT_S)
        assert client.video_codec == "video/VP8"
        assert await client.wait_frames(5, FRAMES_TIMEOUT_S) >= 5
        await client.close()
        only = StreamClient(server.url, "viewer", codecs=("video/H264",))
        with pytest.raises(StreamError, match="bad_sdp"):
            await only.connect(timeout=FRAMES_TIMEOUT_S)
        await only.close()
        assert only.errors and "H.264" not in only.errors[-1]["message"], only.errors

    run(main())
    _assert_freed(server)


def test_an_answer_in_a_codec_the_server_does_not_encode_is_an_error() -> None:
    """The stage must never be given a codec it cannot encode: the answer's first codec is checked
    (aiortc follows our preferences today; this guards the day it does not)."""
    from aiortc import RTCPeerConnection

    from streamer.errors import SignallingError
    from streamer.stream.session import _answer_codec

    async def description() -> tuple[str, str]:
        pc = RTCPeerConnection()
        try:
            video = pc.addTransceiver("video", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp, video.mid
        finally:
            await pc.close()

    sdp, mid = run(description())
    assert _answer_codec(sdp, mid) == "video/VP8"  # aiortc lists VP8 first
    with pytest.raises(SignallingError, match="chose video/VP9, which this server does not encode"):
        _answer_codec(sdp.replace("VP8/90000", "VP9/90000"), mid)
    with pytest.raises(SignallingError, match="no video section"):
        _answer_codec(sdp, "not-a-mid")


def test_client_codecs_are_checked_and_spelled_as_aiortc_does() -> None:
    client = StreamClient("http://127.0.0.1:9/", "viewer", codecs=("video/h264", "VIDEO/vp8"))
    assert client.codecs == ("video/H264", "video/VP8")
    assert StreamClient("http://127.0.0.1:9/", "viewer", codecs="video/h264").codecs == ("video/H264",)
    for bad in (("video/VP9",), (), ("video/rtx",)):
        with pytest.raises(ValueError, match="video codecs must be some of"):
            StreamClient("http://127.0.0.1:9/", "viewer", codecs=bad)


def test_offer_without_vp8_or_h264_is_refused_with_a_reason(server: ServerThread) -> None:
    """An offer whose video section has neither codec (here VP9 and AV1 only) is refused in words."""
    from aiortc import RTCPeerConnection

    async def offer() -> str:
        pc = RTCPeerConnection()
        try:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
            return sdp.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000")
        finally:
            await pc.close()

    sdp = run(offer())
    assert "VP9" in sdp and "VP8" not in sdp and "H264" not in sdp
    messages = ['{"type": "join", "role": "viewer"}', json.dumps({"type": "offer", "sdp": sdp})]
    replies, close_code = run(ws_exchange(server.url, messages))
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and errors[-1]["code"] == "bad_sdp", replies
    assert "VP8" in errors[-1]["message"] and "H.264 constrained baseline" in errors[-1]["message"], replies
    assert close_code == 1008
    _assert_freed(server)
    _still_serving(server)


class SlowLinkEstimate:
    """Stands in for aiortc's receive-side estimator in a client: a link that carries ``bps``,
    reported in a REMB once a second. The first says 300 kbit/s (where Chromium's estimates start),
    the later ones ``bps``: a fall on a slow link, as a real estimator's, and a rise on a fast one."""

    def __init__(self, bps: int) -> None:
        self.bps, self.first = bps, 300_000
        self._last = 0.0

    def add(
        self, abs_send_time: int, arrival_time_ms: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        now = time.monotonic()
        if now - self._last < 1.0:
            return None
        self._last = now
        first, self.first = self.first, None
        return first or self.bps, [ssrc]


def test_a_viewer_on_a_slow_link_gets_a_smaller_stream_of_its_own(server: ServerThread) -> None:
    async def main() -> None:
        fast = StreamClient(server.url, "viewer", stage="links")
        slow = StreamClient(server.url, "viewer", stage="links")
        try:
            for client in (fast, slow):
                await client.connect(timeout=120)
            # The slow link carries less than even this 128-pixel stream: that viewer goes to the lowest
            # rate. (aiortc's own estimator over loopback could take a busy machine's stalls for a full link.)
            for client, bps in ((fast, 5_000_000), (slow, 50_000)):
                (receiver,) = client.pc.getReceivers()
                receiver._RTCRtpReceiver__remote_bitrate_estimator = SlowLinkEstimate(bps)
            stage = server.call(lambda: server.server.stages["links"].stage)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                streams = server.call(stage.streams)
                if {s["bitrate"] for s in streams} == {BITRATES[0], 250_000}:
                    break
                await asyncio.sleep(0.2)
            assert sorted(s["bitrate"] for s in streams) == [250_000, BITRATES[0]], streams
            # the slow viewer's pictures now come from the smaller stream, and keep coming
            before = slow.received.count
            assert await slow.wait_frames(before + 10, 60) >= before + 10
            before = fast.received.count
            assert await fast.wait_frames(before + 10, 60) >= before + 10
            assert await fast.fresh_stats(30) and await slow.fresh_stats(30)
            assert slow.stats["peer"]["bitrate"] == 250_000 and slow.stats["peer"]["steps_down"] == 1
            assert slow.stats["peer"]["estimate_bps"] == 50_000
            assert fast.stats["peer"]["bitrate"] == BITRATES[0] and fast.stats["peer"]["steps_down"] == 0
            assert sorted(s["bitrate"] for s in slow.stats["stage"]["streams"]) == [250_000, BITRATES[0]]
        finally:
            for client in (fast, slow):
                await client.close()

    run(main())


def test_a_lossy_viewers_resend_requests_go_through_its_budget(server: ServerThread) -> None:
    """A viewer that loses every third packet asks for them again (RTCP NACK, from aiortc's own
    receiver); the server's sender resends them through the peer's budget, and the video goes on.
    The viewer's receiver reports count the loss, and the peer steps down on it."""

    async def main() -> None:
        client = StreamClient(server.url, "viewer", stage="lossy")
        try:
            await client.connect(timeout=120)
            (receiver,) = client.pc.getReceivers()
            handle, arrived = receiver._handle_rtp_packet, itertools.count()

            async def lose_every_third(packet, arrival_time_ms: int) -> None:  # type: ignore[no-untyped-def]
                if next(arrived) % 3 != 2:
                    await handle(packet, arrival_time_ms=arrival_time_ms)

            receiver._handle_rtp_packet = lose_every_third
            before = client.received.count
            assert await client.wait_frames(before + 20, 60) >= before + 20  # recovered, and on it goes
            entry = server.call(lambda: server.server.stages["lossy"])
            (session,) = server.call(lambda: list(entry.sessions))
            link = session.track.link
            deadline = time.monotonic() + 30
            while (link.resends_allowed == 0 or link.steps_down_on_loss == 0) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert link.resends_allowed > 0
            assert link.steps_down_on_loss > 0 and link.bitrate < BITRATES[0], link.summary()
            assert await client.fresh_stats(30)
            assert client.stats["peer"]["loss"] > LOSS_HIGH and client.stats["peer"]["steps_down_on_loss"] > 0
            before = client.received.count
            assert await client.wait_frames(before + 10, 60) >= before + 10  # on the smaller stream
        finally:
            await client.close()

    run(main())


def test_message_beyond_the_websocket_limit_closes_with_1009(server: ServerThread) -> None:
    replies, close_code = run(ws_exchange(server.url, ["x" * (2 * 1024 * 1024)]))
    assert replies == [] and close_code == 1009
    _assert_freed(server)
    _still_serving(server)


def test_client_vanishing_mid_negotiation_is_freed(server: ServerThread) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from websockets.asyncio.client import connect

    from streamer.stream.client import ws_url

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        ws = await connect(ws_url(server.url))
        await ws.send(json.dumps({"type": "join", "role": "performer"}))
        await ws.recv()
        await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
        await ws.close()  # gone before the answer
        await pc.close()

    run(main())
    _assert_freed(server)
    _still_serving(server)


def test_client_vanishing_mid_stream_is_freed(server: ServerThread) -> None:
    async def main() -> None:
        client = await _watch(server.url, frames=5)
        other = await _watch(server.url, frames=5)
        # drop the signalling socket's TCP connection without a closing handshake, and the peer
        # connection with it: the server must notice and free that session, and only that one
        client.ws.transport.abort()
        await client.pc.close()
        client.pc = client.ws = None
        assert await asyncio.to_thread(_wait_until, lambda: _sessions(server) == 1)
        count = other.received.count
        assert await other.wait_frames(count + 5, FRAMES_TIMEOUT_S) >= count + 5
        await other.close()

    run(main())
    _assert_freed(server)


def test_new_performer_replaces_the_old_one(server: ServerThread) -> None:
    async def main() -> None:
        first = StreamClient(server.url, "performer")
        await first.connect(timeout=FRAMES_TIMEOUT_S)
        second = StreamClient(server.url, "performer")
        await second.connect(timeout=FRAMES_TIMEOUT_S)
        deadline = time.monotonic() + 30
        while not first.errors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert first.errors and first.errors[0]["code"] == "replaced"
        assert await second.wait_frames(3, FRAMES_TIMEOUT_S) >= 3
        await first.close()
        await second.close()

    run(main())
    _assert_freed(server)


def test_a_replaced_performer_no_longer_feeds_the_tracker(body, demo_avatar, monkeypatch) -> None:
    """While the old performer's session is still closing, its webcam frames keep arriving; only
    the stage's performer feeds the tracker (else two people alternate in one avatar), and the fit
    starts afresh for the new one."""
    import fractions

    import av
    from aiortc.mediastreams import VideoStreamTrack

    from streamer.stream.pose_source import TrackingPoseSource
    from streamer.stream.session import Session

    class Flat(VideoStreamTrack):  # a webcam of a given size
        def __init__(self, width: int) -> None:
            super().__init__()
            self.width = width

        async def recv(self):  # type: ignore[no-untyped-def]
            pts, time_base = await self.next_timestamp()
            frame = av.VideoFrame.from_ndarray(np.full((96, self.width, 3), 90, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, fractions.Fraction(time_base)
            return frame

    fed: list[int] = []
    real_feed, real_reset = TrackingPoseSource.feed, TrackingPoseSource.new_performer
    resets: list[int] = []
    monkeypatch.setattr(TrackingPoseSource, "feed", lambda self, f, t: (fed.append(f.width), real_feed(self, f, t)))
    monkeypatch.setattr(TrackingPoseSource, "new_performer", lambda self: (resets.append(1), real_reset(self)))
    real_replace = Session.replace

    async def slow_replace(self: Session) -> None:  # the old session takes a while to close
        await asyncio.sleep(2.0)
        await real_replace(self)

    monkeypatch.setattr(Session, "replace", slow_replace)
    config = ServerConfig(host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu")  # a webcam stage
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        async def main() -> None:
            first = StreamClient(st.url, "performer", source=Flat(128))
            await first.connect(timeout=FRAMES_TIMEOUT_S)
            await asyncio.to_thread(_wait_until, lambda: 128 in fed)
            second = StreamClient(st.url, "performer", source=Flat(160))
            await second.connect(timeout=FRAMES_TIMEOUT_S)
            switched = len(fed)
            await asyncio.to_thread(_wait_until, lambda: first.errors)  # replaced, 2 s later
            assert first.errors[0]["code"] == "replaced"
            assert fed[switched:] and set(fed[switched:]) == {160}, fed[switched:]
            await first.close()
            await second.close()

        run(main())
        assert len(resets) == 2  # each performer's arrival
        _assert_freed(st)


def test_with_a_performer_key_only_its_holders_perform(body, demo_avatar) -> None:
    """``--performer-key``: a performer without the key, or with a wrong one, is refused in words
    (``forbidden``) and does not take the stage from the one who has it; viewers need no key."""
    config = ServerConfig(
        host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu", motion="demo", performer_key="s3cret key"
    )
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        async def main() -> None:
            holder = StreamClient(st.url, "performer", key="s3cret key")
            await holder.connect(timeout=FRAMES_TIMEOUT_S)
            assert await holder.wait_frames(3, FRAMES_TIMEOUT_S) >= 3
            for key in (None, "s3cret", "s3cret key!"):
                intruder = StreamClient(st.url, "performer", key=key)
                with pytest.raises(StreamError, match="forbidden: .*performer key"):
                    await intruder.connect(timeout=FRAMES_TIMEOUT_S)
                await intruder.close()
            viewer = await _watch(st.url, frames=3)
            before = holder.received.count
            assert await holder.wait_frames(before + 5, FRAMES_TIMEOUT_S) >= before + 5  # still its stage
            assert holder.errors == [] and _wait_until(lambda: _sessions(st) == 2)
            await viewer.close()
            await holder.close()

        run(main())
        _assert_freed(st)
        headers = urllib.request.urlopen(st.url, timeout=30).headers  # the page's URL carries the key:
        assert headers["Referrer-Policy"] == "no-referrer"  # its links must not pass it on


def test_others_filling_the_server_do_not_lock_the_key_holder_out(body, demo_avatar) -> None:
    """With a performer key, sessions and stages beyond the limits are kept for key holders: a
    viewer that took the only stage and the only session does not keep the performer out."""
    config = ServerConfig(
        host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu", motion="demo",
        max_stages=1, max_sessions=1, performer_key="k",
    )  # fmt: skip
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        async def main() -> None:
            squatter = await _watch(st.url, frames=1, stage="squat")
            holder = StreamClient(st.url, "performer", stage="main", key="k")
            await holder.connect(timeout=FRAMES_TIMEOUT_S)
            assert await holder.wait_frames(3, FRAMES_TIMEOUT_S) >= 3
            late = StreamClient(st.url, "viewer", stage="main")
            with pytest.raises(StreamError, match="busy"):
                await late.connect(timeout=FRAMES_TIMEOUT_S)
            for client in (late, holder, squatter):
                await client.close()

        run(main())
        _assert_freed(st)


def test_a_control_message_that_fails_gets_an_error_and_the_video_goes_on(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while handling a data-channel message must not escape into aiortc's receive loop
    (which would end the peer connection)."""
    from streamer.stream.stage import Stage

    def broken(self, view, orbit) -> None:
        raise RuntimeError("orbit handling broke")

    async def main() -> None:
        client = await _watch(server.url, frames=3)
        monkeypatch.setattr(Stage, "set_orbit", broken)
        assert client.send_control({"type": "orbit", "azimuth": 30})
        deadline = time.monotonic() + 30
        while not client.errors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.errors and client.errors[-1]["code"] == "internal", client.errors
        assert "orbit handling broke" in client.errors[-1]["message"]
        count = client.received.count
        assert await client.wait_frames(count + 5, FRAMES_TIMEOUT_S) >= count + 5
        assert client.pc.connectionState == "connected"
        await client.close()

    run(main())
    _assert_freed(server)


def test_a_stats_request_while_an_answer_is_on_its_way_shares_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy event loop runs the gap's timer late; a request handled before it found the gap over
    and was answered at once, and the timer answered again milliseconds later (the flood test below
    caught it on a loaded machine)."""
    from types import SimpleNamespace

    from streamer.stream import session
    from streamer.stream.session import Session

    now = [100.0]
    monkeypatch.setattr(session, "time", SimpleNamespace(monotonic=lambda: now[0]))

    async def main() -> None:
        s = Session(None, None)  # type: ignore[arg-type]  # (no server or socket: only the stats logic)
        sent: list[str] = []
        monkeypatch.setattr(s, "_stats_message", lambda: "stats")
        monkeypatch.setattr(s, "_send_control", sent.append)
        s._stats_requested()
        assert sent == ["stats"]  # the first is answered at once
        now[0] += 0.05
        s._stats_requested()  # within the gap: answered when it has passed
        assert sent == ["stats"]
        now[0] += 1.0  # the loop was busy: the gap is over, the timer has not run yet
        s._stats_requested()
        assert sent == ["stats"]  # it shares the answer on its way
        await asyncio.sleep(session.STATS_MIN_GAP_S + 0.1)
        assert sent == ["stats", "stats"]

    asyncio.run(main())


def test_a_flood_of_stats_requests_is_answered_at_a_bounded_rate(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stats snapshot sorts every timing window on the event loop: 200 requests at once get a
    few answers (one now, one when STATS_MIN_GAP_S has passed), not 200; a request still gets one."""
    from streamer.stream import session
    from streamer.stream.session import Session

    snapshots: list[float] = []
    real = Session._stats_message
    monkeypatch.setattr(Session, "_stats_message", lambda self: (snapshots.append(time.monotonic()), real(self))[1])
    monkeypatch.setattr(session, "STATS_INTERVAL_S", 3600.0)  # no pushes in between (for new sessions)

    async def main() -> None:
        client = await _watch(server.url, frames=3, stage="flood")
        snapshots.clear()
        t = time.monotonic()
        for _ in range(200):
            assert client.send_control({"type": "stats"})
        await asyncio.sleep(1.0)
        # at most one answer per gap, however the 200 arrive (spread out on a busy machine)
        assert 1 <= len(snapshots) <= 1 + round(1.0 / session.STATS_MIN_GAP_S) + 1, len(snapshots)
        assert all(b - a >= session.STATS_MIN_GAP_S - 0.01 for a, b in itertools.pairwise(snapshots)), snapshots
        assert snapshots[0] - t < 1.0
        assert await client.fresh_stats(30)  # a later request is answered
        await client.close()

    run(main())
    _assert_freed(server)


def test_a_client_that_never_offers_is_timed_out(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.stream import session

    monkeypatch.setattr(session, "OFFER_TIMEOUT_S", 5.0)  # counted from connecting: the join's new stage inside
    replies, close_code = run(ws_exchange(server.url, ['{"type": "join", "role": "viewer", "stage": "idle"}']))
    assert [r["type"] for r in replies] == ["joined", "error"], replies
    assert replies[-1]["code"] == "timeout" and close_code == 1008
    _assert_freed(server)  # the stage it held is stopped
    _still_serving(server)


def test_idle_sockets_cannot_lock_clients_out(body, demo_avatar, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets that never join count against no limit: beyond MAX_UNJOINED the oldest is closed to
    make room, and each is refused after JOIN_TIMEOUT_S, so squatters cannot keep a viewer out of a
    server whose session limit they would otherwise fill."""
    from websockets.asyncio.client import connect

    from streamer.stream import server as server_module
    from streamer.stream import session
    from streamer.stream.client import ws_url

    monkeypatch.setattr(server_module, "MAX_UNJOINED", 3)
    monkeypatch.setattr(session, "JOIN_TIMEOUT_S", 600.0)  # first, only room-making closes them
    config = ServerConfig(
        host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu", motion="demo", max_sessions=2,
    )  # fmt: skip
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        async def main() -> None:
            squatters = [await connect(ws_url(st.url)) for _ in range(5)]  # more than the session limit
            viewer = await _watch(st.url, frames=3)  # joins: the oldest idle socket made room for it
            # the 4th and 5th squatters and the viewer each closed the oldest idle socket
            closed = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for ws in squatters[:3]]
            assert [m["code"] for m in closed] == ["busy"] * 3, closed
            assert "a client must join as soon as it connects" in closed[0]["message"]
            for ws in squatters:
                await ws.close()
            await viewer.close()

        run(main())
        monkeypatch.setattr(session, "JOIN_TIMEOUT_S", 1.0)
        t = time.monotonic()
        replies, code = run(ws_exchange(st.url, []))  # connects and says nothing
        assert replies[-1]["code"] == "timeout" and "no join within 1 s" in replies[-1]["message"], replies
        assert code == 1008 and time.monotonic() - t < 30.0
        _assert_freed(st)


def test_a_client_that_takes_its_answer_but_never_connects_is_timed_out(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It never starts ICE (a client that died between answer and connection, or a broken one): the
    session and its stage are freed after CONNECT_TIMEOUT_S, not after aiortc's minute of checks."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from streamer.stream import session

    monkeypatch.setattr(session, "CONNECT_TIMEOUT_S", 2.0)

    async def main() -> tuple[list[dict], int | None, float]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        join = json.dumps({"type": "join", "role": "viewer", "stage": "mute"})
        offer = json.dumps({"type": "offer", "sdp": pc.localDescription.sdp})
        t = time.monotonic()
        replies, code = await ws_exchange(server.url, [join, offer])  # the answer is never used
        await pc.close()
        return replies, code, time.monotonic() - t

    replies, close_code, seconds = run(main())
    assert [r["type"] for r in replies] == ["joined", "answer", "error"], replies
    assert replies[-1]["code"] == "timeout" and "media connection" in replies[-1]["message"]
    assert close_code == 1008 and 2.0 <= seconds < 60.0  # not aiortc's minute and more
    _assert_freed(server)
    _still_serving(server)


def test_a_connected_viewer_outlives_the_connect_timeout(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout is for connections that never came up: one that did keeps streaming past it."""
    from streamer.stream import session

    monkeypatch.setattr(session, "CONNECT_TIMEOUT_S", 5.0)  # long enough to connect on a busy machine

    async def main() -> None:
        client = await _watch(server.url, frames=3)
        await asyncio.sleep(6.0)  # the timeout has come and gone
        count = client.received.count
        assert await client.wait_frames(count + 5, FRAMES_TIMEOUT_S) >= count + 5
        assert not client.errors and client.pc.connectionState == "connected", client.errors
        await client.close()

    run(main())
    _assert_freed(server)


def test_performer_replaced_mid_negotiation_leaves_no_view(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old performer's offer is still being read (its candidates resolving) when a new one takes
    the stage: the old one must not add a view to the stage afterwards."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from websockets.asyncio.client import connect

    from streamer.stream.client import ws_url

    original = RTCPeerConnection.setRemoteDescription

    async def slow(self, description):  # an offer whose reading ends a second late (as when
        # aiortc resolves a browser's mDNS candidate: it finishes even if the connection closed meanwhile)
        done = await original(self, description)
        if "a=x-test-slow" in description.sdp:
            await asyncio.sleep(1.0)
        return done

    monkeypatch.setattr(RTCPeerConnection, "setRemoteDescription", slow)

    async def main() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp.replace("t=0 0\r\n", "t=0 0\r\na=x-test-slow\r\n", 1)
        async with connect(ws_url(server.url)) as old:
            await old.send(json.dumps({"type": "join", "role": "performer", "stage": "swap"}))
            await old.recv()
            await old.send(json.dumps({"type": "offer", "sdp": sdp}))
            await asyncio.sleep(0.3)
            new = StreamClient(server.url, "performer", stage="swap")
            await new.connect(timeout=FRAMES_TIMEOUT_S)
            assert await new.wait_frames(3, FRAMES_TIMEOUT_S) >= 3
            await asyncio.sleep(1.5)  # the old offer has been read by now
            views = server.call(lambda: server.server.stages["swap"].stage.view_count)
            assert views == 1, f"{views} views on a stage with one performer"
            await new.close()
        await pc.close()

    run(main())
    _assert_freed(server)


def test_a_stuck_old_performer_does_not_hold_up_the_new_one(
    body, demo_avatar, monkeypatch: pytest.MonkeyPatch
) -> None:
    from websockets.asyncio.client import connect

    from streamer.stream import server as server_module
    from streamer.stream.client import ws_url

    # closing the stuck client's websocket now takes a minute: the new performer must not wait for it
    monkeypatch.setattr(server_module, "WS_CLOSE_TIMEOUT_S", 60.0)

    async def main(server: ServerThread) -> None:
        async with connect(ws_url(server.url), close_timeout=1) as old:
            await old.send(json.dumps({"type": "join", "role": "performer", "stage": "stuck"}))
            await old.recv()
            old.transport.pause_reading()  # it stops answering, closing handshake included
            new = StreamClient(server.url, "performer", stage="stuck")
            t = time.monotonic()
            await new.connect(timeout=FRAMES_TIMEOUT_S)
            assert time.monotonic() - t < 30.0
            await new.close()
            old.transport.resume_reading()

    with _motion_server(body, demo_avatar) as server:
        run(main(server))
        _assert_freed(server)


def test_a_picture_that_fails_to_encode_is_skipped_and_a_failing_stream_ends_the_session(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping the track's recv would end aiortc's sender loop: the peer's video would
    freeze for good while its session looked connected. One failed picture is skipped (the video goes
    on from the next keyframe); pictures that keep failing end the session with an error, so that
    the client reconnects, and the server serves others."""
    from streamer.stream import tracks
    from streamer.stream.camera_encoder import CameraEncoder

    real_take = CameraEncoder.take
    failures = {"left": 0}

    def flaky_take(self, frame, after):  # type: ignore[no-untyped-def]
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("the encoder fell over")
        return real_take(self, frame, after)

    monkeypatch.setattr(CameraEncoder, "take", flaky_take)
    monkeypatch.setattr(tracks, "MAX_FAILED_PICTURES", 5)

    async def main() -> None:
        client = await _watch(server.url, frames=3, stage="flaky")
        failures["left"] = 1
        count = client.received.count
        assert await client.wait_frames(count + 10, FRAMES_TIMEOUT_S) >= count + 10  # not frozen
        assert not client.errors
        failures["left"] = 10**9
        deadline = time.monotonic() + FRAMES_TIMEOUT_S
        while not client.errors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.errors and client.errors[-1]["code"] == "internal", client.errors
        assert "the avatar video failed (the encoder fell over)" in client.errors[-1]["message"]
        failures["left"] = 0
        await client.close()

    run(main())
    _assert_freed(server)
    _still_serving(server)


def test_a_half_open_connection_does_not_hold_up_shutdown(body, demo_avatar) -> None:
    """Browsers open spare connections ahead of use; one that never finishes its request must not
    hold Ctrl+C for websockets' 10 s handshake timeout."""
    with _motion_server(body, demo_avatar) as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as half_open:
            half_open.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and nothing more
            time.sleep(0.2)
            t = time.monotonic()
            server.stop()
            assert time.monotonic() - t < 5.0


def test_a_viewer_sending_video_is_answered_sendonly(server: ServerThread) -> None:
    """Only a performer's webcam is of use: a viewer that offers to send video (any aiortc or browser
    client can) gets a sendonly answer, so the server neither receives nor decodes it."""
    from aiortc.mediastreams import VideoStreamTrack

    async def main() -> None:
        client = StreamClient(server.url, "viewer", stage="pushy", source=VideoStreamTrack())
        await client.connect(timeout=FRAMES_TIMEOUT_S)
        assert await client.wait_frames(3, FRAMES_TIMEOUT_S) >= 3  # the avatar still comes
        answer = client.pc.remoteDescription.sdp
        video = answer[answer.index("m=video") :]
        assert "a=sendonly" in video and "a=sendrecv" not in video, video
        await client.close()

    run(main())
    _assert_freed(server)


def test_limits_answer_busy(body, demo_avatar) -> None:
    from streamer.tracking.demo_motion import demo_motion

    config = ServerConfig(port=0, size=32, fps=10.0, backend="cpu", max_stages=1, max_sessions=2)
    with ServerThread(config, avatar=demo_avatar, body=body, motion=demo_motion()) as st:

        async def main() -> None:
            first = await _watch(st.url, frames=1, stage="one")
            replies, code = await ws_exchange(st.url, ['{"type": "join", "role": "viewer", "stage": "two"}'])
            assert replies[-1]["code"] == "busy" and "limit of 1 stages" in replies[-1]["message"], replies
            second = await _watch(st.url, frames=1, stage="one")
            replies, code = await ws_exchange(st.url, [])
            assert replies[-1]["code"] == "busy" and code == 1013, replies
            await first.close()
            await second.close()

        run(main())
        _assert_freed(st)


# -- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_command_prints_the_url_and_serves(tmp_path, stop) -> None:
    """... with the performer key (here from the environment) in the performer URL, quoted; Ctrl-C
    and a service manager's SIGTERM both stop it cleanly (exit 0)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "STREAMER_PERFORMER_KEY": "a b/c",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "serve", "--port", "0", "--backend", "cpu", "--size", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        line = ""
        deadline = time.monotonic() + 300
        while "open http" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "open http://127.0.0.1:" in line, line
        url, key = line.split("open ", 1)[1].split(" ", 1)[0].split("?key=")
        assert key == "a%20b%2Fc", line
        status, _, body = http_get(url)
        assert status == 200 and b'id="avatar"' in body
        assert json.loads(http_get(url + "stats")[2])["stages"] == {}
        proc.send_signal(stop)
        assert proc.wait(60) == 0
        assert "streamer serve: stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_refuses_bad_options() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for args, text in (
        (["--ice-server", "http://nope"], "ICE server must be a stun:"),
        (["--ice-server", "stun:host:abc"], "ICE server 'stun:host:abc': malformed uri"),
        (["--ice-server", "turn:host:3478"], "a TURN server needs credentials"),
        (["--host", ""], "--host is empty; give an address"),
        (["--host", "not..a..host", "--motion", "demo", "--size", "64"], "cannot listen on not..a..host:0: not a valid"),
        (["--size", "31"], "--size must be an even number"),
        (["--models", "yoga"], "unknown MediaPipe model"),
        (["--render-threads", "-1"], "--render-threads must be in [0, 256]"),
        (["--background", "0,1"], "--background must be 3 numbers in [0, 1] (R,G,B), got '0,1'"),
        (["--background", "green"], "--background must be 3 numbers in [0, 1] (R,G,B), got 'green'"),
        (["--performer-key", "k" * 257], "--performer-key must be 1-256 characters"),
        (["--performer-key", ""], "--performer-key must be 1-256 characters"),  # not: no key at all
        (["--cert", "server.crt"], "--cert and --key go together"),
        (["--cert", "server.crt", "--key", "server.key"], "--cert server.crt: no such file"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "streamer.cli", "serve", "--port", "0", *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 2 and text in proc.stderr, (args, proc.stderr)


def test_https_serves_the_pages_and_the_signalling(tmp_path, body, demo_avatar, capsys) -> None:
    """With --cert and --key the pages come over HTTPS and a real aiortc viewer connects over WSS."""
    import ssl

    from streamer.cli import main as cli_main
    from streamer.tracking.demo_motion import demo_motion

    cert, key = self_signed(tmp_path, "server")
    config = ServerConfig(host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu")
    config.certfile, config.keyfile = cert, key
    with ServerThread(config, avatar=demo_avatar, body=body, motion=demo_motion()) as st:
        assert st.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(st.url + "view", timeout=30, context=trusted) as r:
            assert r.status == 200 and b'id="avatar"' in r.read()
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(st.url, timeout=30)  # a client that does not trust it is refused

        async def main() -> None:
            client = StreamClient(st.url, "viewer", ssl=trusted)
            await client.connect(timeout=FRAMES_TIMEOUT_S)
            assert await client.wait_frames(3, FRAMES_TIMEOUT_S) >= 3
            await client.close()

        run(main())
        # bench viewers measures it when told to trust the certificate, and says how when not told
        capsys.readouterr()
        bench = ["bench", "viewers", st.url, "--count", "1", "--seconds", "2", "--warmup", "0.2", "--json"]
        assert cli_main([*bench, "--ca", cert]) == 0
        assert json.loads(capsys.readouterr().out)["fps_min"] > 0
        assert cli_main(bench) == 2
        assert "CERTIFICATE_VERIFY_FAILED" in (err := capsys.readouterr().err) and "--ca CERT.pem" in err, err
        assert cli_main([*bench, "--ca", key]) == 2
        assert f"--ca {key}: not a PEM certificate" in capsys.readouterr().err
        plain = st.url.replace("https:", "http:")
        assert cli_main([*bench[:2], plain, *bench[3:], "--ca", cert]) == 2
        assert f"--ca is for an https URL, not {plain}" in capsys.readouterr().err
        # --ca adds the certificate to the system's, which still verify publicly signed servers
        from streamer.commands.bench_viewers import tls_trusting

        system = ssl.create_default_context().cert_store_stats()["x509"]
        assert tls_trusting(cert, st.url).cert_store_stats()["x509"] == system + 1


def test_a_certificate_that_cannot_serve_is_refused_before_loading(tmp_path, monkeypatch) -> None:
    import ssl

    from streamer.stream.server import run_server, tls_context

    cert, key = self_signed(tmp_path, "a")
    other_cert, other_key = self_signed(tmp_path, "b")
    _, locked_key = self_signed(tmp_path, "c", password=b"secret")
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "folder").mkdir()
    missing, folder, notes = tmp_path / "missing.crt", tmp_path / "folder", tmp_path / "notes.json"
    for c, k, words in (  # each message names the file that is wrong
        (cert, other_key, f"--key {other_key} does not belong to the certificate --cert {cert}"),
        (key, key, f"--cert {key}: not a PEM certificate"),
        (str(notes), key, f"--cert {notes}: not a PEM certificate"),
        (cert, cert, f"--key {cert}: not a PEM private key"),
        (cert, locked_key, f"--key {locked_key} is encrypted; give an unencrypted key"),
        (str(missing), key, f"--cert {missing}: no such file"),
        (cert, str(folder), f"--key {folder} is a folder"),
    ):
        with pytest.raises(InputError) as info:
            tls_context(c, k)
        assert words in str(info.value), (c, k, info.value)
    assert isinstance(tls_context(other_cert, other_key), ssl.SSLContext)

    def no_load(self) -> None:
        raise AssertionError("the assets were loaded")

    monkeypatch.setattr(AvatarServer, "_load", no_load)  # what `streamer serve` runs, up to the loading
    for config, words in (
        (ServerConfig(port=0, certfile=cert, keyfile=other_key), "does not belong"),
        (ServerConfig(port=0, certfile=cert), "--cert and --key go together"),
    ):
        with pytest.raises(InputError, match=words):
            asyncio.run(run_server(config))


def test_the_printed_urls_say_how_another_machine_reaches_a_server_on_every_interface() -> None:
    """``--host 0.0.0.0`` prints 127.0.0.1 URLs (this machine's); the next line gives the address
    other machines use, performer key included. A server on one address prints only its URLs."""
    from streamer.stream.server import announcement, this_machine_address

    text = announcement("https://127.0.0.1:8443/", "0.0.0.0", "k y", "192.168.1.20")
    first, second = text.splitlines()
    assert first.startswith("streamer serve: open https://127.0.0.1:8443/?key=k%20y (performer)")
    assert "https://127.0.0.1:8443/view (viewer)" in first and "https://127.0.0.1:8443/xr" in first
    assert second.endswith("instead of 127.0.0.1: https://192.168.1.20:8443/?key=k%20y")
    assert announcement("http://[::1]:80/", "::", None, "10.0.0.2").splitlines()[1].endswith(": http://10.0.0.2:80/")
    assert announcement("http://127.0.0.1:8080/", "0.0.0.0", None, None).splitlines()[1].endswith("instead of 127.0.0.1")
    assert "\n" not in announcement("http://127.0.0.1:8080/", "127.0.0.1", None, "192.168.1.20")
    address = this_machine_address()  # offline it may have no route: None, never a loopback address
    assert address is None or not address.startswith("127.")


def test_avatar_frames_are_512_when_asked(body, demo_avatar) -> None:
    """The default picture size is 512x512 (issue target), and pictures are I420 of that size."""
    from streamer.render import get_renderer
    from streamer.stream.painter import AvatarPainter
    from streamer.stream.protocol import Orbit
    from streamer.tracking.demo_motion import demo_motion

    poses = demo_motion().poses
    painter = AvatarPainter(demo_avatar, body, get_renderer("cpu"), 512, poses[::30])
    picture = painter.paint(painter.pose(poses[0]), Orbit())
    assert picture.shape == (768, 512) and picture.dtype == np.uint8
    assert picture[:512].min() < 128 < picture[:512].max()  # a figure on a light background


def test_render_threads_reach_the_stage_renderer(body, demo_avatar) -> None:
    """``--render-threads N`` gives each stage a CPU renderer with N OpenMP threads (0: one per core);
    1 by default (a second thread slows live tracking on a small machine)."""
    from streamer.render import get_renderer
    from streamer.render.cpu import default_threads

    assert ServerConfig().render_threads == 1
    for threads in (2, 1, 0):
        config = ServerConfig(host="127.0.0.1", port=0, size=64, backend="cpu", motion="demo", render_threads=threads)
        with ServerThread(config, avatar=demo_avatar, body=body) as st:
            assert st.server is not None and st.loop is not None
            stage = st.server._make_stage("threads", st.loop)
            renderer = stage.painter.renderer
            if threads:
                assert renderer.num_threads == threads and renderer.max_threads() == threads
            else:
                assert renderer is get_renderer("cpu") and renderer.max_threads() == default_threads()


def test_the_background_colour_reaches_the_viewers_video(body, demo_avatar) -> None:
    """``--background R,G,B`` (a chroma-key green here) is what a viewer's decoded video shows
    around the avatar; a colour outside [0, 1] is refused in words."""
    green = (0.0, 0.69, 0.25)
    config = ServerConfig(
        host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu", motion="demo", background=green
    )
    with ServerThread(config, avatar=demo_avatar, body=body) as st:

        async def main() -> np.ndarray:
            client = await _watch(st.url, frames=3)
            await client.close()
            return client.received.kept[-1].rgb

        rgb = run(main()).astype(float)
    corner = rgb[:2, :2].reshape(-1, 3).mean(axis=0)  # (the avatar stands in the middle)
    assert np.abs(corner - 255 * np.array(green)).max() < 12, corner
    with pytest.raises(InputError, match="--background"):
        AvatarServer(ServerConfig(port=0, background=(0.0, 2.0, 0.0)), avatar=demo_avatar, body=body)
