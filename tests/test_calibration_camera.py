"""Camera intrinsics: a synthetic checkerboard under known K is recovered; FOV guesses; the JSON file."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from calibration.camera import (
    CameraIntrinsics,
    calibrate_checkerboard,
    calibration_images,
    intrinsics_from_fov,
    load_intrinsics,
    parse_pattern,
)
from streamer.cli import main
from streamer.errors import CameraCalibrationError, InputError
from streamer.render.video import VideoWriter

# Ground truth in OpenCV's convention (pixel centres at integers); ours adds 0.5 to cx, cy.
K_TRUE_CV = np.array([[620.0, 0.0, 330.0], [0.0, 615.0, 235.0], [0.0, 0.0, 1.0]])
SIZE = (640, 480)
PATTERN = (9, 6)


def board_texture(pattern: tuple[int, int], px_per_square: int, margin: int) -> np.ndarray:
    """A printable board: (cols+1) x (rows+1) squares in a white margin of ``margin`` squares. [H, W] uint8"""
    cols, rows = pattern[0] + 1, pattern[1] + 1
    tex = np.full(((rows + 2 * margin) * px_per_square, (cols + 2 * margin) * px_per_square), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                y, x = (r + margin) * px_per_square, (c + margin) * px_per_square
                tex[y : y + px_per_square, x : x + px_per_square] = 0
    return tex


def render_board_views(n: int = 12, square_mm: float = 25.0, seed: int = 0) -> list[np.ndarray]:
    """Grey images of a planar board under K_TRUE_CV at random tilts (up to ~30 deg) and distances."""
    rng = np.random.default_rng(seed)
    pps, margin = 60, 1
    tex = board_texture(PATTERN, pps, margin)
    metres_per_px = square_mm / 1000.0 / pps
    first_corner = (margin + 1) * pps - 0.5  # texture pixel of the first inner corner (OpenCV centres)
    tex_to_board = np.array(
        [
            [metres_per_px, 0, -first_corner * metres_per_px],
            [0, metres_per_px, -first_corner * metres_per_px],
            [0, 0, 1],
        ]
    )
    centre = np.array([PATTERN[0], PATTERN[1], 0.0]) * square_mm / 2000.0
    views = []
    for _ in range(n):
        R, _ = cv2.Rodrigues(
            np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)])
        )
        t = np.array([*rng.uniform(-0.06, 0.06, 2), rng.uniform(0.45, 0.7)]) - R @ centre
        H = K_TRUE_CV @ np.column_stack([R[:, 0], R[:, 1], t]) @ tex_to_board
        views.append(cv2.warpPerspective(tex, H, SIZE, flags=cv2.INTER_LINEAR, borderValue=110))
    return views


def assert_recovers_k(intr: CameraIntrinsics) -> None:
    K = intr.K
    assert (intr.width, intr.height) == SIZE
    assert K[0, 0] == pytest.approx(K_TRUE_CV[0, 0], rel=0.01) and K[1, 1] == pytest.approx(
        K_TRUE_CV[1, 1], rel=0.01
    )
    assert abs(K[0, 2] - (K_TRUE_CV[0, 2] + 0.5)) < 3.0 and abs(K[1, 2] - (K_TRUE_CV[1, 2] + 0.5)) < 3.0
    assert intr.rms_px is not None and intr.rms_px < 0.5
    assert np.abs(intr.dist[:2]).max() < 0.2  # the synthetic lens has none


def test_checkerboard_images_recover_k():
    intr = calibrate_checkerboard(render_board_views(), PATTERN, square_mm=25.0)
    assert_recovers_k(intr)
    assert intr.method == "checkerboard" and intr.views == 12


def test_cli_calibrates_from_a_checkerboard_video(tmp_path, capsys):
    video = tmp_path / "board.mp4"
    with VideoWriter(video, *SIZE, fps=10) as w:
        for grey in render_board_views(n=10, seed=1):
            for _ in range(3):  # a still board for three frames: repeated views are skipped
                w.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    out = tmp_path / "K.json"
    code = main(
        [
            "calibrate",
            "camera",
            "--checkerboard",
            str(video),
            "--pattern",
            "9x6",
            "--square-mm",
            "25",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and summary["views"] == 10 and summary["rms_px"] < 0.5
    intr = load_intrinsics(out)
    assert_recovers_k(intr)
    camera = intr.camera()
    assert (camera.width, camera.height) == SIZE
    assert np.allclose(camera.K.numpy(), intr.K, rtol=1e-5)


def test_too_few_views_say_why(tmp_path):
    blank = [np.full((120, 160), 128, np.uint8)] * 5
    with pytest.raises(CameraCalibrationError, match=r"in 0 distinct view\(s\) of 5 image\(s\).*--pattern"):
        calibrate_checkerboard(blank, PATTERN)
    with pytest.raises(CameraCalibrationError, match="differ in size"):
        calibrate_checkerboard([np.zeros((10, 10), np.uint8), np.zeros((12, 10), np.uint8)], PATTERN)


def test_fov_guess():
    intr = intrinsics_from_fov(90.0, 1280, 720, axis="horizontal")
    assert intr.K[0, 0] == pytest.approx(640.0) and intr.K[1, 1] == pytest.approx(640.0)
    assert (intr.K[0, 2], intr.K[1, 2]) == (640.0, 360.0)  # the image centre (pixel centres at +0.5)
    assert intr.fov_x_deg == pytest.approx(90.0)
    diag = intrinsics_from_fov(78.0, 1920, 1080)  # webcams quote the diagonal
    assert math.degrees(2 * math.atan(math.hypot(1920, 1080) / 2 / diag.K[0, 0])) == pytest.approx(78.0)
    assert intrinsics_from_fov(40.0, 100, 200, axis="vertical").fov_y_deg == pytest.approx(40.0)
    with pytest.raises(InputError, match=r"\(0, 180\)"):
        intrinsics_from_fov(180.0, 100, 100)


def test_cli_fov(tmp_path, capsys):
    out = tmp_path / "K.json"
    assert (
        main(
            [
                "calibrate",
                "camera",
                "--fov",
                "60",
                "--fov-axis",
                "vertical",
                "--size",
                "640x480",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert load_intrinsics(out).fov_y_deg == pytest.approx(60.0)
    assert main(["calibrate", "camera", "--fov", "60", "-o", str(out)]) == 2
    assert "--fov needs --size" in capsys.readouterr().err
    assert main(["calibrate", "camera", "--fov", "-60", "--size", "640x480", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "streamer calibrate camera: error: --fov must be in (0, 180) degrees, got -60.0" in err


def test_json_round_trip_and_corrupt_files(tmp_path):
    intr = CameraIntrinsics(
        K=K_TRUE_CV,
        width=640,
        height=480,
        dist=[0.1, -0.05, 0.001, 0.0, 0.0],
        method="checkerboard",
        rms_px=0.2,
        views=9,
    )
    back = load_intrinsics(intr.save(tmp_path / "K.json"))
    assert np.array_equal(back.K, intr.K) and np.array_equal(back.dist, intr.dist)
    assert (back.width, back.height, back.method, back.rms_px, back.views) == (
        640,
        480,
        "checkerboard",
        0.2,
        9,
    )

    def write(name: str, text: str):
        (tmp_path / name).write_text(text)
        return tmp_path / name

    with pytest.raises(CameraCalibrationError, match="not found"):
        load_intrinsics(tmp_path / "nope.json")
    with pytest.raises(CameraCalibrationError, match="not a readable JSON"):
        load_intrinsics(write("cut.json", intr.save(tmp_path / "K2.json").read_text()[:40]))
    with pytest.raises(CameraCalibrationError, match="not a camera intrinsics file"):
        load_intrinsics(write("other.json", '{"fps": 30}'))
    good = json.loads((tmp_path / "K.json").read_text())
    with pytest.raises(CameraCalibrationError, match="NaN"):
        load_intrinsics(
            write("nan.json", json.dumps({**good, "K": [[float("nan"), 0, 1], [0, 1, 1], [0, 0, 1]]}))
        )
    with pytest.raises(CameraCalibrationError, match="3x3"):
        load_intrinsics(write("shape.json", json.dumps({**good, "K": [[1, 0], [0, 1]]})))
    with pytest.raises(CameraCalibrationError, match="missing width"):
        load_intrinsics(write("size.json", json.dumps({k: v for k, v in good.items() if k != "width"})))
    with pytest.raises(CameraCalibrationError, match="non-numeric"):
        load_intrinsics(write("text.json", json.dumps({**good, "K": "eye"})))


def test_scaling_and_undistortion():
    intr = CameraIntrinsics(
        K=[[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]],
        width=1280,
        height=720,
        dist=[-0.2, 0.05, 0.001, -0.001, 0.0],
    )
    half = intr.scaled_to(640, 360)
    assert np.allclose(half.K, [[500, 0, 320], [0, 500, 180], [0, 0, 1]])
    with pytest.raises(CameraCalibrationError, match="different aspect ratio"):
        intr.scaled_to(720, 720)
    # Distort ideal pixels with OpenCV, then undistort: back where they were.
    ideal = np.array([[100.5, 80.5], [640.0, 360.0], [1200.0, 700.0]])
    rays = np.column_stack([(ideal - 0.5 - intr.opencv_K()[:2, 2]) / 1000.0, np.ones(3)])
    distorted, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), intr.opencv_K(), intr.dist)
    distorted = distorted.reshape(-1, 2) + 0.5
    assert np.abs(distorted - ideal).max() > 5  # the lens moves them noticeably
    assert np.allclose(intr.undistort_points(distorted), ideal, atol=0.05)
    no_lens = intrinsics_from_fov(60, 640, 480)
    assert np.array_equal(no_lens.undistort_points(ideal), ideal.astype(np.float32))


def test_pattern_parsing():
    assert parse_pattern("9x6") == (9, 6) and parse_pattern("7X5") == (7, 5)
    for bad in ("9", "9x", "1x6", "axb"):
        with pytest.raises(InputError, match="pattern"):
            parse_pattern(bad)


@pytest.mark.parametrize("limit", [4, 7, 30])
def test_video_frames_are_capped_and_spread(tmp_path, limit):
    """A 30-frame video gives at most ``max_video_frames`` images, spread over its length."""
    video = tmp_path / "board.mp4"
    with VideoWriter(video, *SIZE, fps=10) as w:
        for grey in render_board_views(n=10, seed=1):
            for _ in range(3):
                w.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    names = [name for name, _ in calibration_images([video], max_video_frames=limit)]
    assert 0 < len(names) <= limit
    assert len(names) >= min(limit, 30) // 2  # not just the first few
    last = int(names[-1].split("#")[1])
    assert last >= 30 - 30 // limit - 3  # reaches the end of the video
