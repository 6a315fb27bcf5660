"""End to end in a real browser: Debian's Chromium, headless, with a fake webcam made from the shared
video of a person, opens the performer page with ``?autostart=1``; the ``#avatar`` video plays
frames that change over time. Also: the viewer page, the words shown when the camera is refused
or the server goes away, and reconnecting when it comes back.

The set-up installs what it needs from the package registries (``apt-get install chromium`` when
missing and root; Playwright from PyPI when missing); it never downloads a browser by other means.
If the browser cannot be installed the tests fail with a clear message instead of skipping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stream_utils import (
    CHROMIUM_FLAGS,
    TEST_HOST,
    ensure_chromium,
    ensure_playwright,
    make_y4m,
    require_shared_video,
    self_signed,
)

from streamer.stream.background import ServerThread
from streamer.stream.server import ServerConfig

WAIT_S = 180.0  # generous: a shared 2-core CI machine runs the browser, the server and the tracking


@pytest.fixture(scope="module")
def fake_webcam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The person's wide arm and leg motion (4-9 s of the shared video), small, as a looping .y4m."""
    out = tmp_path_factory.mktemp("webcam") / "person.y4m"
    return make_y4m(require_shared_video(), out, start_s=4.0, end_s=9.0, max_side=480)


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def playwright(chromium: str) -> Iterator[Any]:
    sync_api = ensure_playwright()
    with sync_api.sync_playwright() as pw:
        yield pw


def webcam_flags(fake_webcam: Path) -> list[str]:
    """Chromium's flags for a fake webcam playing ``fake_webcam``, allowed without a prompt."""
    return CHROMIUM_FLAGS + [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={fake_webcam}",
    ]


@pytest.fixture(scope="module")
def browser(
    playwright: Any, chromium: str, fake_webcam: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Headless Chromium with the fake webcam (camera permission granted without a prompt)."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),
        executable_path=chromium,
        headless=True,
        args=webcam_flags(fake_webcam),
    )
    context.set_default_timeout(WAIT_S * 1000)  # (Playwright's own default, 30 s, is tight on a busy machine)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def server(body, demo_avatar) -> Iterator[ServerThread]:
    config = ServerConfig(host="127.0.0.1", port=0, size=256, fps=20.0, backend="cpu")
    with ServerThread(config, avatar=demo_avatar, body=body) as st:
        yield st


def _status(page: Any) -> dict:
    return page.evaluate(
        """() => {
          const v = document.getElementById('avatar');
          const c = window.avatarClient || {};
          const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {totalVideoFrames: 0};
          return {state: c.state, problems: c.problems || [], readyState: v.readyState, time: v.currentTime,
                  width: v.videoWidth, frames: q.totalVideoFrames,
                  stateText: document.getElementById('state').textContent,
                  message: document.getElementById('message').hidden ? '' : document.getElementById('message').textContent};
        }"""
    )


def _picture(page: Any) -> np.ndarray:
    """The #avatar video's current picture, 64x64 RGB."""
    data = page.evaluate(
        """() => {
          const v = document.getElementById('avatar');
          const c = document.createElement('canvas'); c.width = 64; c.height = 64;
          const g = c.getContext('2d'); g.drawImage(v, 0, 0, 64, 64);
          return Array.from(g.getImageData(0, 0, 64, 64).data);
        }"""
    )
    return np.array(data, dtype=np.float32).reshape(64, 64, 4)[..., :3]


def _wait_playing(page: Any, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    status = _status(page)
    while time.monotonic() < deadline:
        status = _status(page)
        if status["readyState"] >= 2 and status["width"] > 0 and status["frames"] > 5:
            return status
        time.sleep(0.25)
    raise AssertionError(f"#avatar did not start playing within {timeout:g} s: {status}")


def _wait_for_change(page: Any, timeout: float = WAIT_S, first: np.ndarray | None = None) -> float:
    """Largest mean absolute difference (0-255) between ``first`` (default: the picture now) and
    later pictures, until it passes 2 or ``timeout`` runs out."""
    first = _picture(page) if first is None else first
    best = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        best = max(best, float(np.abs(_picture(page) - first).mean()))
        if best > 2.0:
            break
    return best


def test_performer_page_plays_an_avatar_that_moves(browser: Any, server: ServerThread) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server.url + "?autostart=1")
        first = _wait_playing(page)
        assert first["state"] == "connected" and first["width"] == 256, first
        change = _wait_for_change(page)
        assert change > 2.0, f"the avatar video did not change over time (mean difference {change:.2f})"
        later = _status(page)
        assert later["frames"] > first["frames"] and later["time"] > first["time"], (first, later)
        assert later["problems"] == [] and errors == [], (later, errors)
        stats = server.call(lambda: server.server.stats())
        assert stats["stages"]["main"]["frames_tracked"] > 0, stats  # the fake webcam drives the avatar
        # the overlay shows the frame rate (and latency once the first stats message arrived)
        assert "fps" in page.inner_text("#overlay")
        # the viewer link in the footer is the whole address, to copy and send
        assert page.inner_text("#viewer-link") == server.url + "view?stage=main"
        # Chromium's bandwidth estimates (RTCP REMB) reach the server, which sets the stream's rate by them
        deadline = time.monotonic() + WAIT_S
        peer: dict = {}
        while not peer.get("estimate_bps") and time.monotonic() < deadline:
            time.sleep(0.5)
            peer = page.evaluate("() => (window.avatarClient.stats || {}).peer || {}")
        assert peer.get("estimate_bps", 0) > 0, peer
        overlay_ends = "() => / kbit\\/s · VP8$/.test(document.getElementById('overlay').textContent)"
        page.wait_for_function(overlay_ends)
    finally:
        page.close()


def _wait_until(page: Any, condition: Callable[[dict], bool], what: str, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    status = _status(page)
    while time.monotonic() < deadline and not condition(status):
        time.sleep(0.2)
        status = _status(page)
    assert condition(status), f"{what}: {status}"
    return status


def test_viewer_page_plays_and_orbits(browser: Any, server: ServerThread) -> None:
    page = browser.new_page()
    try:
        page.goto(server.url + "view?autostart=1&stage=side")
        _wait_playing(page)
        # a webcam stage nobody performs on: the page says so (from the data channel's stats)
        _wait_until(page, lambda s: "nobody is performing" in s["stateText"], "no word about the missing performer")
        box = page.locator(".screen").bounding_box()
        assert box is not None
        before = _picture(page)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 220, y, steps=8)  # about 90 degrees around the avatar
        page.mouse.up()
        change = _wait_for_change(page, first=before)
        assert change > 2.0, f"orbiting did not change the viewer's picture ({change:.2f})"
        stats = server.call(lambda: server.server.stats())
        assert stats["stages"]["side"]["views"] == 1
        # the keyboard orbits too: arrows turn (as dragging that way would), + zooms in, 0 resets;
        # the server's picture follows
        page.focus(".screen")
        start = page.evaluate("() => ({...window.avatarOrbit})")
        before = _picture(page)
        for key in ("ArrowLeft", "ArrowLeft", "ArrowUp", "+"):
            page.keyboard.press(key)
        moved = page.evaluate("() => ({...window.avatarOrbit})")
        assert round((moved["azimuth"] - start["azimuth"]) % 360) == 30, (start, moved)
        assert moved["elevation"] == start["elevation"] - 15 and moved["zoom"] < start["zoom"], (start, moved)
        change = _wait_for_change(page, first=before)
        assert change > 2.0, f"orbiting by keyboard did not change the picture ({change:.2f})"
        page.keyboard.press("Control+0")  # the browser's (page zoom), not the viewer's
        assert page.evaluate("() => window.avatarOrbit") == moved
        page.keyboard.press("0")
        assert page.evaluate("() => window.avatarOrbit") == {"azimuth": 0, "elevation": 0, "zoom": 1}
        # Stop and Watch by keyboard: the button that takes the place of the pressed one gets the
        # focus (it would drop to the page's start as the pressed one hides itself)
        page.focus("#stop")
        page.keyboard.press("Enter")
        _wait_until(page, lambda s: s["state"] == "idle", "Stop did not stop")
        assert page.evaluate("() => document.activeElement.id") == "start"
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "stop"
    finally:
        page.close()


def test_bare_viewer_page_is_the_video_alone_and_starts_by_itself(browser: Any, server: ServerThread) -> None:
    """``/view?bare=1`` is for capture into a video call: no header, buttons, notes, figures or
    cursor, the video filling the window on the stage's background colour; it connects without
    ?autostart (its buttons are hidden); a notice shows until connected, then leaves the video
    clear. The VR page does not go bare."""
    page = browser.new_page()
    page.set_viewport_size({"width": 800, "height": 600})
    try:
        page.goto(server.url + "view?bare=1&stage=bare&codec=av1")
        assert "av1" in page.inner_text("#message")  # (set on load; connecting takes longer)
        _wait_playing(page)
        for hidden in ("header", "footer", "#overlay", "#orbit-help", "#message"):
            assert not page.is_visible(hidden), hidden
        box = page.locator("#avatar").bounding_box()
        assert box == {"x": 0, "y": 0, "width": 800, "height": 600}, box
        assert page.evaluate("() => document.documentElement.scrollHeight") <= 600  # nothing below it
        assert page.evaluate("() => getComputedStyle(document.querySelector('.screen')).cursor") == "none"
        assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
        page.goto(server.url + "xr?bare=1")
        assert page.is_visible("header") and page.evaluate("() => !document.body.classList.contains('bare')")
    finally:
        page.close()


def test_vr_page_without_a_headset_plays_flat_and_head_poses_orbit(browser: Any, server: ServerThread) -> None:
    """Headless Chromium has no VR headset: the VR page says so in words, plays the avatar flat,
    and the head-pose path (head position -> orbit message -> server camera) still works."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server.url + "xr?autostart=1&stage=vr")
        _wait_playing(page)
        deadline = time.monotonic() + WAIT_S
        while page.evaluate("() => window.avatarXR.supported") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.evaluate("() => window.avatarXR.supported") is False
        assert page.locator("#enter-vr").is_disabled()
        assert "flat video" in page.inner_text("#xr-status")
        orbits = page.evaluate(
            """async () => {
              const m = await import('/web/js/xr-orbit.js');
              const a = m.ANCHOR;
              return [m.orbitFromHead({x: a.x, y: a.y, z: a.z + 2}),      // where the person started
                      m.orbitFromHead({x: a.x + 2, y: a.y, z: a.z}),      // at the avatar's left
                      m.orbitFromHead({x: a.x, y: a.y + 1, z: a.z + 1}),  // above, closer
                      m.orbitFromHead({x: a.x, y: a.y + 5, z: a.z + 0.1})];
            }"""
        )
        assert orbits[0] == {"azimuth": 0, "elevation": 0, "zoom": 1}
        assert orbits[1] == {"azimuth": 90, "elevation": 0, "zoom": 1}
        assert orbits[2]["elevation"] == 45 and abs(orbits[2]["zoom"] - 0.707) < 1e-3
        assert orbits[3]["elevation"] == 80  # clamped like the server's orbit
        before = _picture(page)
        assert page.evaluate("() => window.avatarXR.lookFrom({x: 2, y: 1.1, z: -2})") is True
        change = _wait_for_change(page, first=before)
        assert change > 2.0, f"a head position at the avatar's side did not change the picture ({change:.2f})"
        assert page.evaluate("() => window.avatarXR.orbitsSent") == 1 and errors == [], errors
    finally:
        page.close()


def test_enter_vr_starts_watching(browser: Any, server: ServerThread) -> None:
    """A headset's browser (here a stand-in for WebXR whose session cannot start): Enter VR on a
    page that is not watching yet starts the connection too, and a failed session is said in words."""
    page = browser.new_page()
    page.add_init_script(
        """Object.defineProperty(navigator, 'xr', {configurable: true, value: {
             isSessionSupported: async () => true,
             requestSession: async () => { throw new Error('the test has no headset'); },
           }});"""
    )
    try:
        page.goto(server.url + "xr?stage=vrstart")
        page.wait_for_function("() => !document.getElementById('enter-vr').disabled")
        assert _status(page)["state"] == "idle"
        page.click("#enter-vr")
        _wait_playing(page)
        assert page.inner_text("#xr-status") == "Could not start VR: the test has no headset"
        assert page.is_visible("#stop") and not page.is_visible("#start")
    finally:
        page.close()


def test_server_gone_is_shown_in_words_and_the_page_reconnects(
    browser: Any, body, demo_avatar, fake_webcam: Path
) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, size=128, fps=15.0, backend="cpu")
    first = ServerThread(config, avatar=demo_avatar, body=body).start()
    port = first.server.port
    page = browser.new_page()
    bare = browser.new_page()  # the capture page: its state pill is hidden
    try:
        page.goto(first.url + "?autostart=1")
        bare.goto(first.url + "view?bare=1")
        _wait_playing(page)
        _wait_playing(bare)
        first.stop()
        deadline = time.monotonic() + WAIT_S
        status = _status(page)
        while time.monotonic() < deadline and status["state"] != "reconnecting":
            time.sleep(0.2)
            status = _status(page)
        assert status["state"] == "reconnecting", status
        # the pill counts down, short; the message line says what went wrong
        assert status["stateText"].startswith("Reconnecting in "), status
        assert "avatar server" in status["message"] and "`" not in status["message"], status
        # the lost stream's frozen picture goes (the page's background shows); the bare page,
        # without its pill, says it in its message line
        assert page.evaluate("() => document.getElementById('avatar').srcObject") is None
        _wait_until(bare, lambda s: "Reconnecting" in s["message"], "the bare page said nothing")
        assert bare.evaluate("() => document.getElementById('avatar').srcObject") is None
        # no figures of the lost connection while reconnecting (the overlay updates once a second)
        time.sleep(1.5)
        assert page.inner_text("#overlay") == "" and page.evaluate("() => window.avatarClient.stats") is None
        # the back-off grows while the server stays away (1, 2, 4 s...); "Retry now" skips the wait:
        # clicked with more than 2.5 s of it left, a new attempt within 1 s can only be the button's
        deadline = time.monotonic() + WAIT_S
        while (page.evaluate("() => window.avatarClient.retryInMs") or 0) < 2500 and time.monotonic() < deadline:
            time.sleep(0.1)
        attempts = page.evaluate("() => window.avatarClient.connects")
        assert page.is_visible("#retry"), _status(page)
        page.click("#retry")
        time.sleep(1.0)
        assert page.evaluate("() => window.avatarClient.connects") == attempts + 1, "Retry now did not retry"
        frames_before = _status(page)["frames"]
        again = ServerThread(
            ServerConfig(host="127.0.0.1", port=port, size=128, fps=15.0, backend="cpu"),
            avatar=demo_avatar,
            body=body,
        ).start()
        try:
            # rather than the rest of the back-off (unless it ran out meanwhile)
            page.evaluate("() => { const b = document.getElementById('retry'); if (!b.hidden) b.click(); }")
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                status = _status(page)
                if status["state"] == "connected" and status["frames"] > frames_before + 5:
                    break
                time.sleep(0.25)
            assert status["state"] == "connected" and status["frames"] > frames_before + 5, status
            assert not page.is_visible("#retry") and status["message"] == "", status
        finally:
            again.stop()
    finally:
        bare.close()
        page.close()
        first.stop()


def test_a_later_failure_replaces_an_earlier_problem_in_the_message(browser: Any, body, demo_avatar) -> None:
    """The server refuses (full): its words stay through the reconnect that follows; once the server
    is gone, the next attempt's failure replaces them (the pill only counts down)."""
    config = ServerConfig(host="127.0.0.1", port=0, size=64, fps=10.0, backend="cpu", max_sessions=0)
    st = ServerThread(config, avatar=demo_avatar, body=body).start()
    page = browser.new_page()
    try:
        page.goto(st.url + "view?autostart=1")
        status = _wait_until(page, lambda s: s["state"] == "reconnecting", "the page did not retry")
        assert status["message"].startswith("The server is full") and status["stateText"].startswith("Reconnecting in ")
        st.stop()
        status = _wait_until(page, lambda s: "not reachable" in s["message"], "the lost server was not said")
        assert "full" not in status["message"] and status["problems"][0]["code"] == "busy", status
    finally:
        page.close()
        st.stop()


def test_a_camera_that_stops_is_asked_for_again(browser: Any, server: ServerThread) -> None:
    """A webcam track that ends (unplugged, taken by another app) would leave the avatar at rest
    under "Connected.": the page says so and reconnects, asking for the camera anew."""
    page = browser.new_page()
    try:
        page.goto(server.url + "?autostart=1&stage=camgone")
        _wait_playing(page)
        connects = page.evaluate("() => window.avatarClient.connects")
        # what the browser does when the device goes away ("ended" is not fired by track.stop())
        page.evaluate(
            "() => window.avatarClient.pc.getSenders().forEach((s) => s.track && s.track.dispatchEvent(new Event('ended')))"
        )
        texts = set()
        deadline = time.monotonic() + WAIT_S
        status = _status(page)
        while time.monotonic() < deadline:
            status = _status(page)
            texts.add(status["message"])
            if status["state"] == "connected" and page.evaluate("() => window.avatarClient.connects") > connects:
                break
            time.sleep(0.05)
        assert any("The camera stopped" in t for t in texts), texts
        assert status["state"] == "connected", status
        assert page.evaluate("() => window.avatarClient.connects") == connects + 1
        _wait_playing(page)
    finally:
        page.close()


def test_refused_camera_is_shown_in_words(
    playwright: Any, chromium: str, server: ServerThread, tmp_path: Path
) -> None:
    # no fake-UI flag: headless Chromium refuses the camera permission
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=chromium,
        headless=True,
        args=CHROMIUM_FLAGS + ["--use-fake-device-for-media-stream"],
    )
    context.set_default_timeout(WAIT_S * 1000)
    try:
        page = context.new_page()
        page.goto(server.url + "?autostart=1&stage=nocam")
        deadline = time.monotonic() + WAIT_S
        status = _status(page)
        while time.monotonic() < deadline and not status["message"]:
            time.sleep(0.2)
            status = _status(page)
        assert "Camera permission was denied" in status["message"], status
        assert page.is_visible("#start"), "the Start button comes back to try again"
        assert "No webcam" in page.inner_text("#preview-note")  # not "starts when you press Start"
    finally:
        context.close()


def test_a_replaced_performer_releases_the_webcam(browser: Any, server: ServerThread) -> None:
    """Another performer takes the stage: the first page says so once, turns its camera off and
    shows no picture or figures any more (as if Stop had been pressed)."""
    first, second = browser.new_page(), browser.new_page()
    try:
        first.goto(server.url + "?autostart=1&stage=takeover")
        _wait_playing(first)
        first.evaluate("() => { window.camera = document.getElementById('preview').srcObject; }")
        assert first.evaluate("() => window.camera.getVideoTracks()[0].readyState") == "live"
        second.goto(server.url + "?autostart=1&stage=takeover")
        status = _wait_until(first, lambda s: s["state"] == "idle", "the first performer was not stopped")
        assert status["message"] == "Another performer took over this stage.", status
        assert "another performer" in status["stateText"], status
        assert first.evaluate("() => window.camera.getVideoTracks().every((t) => t.readyState === 'ended')")
        assert first.evaluate("() => document.getElementById('preview').srcObject === null")
        assert first.evaluate("() => document.getElementById('avatar').srcObject === null")
        time.sleep(1.5)  # the overlay would have updated by now
        assert first.inner_text("#overlay") == ""
        assert first.is_visible("#start") and not first.is_visible("#stop")
        _wait_playing(second)
    finally:
        first.close()
        second.close()


def test_a_performer_page_without_the_servers_key_is_told_and_stops(browser: Any, body, demo_avatar) -> None:
    """With ``--performer-key`` the performer page needs ``?key=``: without it the page says so in
    words and stops (no reconnecting, no camera asked for); with it, it performs."""
    config = ServerConfig(host="127.0.0.1", port=0, size=128, fps=20.0, backend="cpu", performer_key="k-1")
    with ServerThread(config, avatar=demo_avatar, body=body) as st:
        page = browser.new_page()
        try:
            page.add_init_script(
                "window.cameraAsks = 0; const devices = navigator.mediaDevices;"
                "const ask = devices.getUserMedia.bind(devices);"
                "devices.getUserMedia = (c) => { window.cameraAsks += 1; return ask(c); };"
            )
            page.goto(st.url + "?autostart=1&key=wrong")
            status = _wait_until(
                page, lambda s: s["state"] == "idle" and s["problems"], "the page did not stop"
            )
            assert [p["code"] for p in status["problems"]] == ["forbidden"], status
            assert "performer key" in status["message"] and "performer key" in status["stateText"], status
            assert page.evaluate("() => window.cameraAsks") == 0
            time.sleep(2.5)  # a retry would have come by now
            assert page.evaluate("() => window.avatarClient.connects") == 1
            page.goto(st.url + "?autostart=1&key=k-1")
            _wait_playing(page)
            assert page.evaluate("() => window.cameraAsks") == 1
        finally:
            page.close()


def test_a_refused_stage_name_is_said_in_words(browser: Any, server: ServerThread) -> None:
    page = browser.new_page()
    try:
        page.goto(server.url + "view?stage=my%20stage&codec=vp9")
        message = page.inner_text("#message")
        assert "“my stage” is not a stage name" in message
        assert "“vp9” is not a codec of this server (vp8, h264)" in message
        assert page.inner_text("#stage-name") == "main"
    finally:
        page.close()


def test_performer_page_with_codec_h264_sends_and_plays_h264(browser: Any, server: ServerThread) -> None:
    """``?codec=h264``: Chromium offers H.264 first; its webcam goes to the server as H.264 and the
    avatar comes back as H.264 (the stage encodes only that), and it plays and moves."""
    page = browser.new_page()
    try:
        page.goto(server.url + "?autostart=1&stage=h264&codec=h264")
        first = _wait_playing(page)
        assert first["state"] == "connected" and first["problems"] == [], first
        change = _wait_for_change(page)
        assert change > 2.0, f"the H.264 avatar video did not change over time ({change:.2f})"
        stage = server.call(lambda: server.server.stages["h264"].stage)
        # (a stream per bit rate in use: the set of codecs, not the list of streams)
        assert server.call(lambda: {s["codec"] for s in stage.streams()}) == {"video/H264"}
        assert server.call(lambda: server.server.stats())["stages"]["h264"]["frames_tracked"] > 0
        codecs = page.evaluate(
            """async () => {
              const pc = window.avatarClient.pc;
              const found = [];
              (await pc.getStats()).forEach((r) => { if (r.type === 'codec') found.push(r.mimeType); });
              return found;
            }"""
        )
        assert codecs and set(codecs) == {"video/H264"}, codecs
        page.wait_for_function(_OVERLAY_NAMES % "H264")
    finally:
        page.close()


#: The overlay's codec segment (`` · H264`` at its end), for ``page.wait_for_function``.
_OVERLAY_NAMES = "() => document.getElementById('overlay').textContent.endsWith(' · %s')"


@pytest.mark.parametrize(
    "browser_lacks",
    [
        # H.264 among the codecs it can receive
        """(() => {
          const caps = RTCRtpReceiver.getCapabilities.bind(RTCRtpReceiver);
          RTCRtpReceiver.getCapabilities = (kind) => {
            const c = caps(kind);
            return c && {...c, codecs: c.codecs.filter((x) => x.mimeType !== 'video/H264')};
          };
        })()""",
        # a way to reorder its codecs at all (no RTCRtpTransceiver)
        "delete window.RTCRtpTransceiver;",
    ],
    ids=["h264", "transceiver"],
)
def test_codec_h264_in_a_browser_that_cannot_says_so_and_plays_vp8(
    browser: Any, server: ServerThread, browser_lacks: str
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(browser_lacks)
    try:
        page.goto(server.url + "view?autostart=1&stage=noh264&codec=h264")
        status = _wait_playing(page)
        assert "cannot be asked for H264 first" in status["message"], status  # and it stays
        page.wait_for_function(_OVERLAY_NAMES % "VP8")
        later = _status(page)
        assert "cannot be asked for H264 first" in later["message"], later
        assert later["problems"] == [] and errors == [], (later, errors)  # it did not even try
    finally:
        page.close()


def test_a_browser_that_refuses_the_codec_order_is_told_for_good(browser: Any, server: ServerThread) -> None:
    page = browser.new_page()
    page.add_init_script(
        "RTCRtpTransceiver.prototype.setCodecPreferences = () => { throw new Error('not today'); };"
    )
    try:
        page.goto(server.url + "view?autostart=1&stage=refusing&codec=h264")
        _wait_playing(page)
        page.wait_for_function(_OVERLAY_NAMES % "VP8")
        status = _status(page)
        assert "refused to put H264 first" in status["message"], status  # still there once connected
        assert [p["code"] for p in status["problems"]] == ["codec"], status
    finally:
        page.close()


def test_on_a_phone_the_avatar_comes_first(browser: Any, server: ServerThread) -> None:
    """390x844: the avatar above the webcam preview, whole on the first screen; the figures under
    it, not over the small picture."""
    page = browser.new_page()
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(server.url + "?autostart=1&stage=phone")
        _wait_playing(page)
        avatar = page.locator("#avatar").bounding_box()
        preview = page.locator("#preview").bounding_box()
        assert avatar is not None and preview is not None
        assert avatar["y"] < preview["y"] and avatar["y"] + avatar["height"] <= 844, (avatar, preview)
        page.wait_for_function("() => document.getElementById('overlay').textContent.includes('fps')")
        overlay = page.locator("#overlay").bounding_box()
        assert overlay is not None and overlay["y"] >= avatar["y"] + avatar["height"] - 1, (avatar, overlay)
    finally:
        page.close()


def test_over_https_the_performer_page_sends_the_webcam_and_plays(
    playwright: Any, chromium: str, fake_webcam: Path, tmp_path: Path, body, demo_avatar
) -> None:
    """``serve --cert --key`` with a self-signed certificate, once the browser accepts it (here by
    ignoring HTTPS errors), opened by a name that is not localhost, as from another machine: over
    plain HTTP such a page may not use the webcam; over HTTPS the page, the WSS signalling and the
    webcam's WebRTC all work."""
    cert, key = self_signed(tmp_path, "server")
    config = ServerConfig(host="127.0.0.1", port=0, size=128, fps=15.0, backend="cpu")
    config.certfile, config.keyfile = cert, key
    flags = webcam_flags(fake_webcam) + [f"--host-resolver-rules=MAP {TEST_HOST} 127.0.0.1"]
    with ServerThread(config, avatar=demo_avatar, body=body) as st:
        url = st.url.replace("127.0.0.1", TEST_HOST)
        assert url.startswith(f"https://{TEST_HOST}:")
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=flags,
            ignore_https_errors=True,
        )
        context.set_default_timeout(WAIT_S * 1000)
        try:
            page = context.new_page()
            page.goto(url + "?autostart=1")
            status = _wait_playing(page)
            assert status["state"] == "connected" and status["problems"] == [], status
            assert page.evaluate("() => [location.protocol, window.isSecureContext]") == ["https:", True]
            deadline = time.monotonic() + WAIT_S
            while st.call(lambda: st.server.stats())["stages"]["main"]["frames_tracked"] == 0:
                assert time.monotonic() < deadline, "no webcam frame was tracked"
                time.sleep(0.5)
        finally:
            context.close()


def test_a_motion_server_shows_no_webcam_box(browser: Any, body, demo_avatar) -> None:
    from streamer.tracking.demo_motion import demo_motion

    config = ServerConfig(host="127.0.0.1", port=0, size=128, fps=15.0, backend="cpu")
    with ServerThread(config, avatar=demo_avatar, body=body, motion=demo_motion()) as st:
        page = browser.new_page()
        try:
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(st.url + "?autostart=1")
            _wait_playing(page)
            assert not page.is_visible("#preview")
            assert "motion file" in page.inner_text("#preview-note")
            # no empty column beside the avatar: it takes the width, the note goes below it
            panel = page.locator(".avatar-panel").bounding_box()
            main = page.locator("main").bounding_box()
            note = page.locator("#preview-note").bounding_box()
            assert panel is not None and main is not None and note is not None
            assert panel["width"] == main["width"] and note["y"] > panel["y"] + panel["height"], (panel, main, note)
        finally:
            page.close()


def test_stop_during_the_camera_prompt_turns_the_camera_off(browser: Any, server: ServerThread) -> None:
    """The camera arrives after Stop was pressed (the person answered the browser's prompt late):
    it is turned off again, not shown or sent."""
    page = browser.new_page()
    try:
        page.add_init_script(
            """(() => {
              const md = navigator.mediaDevices, ask = md.getUserMedia.bind(md);
              md.getUserMedia = async (c) => {
                const s = await ask(c);
                window.lateCamera = s;
                await new Promise((r) => setTimeout(r, 1500));
                return s;
              };
            })()"""
        )
        page.goto(server.url + "?autostart=1&stage=late")
        deadline = time.monotonic() + WAIT_S
        while page.evaluate("() => window.lateCamera") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        page.click("#stop")
        # the prompt "answers" 1.5 s after the camera started; then the page must end its tracks
        page.wait_for_function(
            "() => window.lateCamera.getVideoTracks().every((t) => t.readyState === 'ended')", timeout=WAIT_S * 1000
        )
        assert page.evaluate("() => document.getElementById('preview').srcObject === null")
        assert _status(page)["state"] == "idle"
    finally:
        page.close()
