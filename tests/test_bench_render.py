"""``streamer bench render`` and the yardstick that ``bench stream`` reports with its figures."""

from __future__ import annotations

import json

import pytest

from streamer.cli import main
from streamer.commands.bench import yardstick_ms


def test_bench_render_times_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "render", "--backends", "cpu", "--counts", "1000,4000", "--sizes", "64,128"]
    assert main([*args, "--repeats", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cases = {(r["gaussians"], r["size"]) for r in report["results"]}
    # every count at the middle size, every size at the middle count (the first of two)
    assert cases == {(1000, 64), (4000, 64), (1000, 128)}
    assert all(r["backend"] == "cpu" and 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] for r in report["results"])


def test_yardstick_is_a_render_time(body) -> None:
    assert 0.0 < yardstick_ms(body, repeats=3) < 10_000.0
