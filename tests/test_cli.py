"""The ``streamer`` console script itself: what building its parser costs, and what it does to the process."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import threading
import warnings

import pytest

from streamer.cli import main
from streamer.errors import StreamerWarning
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
    """(its ``__init__`` imports nothing up front; every name it lists still resolves, and so do its
    submodules, and ``dir()`` lists them)"""
    code = (
        "import sys\nimport streamer.reconstruct.lhm as lhm\nprint('torch' in sys.modules)\n"
        "print(lhm.manifest.__name__)"  # a submodule nobody imported yet
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.split() == ["False", "streamer.reconstruct.lhm.manifest"], proc
    assert sorted(lhm.__all__) == sorted(lhm._WHERE) and set(lhm.__all__) <= set(dir(lhm))
    for name in lhm.__all__:
        home = importlib.import_module(f"streamer.reconstruct.lhm.{lhm._WHERE[name]}")
        assert getattr(lhm, name) is getattr(home, name), name


def _spy_command(monkeypatch: pytest.MonkeyPatch, seen: dict) -> None:
    """``streamer render`` replaced by a command that notes the process's state while it runs and
    shows a warning of ours and one of another library's."""
    from streamer.commands import render

    def run(args: object) -> int:
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        seen["show"] = warnings.showwarning
        warnings.showwarning("the legs are made up", StreamerWarning, "fit.py", 1)
        warnings.showwarning("a library's note", UserWarning, "lib.py", 2)
        return 0

    monkeypatch.setattr(render, "run", run)


@pytest.mark.parametrize("before", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_main_handles_sigterm_and_our_warnings_only_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    recwarn: pytest.WarningsRecorder,
    before: object,
) -> None:
    seen: dict = {}
    _spy_command(monkeypatch, seen)
    previous = signal.signal(signal.SIGTERM, before)
    show = warnings.showwarning
    try:
        assert main(["render"]) == 0
        after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert "streamer render: warning: the legs are made up" in err
    # another library's warning goes where Python's own display sends it (here: pytest's record)
    assert "a library's note" not in err and [str(w.message) for w in recwarn] == ["a library's note"]
    # SIGTERM unwinds the command while it runs; a SIGTERM ignored by the caller stays ignored
    assert (seen["sigterm"] is signal.SIG_IGN) if before is signal.SIG_IGN else callable(seen["sigterm"])
    assert after is before and warnings.showwarning is show  # as it found them


def test_main_off_the_main_thread_leaves_the_process_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], recwarn: pytest.WarningsRecorder
) -> None:
    seen: dict = {}
    _spy_command(monkeypatch, seen)
    show, sigterm = warnings.showwarning, signal.getsignal(signal.SIGTERM)
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(main(["render"])))
    worker.start()
    worker.join(60)
    assert codes == [0] and seen["show"] is show and seen["sigterm"] is sigterm
    assert capsys.readouterr().err == ""  # both warnings took Python's own way
    assert [str(w.message) for w in recwarn] == ["the legs are made up", "a library's note"]


def test_the_console_script_exits_with_mains_code_and_skips_only_the_last_garbage_collection() -> None:
    """``console`` (the installed ``streamer``) ends the process with :func:`main`'s exit code, runs
    the atexit handlers and flushes the output as any exit does, but leaves the heap to the operating
    system: a reference cycle still around at exit is not collected (its finaliser does not run),
    which is the 0.4 s that Python's last collections took after ``reconstruct`` had loaded torch."""
    code = (
        "import atexit, gc, sys\n"
        "from streamer.cli import console\n"
        "gc.disable()\n"  # (no collection while the command runs: only the exit's could take the cycle)
        "class Cycle:\n"
        "    def __del__(self):\n"
        "        sys.stderr.write('collected\\n')\n"
        "a, b = Cycle(), Cycle()\n"
        "a.other, b.other = b, a\n"
        "del a, b\n"
        "atexit.register(lambda: sys.stderr.write('atexit ran\\n'))\n"
        "sys.stdout.write('x' * 200000)\n"  # still in the buffer when console() returns
        "sys.argv = ['streamer', *sys.argv[1:]]\n"
        "console()\n"
    )
    missing = subprocess.run(
        [sys.executable, "-c", code, "render", "--avatar", "no-such-avatar.ply"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2, missing.stderr  # main's one-line error
    assert "streamer render: error:" in missing.stderr and "atexit ran" in missing.stderr
    assert len(missing.stdout) == 200000
    assert "collected" not in missing.stderr
    # the same script with main() as the entry: Python's own exit collects the cycle
    plain = code.replace("from streamer.cli import console", "from streamer.cli import main").replace(
        "console()\n", "sys.exit(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", plain, "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and "collected" in proc.stderr and "atexit ran" in proc.stderr
