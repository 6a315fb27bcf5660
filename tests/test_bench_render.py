"""``streamer bench render`` and the yardstick that ``bench stream`` reports with its figures."""

from __future__ import annotations

import json
import re

import pytest
from conftest import MACHINE_HEADER

from streamer.cli import main
from streamer.commands.bench import yardstick_ms


def test_bench_render_times_each_case(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "render", "--backends", "cpu", "--counts", "1000,4000", "--sizes", "64,128"]
    assert main([*args, "--repeats", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cases = {(r["gaussians"], r["size"]) for r in report["results"]}
    # every count at the first size, every size at the first count (neither 512 nor 40000 was given)
    assert cases == {(1000, 64), (4000, 64), (1000, 128)}
    assert all(r["backend"] == "cpu" and 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] for r in report["results"])
    assert main([*args[:-4], "--counts", "1000", "--sizes", "64", "--repeats", "1"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(MACHINE_HEADER.format(verb="render"), header), header


def test_yardstick_is_the_speed_tables_case(body, monkeypatch: pytest.MonkeyPatch) -> None:
    """The yardstick is the README's: the 40k demo avatar rendered at 512x512 on the CPU."""
    from streamer.commands import bench

    seen: dict[str, object] = {}
    real = bench._time_render

    def spy(renderer, posed, size, device, repeats, warmup):
        seen.update(renderer=renderer.name, gaussians=len(posed), size=size, device=device)
        return real(renderer, posed, size, device, repeats, warmup)

    monkeypatch.setattr(bench, "_time_render", spy)
    assert yardstick_ms(body, repeats=2) > 0.0
    assert seen == {"renderer": "cpu", "gaussians": 40000, "size": 512, "device": "cpu"}


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "render", "--counts", "abc"], "--counts must be a comma-separated list of integers"),
        (["bench", "render", "--counts", "100000000"], "--counts must be integers in [1, 5000000]"),
        (["bench", "render", "--sizes", "15"], "--sizes must be even integers in [16, 4096]"),
        (["bench", "render", "--sizes", "100000"], "--sizes must be even integers in [16, 4096]"),
        (["bench", "lbs", "--repeats", "0"], "--repeats must be >= 1"),
        (["bench", "track", "--hand-search-interval", "0"], "--hand-search-interval must be >= 1, got 0"),
        (["bench", "track", "--face-interval", "-1"], "--face-interval must be >= 1, got -1"),
    ],
)
def test_bad_bench_options_are_clean_errors(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"streamer bench {argv[1]}: error: {words}" in err, err
