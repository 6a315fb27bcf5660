"""The ``streamer`` console script itself: what building its parser costs."""

from __future__ import annotations

import importlib
import subprocess
import sys

from streamer.reconstruct import lhm


def test_help_loads_neither_torch_nor_the_media_libraries() -> None:
    """``streamer --help`` (and a typo in a verb) answers without importing torch, MediaPipe, OpenCV,
    PyAV or aiortc: 0.3 s instead of 2.5 on this machine. The commands import them when they run."""
    heavy = ("torch", "mediapipe", "cv2", "av", "aiortc", "smplx")
    code = (
        "import sys\nfrom streamer.cli import build_parser\nbuild_parser()\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"building the parser imported {proc.stdout.strip()}"
    help_text = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert help_text.returncode == 0 and "reconstruct" in help_text.stdout and "serve" in help_text.stdout


def test_the_lhm_package_names_load_on_first_use() -> None:
    """(its ``__init__`` imports nothing up front; every name it lists still resolves)"""
    assert sorted(lhm.__all__) == sorted(lhm._WHERE)
    for name in lhm.__all__:
        home = importlib.import_module(f"streamer.reconstruct.lhm.{lhm._WHERE[name]}")
        assert getattr(lhm, name) is getattr(home, name), name
