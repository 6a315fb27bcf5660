"""Quality metrics (PSNR, SSIM, mask IoU) and the ``streamer eval recon`` / ``eval animate`` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from conftest import SHARED_VIDEO as VIDEO
from scipy.ndimage import gaussian_filter

from streamer.cli import main
from streamer.reconstruct.metrics import SSIM_K1, SSIM_K2, mask_iou, masked_scores, psnr, ssim, ssim_map

PHOTO = SHARED_DATA / "photos" / "studio_woman_skirt.png"


# -- metrics ------------------------------------------------------------------------------


def test_psnr_known_values() -> None:
    a = np.zeros((8, 8, 3))
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(20.0)  # MSE 0.01
    mask = np.zeros((8, 8), bool)
    mask[:2] = True
    b = a.copy()
    b[4:] = 1.0  # large errors outside the mask do not count
    b[:2] = 0.01
    assert psnr(a, b, mask) == pytest.approx(40.0)


def test_ssim_identical_is_one_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((40, 50, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    assert 0.0 < ssim(a, b) < 1.0
    noisier = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, noisier) < ssim(a, b)


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # No variance: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), exactly.
    a, b = np.full((20, 20), 0.2), np.full((20, 20), 0.6)
    c1 = SSIM_K1**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_a_direct_window_sum() -> None:
    """At an interior pixel, SSIM equals Wang et al.'s formula over an explicit 11x11 Gaussian window."""
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 30)), rng.random((30, 30))
    b = 0.5 * a + 0.5 * b
    r = 5  # 3.5 sigma, sigma 1.5 -> radius 5
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    w = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    w /= w.sum()
    y0, x0 = 15, 12
    pa, pb = a[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1], b[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
    mx, my = (w * pa).sum(), (w * pb).sum()
    vx, vy = (w * pa * pa).sum() - mx**2, (w * pb * pb).sum() - my**2
    cxy = (w * pa * pb).sum() - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_map(a, b)[y0, x0] == pytest.approx(expected, rel=1e-9)


def test_ssim_of_a_blurred_image_drops_with_blur() -> None:
    rng = np.random.default_rng(2)
    a = gaussian_filter(rng.random((64, 64)), 1.0)
    values = [ssim(a, gaussian_filter(a, s)) for s in (0.5, 1.0, 2.0)]
    assert values[0] > values[1] > values[2]


def test_mask_iou() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert mask_iou(a, b) == 1.0
    a[:5] = True
    b[:, :5] = True
    assert mask_iou(a, b) == pytest.approx(25 / 75)
    valid = np.zeros((10, 10), bool)
    valid[:5, :5] = True
    assert mask_iou(a, b, valid) == 1.0


def test_masked_scores_ignore_the_background() -> None:
    rng = np.random.default_rng(3)
    photo = rng.random((32, 32, 3))
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    render = np.where(mask[..., None], photo, 0.0)
    alpha = mask.astype(float)
    s = masked_scores(render, alpha, photo, mask)
    assert s["psnr_db"] == math.inf and s["ssim"] == pytest.approx(1.0) and s["mask_iou"] == 1.0
    s2 = masked_scores(np.clip(render + 0.1 * mask[..., None], 0, 1), alpha, photo, mask)
    assert s2["psnr_db"] < 25 and s2["ssim"] < 1.0
    # a crop reaching past the photo: the render covering that part is not counted against the IoU
    valid = np.ones((32, 32), bool)
    valid[:, 24:] = False
    wide = alpha.copy()
    wide[8:24, 24:] = 1.0
    assert masked_scores(render, wide, photo, mask, valid)["mask_iou"] == 1.0
    assert masked_scores(render, wide, photo, mask)["mask_iou"] < 0.8


# -- commands -----------------------------------------------------------------------------


@pytest.mark.skipif(not PHOTO.exists(), reason="shared photos not found beside the repository")
def test_eval_recon_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "sheet.png"
    assert main(["eval", "recon", str(PHOTO), "--sheet", str(sheet), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Measured on this photo: about 21 dB, SSIM 0.70, mask IoU 0.91 (skirt included by the normal offsets).
    assert report["psnr_db"] > 19.0 and report["ssim"] > 0.6 and report["mask_iou"] > 0.85, report
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] == 500 and img.shape[1] == 5 * 300
    # The side and back views show a body, not an empty frame; with the arms lowered the body fills
    # the tiles' height (measured: 84-87%; half of it with the arms spread, which set the framing).
    for tile in (img[:, 600:900], img[:, 900:1200], img[:, 1200:1500]):
        body = tile.min(axis=2) < 200
        assert body.mean() > 0.03
        rows = np.nonzero(body.any(axis=1))[0]
        assert rows.max() - rows.min() > 0.75 * img.shape[0]


def test_a_half_body_photo_is_evaluated_with_a_warning_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    """The warning that the legs are made up reaches the person as the command's own line, not as
    Python's (file, line number, ``UserWarning``)."""
    assert main(["eval", "recon", str(SHARED_DATA / "photos" / "outdoor_man_small.jpg"), "--json"]) == 0
    err = capsys.readouterr().err
    assert "streamer eval recon: warning: the photo does not show the whole body (hips and knees)" in err, err
    assert "UserWarning" not in err and ".py:" not in err, err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--sheet", "sheet.jpg"], "sheet.jpg: the output must end in .png"),
        (["--backend", "foo"], "unknown render backend 'foo'"),
        (["--gaussians", "5"], "--gaussians must be between 100 and 1,000,000, got 5"),
    ],
)
def test_eval_recon_refuses_bad_options_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args, words
) -> None:
    def no_read(*a: object, **k: object) -> None:
        raise AssertionError("the photo was read")

    monkeypatch.setattr("streamer.reconstruct.image.read_photo", no_read)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "recon", "photo.png", *args]) == 2
    assert f"streamer eval recon: error: {words}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not VIDEO.exists(), reason="shared video not found beside the repository")
def test_eval_animate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = tmp_path / "animate.png"
    args = ["eval", "animate", str(VIDEO), "--max-frames", "3", "--per-frame", "--json"]
    assert main([*args, "--sheet", str(sheet)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3 and [f["frame"] for f in report["per_frame"]] == [1, 2, 3]
    assert report["refined"] is True  # poses refined offline to the person mask by default
    # ... and then to the frame's colours, a pose kept only where it agrees better with the frame.
    assert report["photometric"] is True and report["photometric_kept"] >= 2  # measured: 3 of 3
    assert sum(f["photometric"] for f in report["per_frame"]) == report["photometric_kept"]
    assert report["method"] == "fit" and report["gaussians"] > 40_000  # the surface's 40k and the discs
    # Measured: 29.6 dB over the first three frames (the person stands still), 24.6 dB with
    # --no-photometric: above 26 only if the colour stage lines the texture up with the frame.
    assert report["psnr_db"] > 26.0 and report["mask_iou"] > 0.85, report
    # The sheet: the three frames above the avatar; the video (720x1280) fills the 5:3 crop's height.
    assert report["sheet"] == str(sheet) and report["sheet_frames"] == [1, 2, 3]
    worst = min(report["per_frame"], key=lambda f: f["psnr_db"])["frame"]
    assert report["sheet_worst"] == worst
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape == (640, 3 * round(720 * 320 / 1280), 3), img.shape
    frame = cv2.cvtColor(img[:320, :180], cv2.COLOR_BGR2RGB)
    first = cv2.resize(_video_frame(1), (180, 320), interpolation=cv2.INTER_AREA)
    inner = (slice(40, -4), slice(4, -4))  # below the label, inside the red frame if frame 1 is the worst
    assert np.abs(frame[inner].astype(int) - first[inner]).mean() < 3  # the video's frame 1
    avatar = img[320:, :180]
    assert (avatar.min(axis=2) < 200).mean() > 0.05  # a body drawn on white
    assert (np.all(avatar == (0, 170, 0), axis=2)).sum() > 200  # the person mask's outline (BGR green)
    # Without the colour stage the silhouette's poses are scored as they are.
    args = ["eval", "animate", str(VIDEO), "--max-frames", "1", "--per-frame", "--json", "--no-photometric"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["refined"] is True and plain["photometric"] is False and "photometric_kept" not in plain
    assert "photometric" not in plain["per_frame"][0]
    # In words: the figures, and how many frames kept their colour-fitted pose.
    assert main(["eval", "animate", str(VIDEO), "--max-frames", "1"]) == 0
    words = capsys.readouterr().out
    assert "mean PSNR" in words and "over 1 frames" in words
    assert "poses fitted to each frame's colours: kept in 1 of 1 frames" in words


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eval_on_the_cuda_backend_scores_as_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--backend cuda`` renders the avatars (posed on the CPU) with gsplat: it failed on every GPU
    before, the Gaussians left on the CPU. The two rasterizers agree to float rounding."""
    scores = {}
    for backend in ("cpu", "cuda"):
        sheet = tmp_path / f"{backend}.png"
        assert main(["eval", "recon", str(PHOTO), "--backend", backend, "--sheet", str(sheet), "--json"]) == 0
        recon = json.loads(capsys.readouterr().out)
        assert main(["eval", "animate", str(VIDEO), "--max-frames", "2", "--backend", backend, "--json"]) == 0
        scores[backend] = (recon, json.loads(capsys.readouterr().out))
        assert cv2.imread(str(sheet)) is not None
    for cpu, gpu in zip(scores["cpu"], scores["cuda"], strict=True):
        assert abs(cpu["psnr_db"] - gpu["psnr_db"]) < 0.05, (cpu, gpu)
        assert abs(cpu["ssim"] - gpu["ssim"]) < 0.005, (cpu, gpu)


def _video_frame(index: int) -> np.ndarray:
    from streamer.tracking.sources import VideoFileSource

    with VideoFileSource(VIDEO) as source:
        for i, (_, rgb) in enumerate(source):
            if i == index:
                return rgb
    raise AssertionError(f"{VIDEO} has no frame {index}")


def test_eval_animate_refuses_a_sheet_it_cannot_write_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("the video was evaluated")

    monkeypatch.setattr("streamer.reconstruct.evaluate.evaluate_video", no_work)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "animate", "clip.mp4", "--sheet", "sheet.jpg"]) == 2
    assert "streamer eval animate: error: sheet.jpg: the output must end in .png" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert main(["eval", "animate", "clip.mp4", "--sheet", "taken"]) == 2
    assert "taken is a folder; give a file name" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_eval_animate_bad_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    assert main(["eval", "animate", str(bad)]) == 2
    assert "not a readable video" in capsys.readouterr().err


def test_no_person_names_the_photo_or_the_video_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.render.video import VideoWriter

    wall = np.full((240, 320, 3), 150, np.uint8)
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), wall)
    assert main(["eval", "recon", str(photo)]) == 2
    err = capsys.readouterr().err
    assert f"streamer eval recon: error: {photo}: no person found" in err and "crop" in err, err
    video = tmp_path / "empty_room.mp4"
    with VideoWriter(video, 320, 240, fps=30.0) as w:
        for _ in range(3):
            w.write(wall)
    assert main(["eval", "animate", str(video)]) == 2
    err = capsys.readouterr().err
    assert f"{video}: the first frame, which the avatar is built from: no person found" in err, err
