"""Per-thread CPU time (``bench stream``'s breakdown): threads are grouped by name and charged what they used."""

from __future__ import annotations

import threading
import time

import pytest

from streamer.commands.thread_cpu import UNNAMED, ThreadCpu, group_name


def test_numbered_siblings_share_a_group() -> None:
    assert group_name("mediapipe/784") == "mediapipe"
    assert group_name("asyncio_0") == "asyncio"
    assert group_name("ThreadPoolExecutor-0_1") == "ThreadPoolExecutor"
    assert group_name("render-main") == "render-main"
    assert group_name("pose-fit") == "pose-fit"
    assert group_name("007") == "007"  # nothing but a number: kept


def test_a_busy_thread_is_charged_and_a_sleeping_one_is_not() -> None:
    sampler = ThreadCpu()
    if not sampler.available:
        pytest.skip("no /proc/self/task (not Linux)")
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
