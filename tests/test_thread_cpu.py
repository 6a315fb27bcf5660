"""Per-thread CPU time (``bench stream``'s breakdown): threads are grouped by name and charged what they used."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from streamer.commands.thread_cpu import UNNAMED, ThreadCpu, group_name, process_age_s


def test_numbered_siblings_share_a_group() -> None:
    assert group_name("mediapipe/784") == "mediapipe"
    assert group_name("asyncio_0") == "asyncio"
    assert group_name("ThreadPoolExecutor-0_1") == "ThreadPoolExecutor"
    assert group_name("render-main") == "render-main"
    assert group_name("pose-fit") == "pose-fit"
    assert group_name("007") == "007"  # nothing but a number: kept


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread CPU times come from Linux's /proc")
def test_a_busy_thread_is_charged_and_a_sleeping_one_is_not() -> None:
    sampler = ThreadCpu()
    assert sampler.available  # Linux has /proc/self/task (and the skip is decided apart from it)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    busy = threading.Thread(target=spin, name="busy-worker_3")
    idle = threading.Thread(target=stop.wait, name="idle-worker")
    busy.start()
    idle.start()
    try:
        sampler.start()
        t0 = time.monotonic()
        time.sleep(1.0)
        shares = sampler.shares(time.monotonic() - t0)
    finally:
        stop.set()
        busy.join()
        idle.join()
    assert shares.get("busy-worker", 0.0) >= 10.0  # percent of one core; a free core gives ~100
    assert shares.get("idle-worker", 0.0) <= 2.0
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert UNNAMED not in shares or shares[UNNAMED] < shares["busy-worker"]


def test_no_proc_gives_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from streamer.commands import thread_cpu

    monkeypatch.setattr(thread_cpu, "TASKS", tmp_path / "missing")
    sampler = ThreadCpu()
    sampler.start()
    assert not sampler.available and sampler.shares(1.0) == {}


@pytest.mark.skipif(sys.platform != "linux", reason="the process start time comes from Linux's /proc")
def test_process_age_counts_from_the_process_start() -> None:
    """A fresh interpreter that waits 1.5 s is 1.5 s old plus its start-up, not less, not minutes."""
    assert process_age_s() is not None
    code = (
        "import time\ntime.sleep(1.5)\n"
        "from streamer.commands.thread_cpu import process_age_s\nprint(process_age_s())"
    )
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    age, outside = float(p.stdout), time.monotonic() - t0
    assert 1.5 <= age <= outside + 0.05, (age, outside)  # the start time is in 10 ms clock ticks
    t0 = time.monotonic()
    first = process_age_s()
    time.sleep(0.2)
    second = process_age_s()
    assert first is not None and second is not None
    assert 0.2 <= second - first <= time.monotonic() - t0 + 1e-3  # the age grows with the clock
