"""The person search in a separate process (``streamer reconstruct`` runs it beside the model loading)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA

from streamer.errors import ReconstructionError, StreamerWarning
from streamer.reconstruct.image import read_photo
from streamer.reconstruct.person import find_person
from streamer.reconstruct.person_search import PersonSearch

PHOTO = SHARED_DATA / "photos" / "woman_hat_bag.png"
needs_photo = pytest.mark.skipif(not PHOTO.exists(), reason="shared photos not found beside the repository")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@needs_photo
def test_the_separate_process_finds_the_person_this_one_finds() -> None:
    rgb = read_photo(PHOTO)
    with PersonSearch(rgb, separate=True) as search:
        there = search.result()
    here = find_person(rgb)
    assert search.seconds is not None and search.seconds > 0  # it ran in the other process
    assert there.rgb.shape == here.rgb.shape and there.people == here.people == 1 and there.full_body
    np.testing.assert_allclose(there.box, here.box, atol=2.0)  # (MediaPipe is not bit-exact run to run)
    assert _iou(there.mask, here.mask) > 0.99
    assert there.landmarks.pose is not None and here.landmarks.pose is not None
    np.testing.assert_allclose(there.landmarks.pose.image[:, :2], here.landmarks.pose.image[:, :2], atol=2.0)


def test_nobody_in_the_photo_is_the_same_error_here() -> None:
    wall = np.clip(np.random.default_rng(1).normal(150, 10, (480, 640, 3)), 0, 255).astype(np.uint8)
    with (
        PersonSearch(wall, separate=True) as search,
        pytest.raises(ReconstructionError, match="no person found"),
    ):
        search.result()
    assert search.seconds is not None  # the answer came from the other process


@needs_photo
def test_the_separate_search_s_warnings_are_shown_here() -> None:
    one = cv2.imread(str(PHOTO))[:, :, ::-1]
    other = np.full_like(one, 230)
    other[192:, :576] = cv2.resize(one, (576, 768))
    rgb = np.ascontiguousarray(np.concatenate([one, other], 1))
    with PersonSearch(rgb, separate=True) as search, pytest.warns(StreamerWarning, match="2 people"):
        person = search.result()
    assert person.people == 2 and search.seconds is not None


@needs_photo
def test_a_search_process_that_dies_is_searched_again_here() -> None:
    rgb = read_photo(PHOTO)
    with PersonSearch(rgb, separate=True) as search:
        search._process.kill()  # (as the kernel's out-of-memory killer would)
        person = search.result()
    assert search.seconds is None  # found here
    assert person.people == 1 and person.landmarks.pose is not None


def test_without_a_separate_process_the_search_runs_when_asked() -> None:
    wall = np.full((480, 640, 3), 150, np.uint8)
    search = PersonSearch(wall, separate=False)
    with pytest.raises(ReconstructionError, match="no person found"):
        search.result()
    assert search.seconds is None


@needs_photo
def test_a_fresh_reconstruct_command_searches_beside_the_model_loading(tmp_path: Path) -> None:
    """A new process has not imported torch yet: the search goes to a second process. That one does
    not run the caller's main module again, here a script without an ``if __name__`` guard."""
    out, script = tmp_path / "avatar.ply", tmp_path / "script.py"
    script.write_text(
        "from streamer.cli import main\n"
        "print('the script ran')\n"
        f"main(['reconstruct', {str(PHOTO)!r}, '-o', {str(out)!r}, '--json'])\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    ran, json_line = proc.stdout.splitlines()
    assert ran == "the script ran" and "Traceback" not in proc.stderr, proc
    report = json.loads(json_line)
    assert report["detect_beside_read_s"] > 0 and report["people"] == 1 and report["full_body"]
    assert report["gaussians"] > 40_000 and out.stat().st_size > 0
    # the wait for the search is part of the split; the search's own time ran beside read
    assert set(report["steps_s"]) >= {"read", "detect", "fit", "colour", "save"}


def test_a_fresh_reconstruct_command_says_when_nobody_is_in_the_photo(tmp_path: Path) -> None:
    wall = np.clip(np.random.default_rng(1).normal(150, 10, (480, 640, 3)), 0, 255).astype(np.uint8)
    photo, out = tmp_path / "wall.png", tmp_path / "avatar.ply"
    cv2.imwrite(str(photo), wall)
    proc = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "reconstruct", str(photo), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    assert "streamer reconstruct: error:" in proc.stderr and "wall.png: no person found" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
