"""Sans-I/O parts of streaming: signalling messages, newest-only hand-over, stats, HTTP routes, ICE URLs."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from streamer.errors import InputError, SignallingError
from streamer.stream import protocol
from streamer.stream.http import HttpRoutes
from streamer.stream.ice import browser_ice_servers, parse_ice_server
from streamer.stream.latest import BusClosed, FrameBus, LatestSlot
from streamer.stream.protocol import Bye, Join, Offer, Orbit, Ping, StatsRequest
from streamer.stream.stats import PipelineStats, Rate, Rolling, percentile

# -- signalling messages --------------------------------------------------------------------------


def test_parse_valid_messages() -> None:
    assert protocol.parse_client_message('{"type": "join", "role": "viewer"}') == Join("viewer", "main")
    assert protocol.parse_client_message(b'{"type": "join", "role": "performer", "stage": "a-1"}') == Join(
        "performer", "a-1"
    )
    assert protocol.parse_client_message('{"type": "join", "role": "performer", "key": "k 1"}') == Join(
        "performer", "main", "k 1"
    )
    assert protocol.parse_client_message('{"type": "offer", "sdp": "v=0\\r\\n"}') == Offer("v=0\r\n")
    assert protocol.parse_client_message('{"type": "ping"}') == Ping()
    assert protocol.parse_client_message('{"type": "bye"}') == Bye()


@pytest.mark.parametrize(
    "data, code, text",
    [
        ("{not json", "bad_json", "message is not valid JSON"),
        (b"\xff\xfe", "bad_json", "message is not UTF-8 text"),
        ("[1, 2]", "bad_message", "message must be a JSON object, got list"),
        ('{"role": "viewer"}', "bad_message", "message has no string field 'type'"),
        (
            '{"type": "dance"}',
            "unknown_type",
            "unknown message type 'dance'; expected join, offer, ping or bye",
        ),
        (
            '{"type": "join", "role": "king"}',
            "bad_message",
            "role must be one of performer, viewer, got 'king'",
        ),
        ('{"type": "join", "role": "viewer", "stage": "../x"}', "bad_message", "stage names are 1-64"),
        ('{"type": "join", "role": "viewer", "stage": "a/../x"}', "bad_message", "stage names are 1-64"),
        ('{"type": "join", "role": "viewer", "stage": "a\\n"}', "bad_message", "stage names are 1-64"),
        (
            '{"type": "join", "role": "viewer", "stage": "' + "s" * 65 + '"}',
            "bad_message",
            "stage names are 1-64",
        ),
        ('{"type": "join", "role": 3}', "bad_message", "field 'role' must be a string"),
        ('{"type": "join", "role": "performer", "key": 7}', "bad_message", "field 'key' must be a string"),
        (
            '{"type": "join", "role": "performer", "key": "' + "k" * 257 + '"}',
            "bad_message",
            "the key is longer than 256 characters",
        ),
        ('{"type": "offer"}', "bad_message", "field 'sdp' must be a string"),
        ('{"type": "offer", "sdp": "hello"}', "bad_sdp", "the SDP must start with 'v=0'"),
        ("[" * 100000 + "]" * 100000, "too_large", "larger than the limit of 65536 bytes"),
    ],
)
def test_parse_refuses_bad_messages(data: str | bytes, code: str, text: str) -> None:
    with pytest.raises(SignallingError) as info:
        protocol.parse_client_message(data)
    assert info.value.code == code
    assert text in str(info.value)


def test_deeply_nested_json_is_refused_not_crashing() -> None:
    with pytest.raises(SignallingError) as info:
        protocol.parse_client_message("[" * 30000 + "]" * 30000)
    assert info.value.code in ("bad_json", "bad_message")


def test_control_messages_and_orbit_clamping() -> None:
    assert protocol.parse_control_message('{"type": "stats"}') == StatsRequest()
    orbit = protocol.parse_control_message('{"type": "orbit", "azimuth": -90, "elevation": 200, "zoom": 100}')
    assert orbit == Orbit(azimuth=270.0, elevation=80.0, zoom=4.0)
    low = protocol.parse_control_message('{"type": "orbit", "elevation": -200, "zoom": 0}')
    assert low == Orbit(elevation=-80.0, zoom=0.3)  # zoom 0 would put the camera on its target
    assert protocol.parse_control_message('{"type": "orbit"}') == Orbit()
    for bad in (
        '{"type": "orbit", "azimuth": "left"}',
        '{"type": "orbit", "zoom": true}',
        '{"type": "orbit", "zoom": NaN}',
        '{"type": "orbit", "azimuth": 1' + "0" * 400 + "}",  # an integer no float holds
    ):
        with pytest.raises(SignallingError) as info:
            protocol.parse_control_message(bad)
        assert info.value.code == "bad_message"
    with pytest.raises(SignallingError) as info:
        protocol.parse_control_message('{"type": "x"}')
    assert info.value.code == "unknown_type"
    with pytest.raises(SignallingError) as info:
        protocol.parse_control_message(json.dumps({"type": "orbit", "pad": "x" * 5000}))
    assert info.value.code == "too_large"


def test_orbit_key_groups_equal_cameras() -> None:
    assert Orbit(360.0, 0.0, 1.0).key == Orbit(0.0, 0.0, 1.0).key
    assert Orbit(10.0, 0.0, 1.0).key != Orbit(10.5, 0.0, 1.0).key


def test_error_message_text() -> None:
    assert json.loads(protocol.error_message("bad_sdp", "nope")) == {
        "type": "error",
        "code": "bad_sdp",
        "message": "nope",
    }


# -- newest-item-only hand-over -------------------------------------------------------------------


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.put(3) is True
    assert (slot.get(0.0), slot.dropped, slot.put_count) == (3, 2, 3)
    assert slot.get(0.01) is None


def test_latest_slot_wakes_a_waiting_consumer_and_closes() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(slot.get(30.0)))
    t.start()
    time.sleep(0.05)
    slot.put("frame")
    t.join(30.0)
    assert got == ["frame"]
    t = threading.Thread(target=lambda: got.append(slot.get(30.0)))
    t.start()
    slot.close()
    t.join(30.0)
    assert got == ["frame", None] and slot.closed


@dataclass
class _Item:
    seq: int


def test_frame_bus_gives_each_reader_the_newest() -> None:
    async def main() -> None:
        bus: FrameBus[_Item] = FrameBus()
        bus.publish(_Item(1))
        bus.publish(_Item(2))
        assert (await bus.next(0)).seq == 2  # 1 was never taken: skipped, not queued
        assert bus.skipped == 1
        waiting = asyncio.ensure_future(bus.next(2))
        other = asyncio.ensure_future(bus.next(2))
        await asyncio.sleep(0)
        assert not waiting.done()
        bus.publish(_Item(3))
        assert (await waiting).seq == 3 and (await other).seq == 3
        assert bus.skipped == 1  # 2 and 3 were taken: nothing more was skipped
        cancelled = asyncio.ensure_future(bus.next(3))
        survivor = asyncio.ensure_future(bus.next(3))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        bus.publish(_Item(4))
        assert (await survivor).seq == 4
        pending = asyncio.ensure_future(bus.next(4))
        await asyncio.sleep(0)
        bus.close()
        with pytest.raises(BusClosed):
            await pending

    asyncio.run(main())


# -- stats ------------------------------------------------------------------------------------------


def test_percentiles_and_rolling_window() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    r = Rolling(size=3)
    for v in (100.0, 1.0, 2.0, 3.0):
        r.add(v)
    assert r.summary() == {"p50": 2.0, "p95": 2.9, "n": 3}
    assert r.count == 4


def test_rate_counts_events_in_the_window() -> None:
    rate = Rate(window=2.0)
    for i in range(21):
        rate.tick(100.0 + i * 0.1)  # 10 per second for 2 s
    assert rate.per_second(102.0) == pytest.approx(10.5, abs=0.6)
    assert rate.per_second(110.0) == 0.0
    young = Rate(window=3.0)
    for i in range(10):
        young.tick(200.0 + i * 0.1)  # 10 per second for the first second only
    assert young.per_second(201.0) == pytest.approx(10.0, abs=0.6)  # over the time so far, not the window


def test_pipeline_stats_snapshot_and_reset() -> None:
    stats = PipelineStats()
    stats.times["render"].add(12.0)
    stats.encode_times("video/H264").add(3.0)
    stats.latency.add(50.0)
    stats.add_dropped(inputs=3, outputs=1)
    snap = stats.snapshot()
    assert snap["stages_ms"]["render"] == {"p50": 12.0, "p95": 12.0, "n": 1}
    assert snap["encode_ms_by_codec"] == {"H264": {"p50": 3.0, "p95": 3.0, "n": 1}}
    assert set(snap["stages_ms"]) == {"tracking", "fit", "lbs", "render", "encode"}
    assert (snap["dropped_frames"], snap["dropped_output_frames"], snap["latency_ms"]["p50"]) == (3, 1, 50.0)
    json.dumps(snap)
    stats.reset()
    snap = stats.snapshot()
    assert (
        snap["dropped_frames"] == 0 and snap["latency_ms"]["n"] == 0 and snap["stages_ms"]["render"]["n"] == 0
    )
    assert snap["encode_ms_by_codec"]["H264"]["n"] == 0


# -- HTTP routes ---------------------------------------------------------------------------------------


def test_http_routes(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>performer</p>")
    (tmp_path / "view.html").write_text("<p>viewer</p>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "a.js").write_text("export {};")
    (tmp_path / "notes.txt").write_text("secret")
    (tmp_path.parent / "outside.js").write_text("secret")
    routes = HttpRoutes(tmp_path, lambda: {"stages": {}})

    def get(path: str) -> tuple[int, str, bytes]:
        r = routes.process_request(None, Request(path, Headers()))
        assert r is not None
        return r.status_code, r.headers["Content-Type"], r.body

    assert get("/?autostart=1") == (200, "text/html; charset=utf-8", b"<p>performer</p>")
    assert get("/view?stage=b")[2] == b"<p>viewer</p>"
    assert get("/web/js/a.js")[:2] == (200, "text/javascript; charset=utf-8")
    assert get("/stats")[:2] == (200, "application/json")
    assert json.loads(get("/stats")[2]) == {"stages": {}}
    for path in (
        "/web/notes.txt",
        "/web/../outside.js",
        "/web/%2e%2e/outside.js",
        "/web/js/missing.js",
        "/nope",
    ):
        assert get(path)[0] == 404, path
    assert routes.process_request(None, Request("/ws", Headers())) is None
    head = routes.process_request(None, Request("/stats", Headers(), method="HEAD"))
    assert head is not None and head.status_code == 200
    assert head.body == b"" and int(head.headers["Content-Length"]) == len(get("/stats")[2])
    head_ws = routes.process_request(None, Request("/ws", Headers(), method="HEAD"))
    assert head_ws is not None and (head_ws.status_code, head_ws.body, head_ws.headers["Allow"]) == (405, b"", "GET")
    for method in ("POST", "DELETE"):
        refused = routes.process_request(None, Request("/stats", Headers(), method=method))
        assert refused is not None and (refused.status_code, refused.headers["Allow"]) == (405, "GET, HEAD")


# -- ICE servers ------------------------------------------------------------------------------------------


def test_ice_server_urls() -> None:
    s = parse_ice_server("stun:stun.example.org:3478")
    assert (s.urls, s.username, s.credential) == ("stun:stun.example.org:3478", None, None)
    t = parse_ice_server("turn:alice:se:cret@turn.example.org:3478?transport=udp")
    assert (t.urls, t.username, t.credential) == (
        "turn:turn.example.org:3478?transport=udp",
        "alice",
        "se:cret",
    )
    assert browser_ice_servers(["turn:a:b@h:1"]) == [{"urls": "turn:h:1", "username": "a", "credential": "b"}]
    assert parse_ice_server("stuns:h").urls == "stuns:h" and parse_ice_server("turns:a:b@h:5349?transport=tcp")
    for bad, words in (
        ("http://x", "must be a stun:"),
        ("stun:", "must be a stun:"),
        ("h:1", "must be a stun:"),
        ("turn:alice@h:1", "credentials must be USER:PASS@"),
        ("turn:u:p@", "malformed uri"),  # each of these aiortc refuses on every connection
        ("stun:host:abc", "malformed uri"),
        ("stun:host:3478:5", "malformed uri"),
        ("stun:h:1?transport=udp", "must not contain transport"),
        ("stun:host:99999", "port 99999 is not in [1, 65535]"),
        ("turn:a:b@h:1?transport=sctp", "transport must be udp or tcp"),
        ("turn:h:3478", "a TURN server needs credentials"),  # browsers refuse it
    ):
        with pytest.raises(InputError, match=re.escape(words)):
            parse_ice_server(bad)


def test_rgb_to_i420_matches_ffmpeg_on_smooth_pictures() -> None:
    """The one-pass C++ conversion agrees with FFmpeg's rgb24 -> yuv420p within one level."""
    import av
    import numpy as np
    import pytest
    import torch

    from streamer.stream.painter import rgb_to_i420

    yy, xx = np.mgrid[0:96, 0:128] / 128.0
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx)], -1).astype(np.float32)
    rgb = rgb * 1.2 - 0.1  # partly out of [0, 1]: clamped
    quantised = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    ffmpeg = av.VideoFrame.from_ndarray(quantised, format="rgb24").reformat(format="yuv420p").to_ndarray()
    for picture in (rgb, torch.from_numpy(rgb)):
        ours = rgb_to_i420(picture)
        assert ours.shape == (144, 128) and ours.dtype == np.uint8
        assert np.abs(ours.astype(int) - ffmpeg.astype(int)).max() <= 1
    assert np.array_equal(rgb_to_i420(quantised), ffmpeg)  # uint8 pictures take FFmpeg's path
    from streamer.render import _cpu_raster

    with pytest.raises(ValueError, match="even"):
        _cpu_raster.rgb_to_i420(np.zeros((3, 4, 3), np.float32))


def test_a_background_task_that_fails_is_logged_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    """A pacer or a stats pusher that raised would otherwise stop without a word until collected."""
    from streamer.stream.tasks import background

    async def broken() -> None:
        raise RuntimeError("the pacer tripped")

    async def cancelled() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        failing = background(broken())
        waiting = background(cancelled())
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.sleep(0.05)
        assert failing.done() and waiting.cancelled()

    with caplog.at_level("ERROR", logger="streamer.stream.tasks"):
        asyncio.run(main())
    failures = [r for r in caplog.records if r.name == "streamer.stream.tasks"]
    assert len(failures) == 1 and "the pacer tripped" in str(failures[0].exc_info[1])  # not the cancelled one
