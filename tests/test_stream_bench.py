"""``streamer bench stream``: a real performer and viewer over loopback; the report has its keys.
``streamer bench viewers``: viewers of a server running elsewhere (here: a server thread)."""

from __future__ import annotations

import json
import time

import pytest
from stream_utils import require_shared_video

from streamer.cli import main
from streamer.stream.bitrate import BITRATES

KEYS = (
    "fps",
    "latency_ms_p50",
    "latency_ms_p95",
    "dropped_frames",
    "tracking_ms_p50",
    "fit_ms_p50",
    "lbs_ms_p50",
    "render_ms_p50",
    "encode_ms_p50",
)


def test_bench_stream_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    require_shared_video()
    code = main(
        [
            "bench",
            "stream",
            "--seconds",
            "3",
            "--warmup",
            "1",
            "--size",
            "128",
            "--fps",
            "15",
            "--backend",
            "cpu",
            "--webcam-size",
            "320",
            "--viewer-codec",
            "h264",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in KEYS:
        assert key in report, key
    assert report["bench"] == "stream" and report["size"] == 128 and report["viewers"] == 1
    assert report["viewer_codec"] == "h264"  # the performer's stream stays VP8: both were encoded
    assert report["video_codec_per_client"] == ["video/VP8", "video/H264"]
    assert set(report["encode_ms_p50_by_codec"]) == {"VP8", "H264"}
    assert all(ms > 0 for ms in report["encode_ms_p50_by_codec"].values())
    assert report["fps"] > 0 and report["tracked_per_s"] > 0  # fps: the slowest client's (VP8 or H.264)
    assert report["latency_ms_p95"] >= report["latency_ms_p50"] > 0
    # webcam frames of the measured window that were not tracked (a newer one came first): a count
    # of that window, not of the whole run
    received = report["webcam_fps_received"] * report["seconds"]
    assert isinstance(report["dropped_frames"], int) and 0 <= report["dropped_frames"] <= received + 2, report
    for stage in ("tracking", "fit", "lbs", "render", "encode"):  # every stage was actually timed
        assert report[f"{stage}_ms_p50"] is not None and report[f"{stage}_ms_p50"] > 0, stage
    assert report["yardstick_render_ms"] > 0  # the machine's speed on the day, for comparing runs
    by_thread = report["cpu_percent_by_thread"]  # the workers are charged under their names
    for thread in ("mediapipe", "render-main", "pose-fit"):
        assert by_thread.get(thread, 0.0) > 0.0, (thread, by_thread)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--video", "no-such-video.mp4"], "--video no-such-video.mp4: no such file"),
        (["--video", "."], "--video . is a folder; give a file"),
        (["--motion", "no-such-motion.npz"], "--motion no-such-motion.npz: no such file"),
        (["--motion", "demo", "--avatar", "no-such.ply"], "--avatar no-such.ply: no such file"),
    ],
)
def test_bench_stream_refuses_missing_files_before_the_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    from streamer.commands import bench_stream

    def no_yardstick(*a: object, **k: object) -> float:
        raise AssertionError("the yardstick was timed")

    monkeypatch.setattr(bench_stream, "yardstick_ms", no_yardstick)
    assert main(["bench", "stream", *args]) == 2
    assert f"streamer bench stream: error: {words}" in capsys.readouterr().err


def test_without_the_shared_video_the_benches_say_where_they_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.commands import bench_track

    missing = tmp_path / "shared" / "data" / "video" / "full_body_taichi.mp4"
    monkeypatch.setattr(bench_track, "SHARED_VIDEO", missing)
    for verb in ("track", "stream"):
        assert main(["bench", verb]) == 2
        err = capsys.readouterr().err
        words = f"no --video given, and the shared test video is not at {missing}"
        assert f"streamer bench {verb}: error: {words}" in err


def test_bench_viewers_measures_a_running_server(body, demo_avatar, capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.stream.background import ServerThread
    from streamer.stream.server import ServerConfig

    config = ServerConfig(host="127.0.0.1", port=0, size=64, fps=15.0, backend="cpu", motion="demo")
    with ServerThread(config, avatar=demo_avatar, body=body) as st:
        page = st.url + "view?stage=main"  # any page of the server will do
        code = main(["bench", "viewers", page, "--count", "3", "--seconds", "4", "--warmup", "0.5",
                     "--codec", "h264", "--json"])  # fmt: skip
        assert code == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["bench"] == "viewers" and report["count"] == 3 and report["codecs"] == ["video/H264"]
        assert len(report["fps_per_client"]) == 3 and report["fps_min"] > 0  # every viewer got pictures
        # at the stage's rate, not more (a short stall before the window may bring a few late frames in)
        assert report["fps_max"] <= 15.0 * 1.5
        assert report["server_cpu_cores"] > 0 and report["latency_ms_p50"] > 0
        # each viewer's own figures came back from the server: the rate it chose for that viewer
        assert len(report["bitrate_per_client"]) == 3 and set(report["bitrate_per_client"]) <= set(BITRATES)
        assert all(n is not None for n in report["resends_per_client"] + report["steps_down_per_client"])
        assert len(report["loss_per_client"]) == 3  # (None until a second of receiver reports came)
        deadline = time.monotonic() + 30
        while st.call(lambda: len(st.server.sessions)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st.call(lambda: len(st.server.sessions)) == 0  # the viewers left


def test_bench_viewers_says_when_there_is_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "viewers", "http://127.0.0.1:9/", "--count", "1"]) == 2
    assert "cannot read http://127.0.0.1:9/stats" in capsys.readouterr().err
    assert main(["bench", "viewers", "ftp://127.0.0.1/", "--count", "1"]) == 2
    assert "not an http(s) or ws(s) URL" in capsys.readouterr().err
