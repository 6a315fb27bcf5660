"""``streamer lhm info | check-manifest | check-checkpoint`` through an argparse parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from streamer.reconstruct.lhm import LHMNetwork, save_checkpoint
from streamer.reconstruct.lhm.cli import add_lhm_commands
from streamer.reconstruct.lhm.config import TINY

MANIFEST = Path(__file__).resolve().parents[1].parent / "shared" / "lhm" / "lhm_state_dict_manifest.json"

TABLE = {
    "MINI": (442_314_510, 129_549_070),
    "500M": (668_992_782, 356_227_342),
    "1B": (1_424_587_022, 1_111_821_582),
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="streamer")
    add_lhm_commands(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def _manifest() -> dict[str, Any]:
    if not MANIFEST.is_file():
        pytest.skip(f"LHM state-dict manifest not found at {MANIFEST} (shared/lhm beside the repo root)")
    data: dict[str, Any] = json.loads(MANIFEST.read_text())
    return data


@pytest.mark.parametrize("name", list(TABLE))
def test_info_json(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["lhm", "info", "--config", name.lower(), "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["config"] == name
    assert (info["params"], info["params_excluding_encoder"]) == TABLE[name]
    assert sum(info["params_by_component"].values()) == info["params"]
    assert info["buffer_keys"] == 32


def test_info_text_and_unknown_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["lhm", "info", "--config", "MINI"], capsys)
    assert code == 0
    assert "params: 442,314,510" in out and "params_excluding_encoder: 129,549,070" in out
    code, _, err = run(["lhm", "info", "--config", "2B"], capsys)
    assert code == 2 and "streamer lhm info: error: unknown LHM config '2B'" in err


def test_check_manifest_passes(capsys: pytest.CaptureFixture[str]) -> None:
    _manifest()
    code, out, _ = run(["lhm", "check-manifest", str(MANIFEST), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert set(result) == set(TABLE)
    for name, r in result.items():
        assert (r["missing"], r["unexpected"], r["shape_mismatch"], r["dtype_mismatch"]) == (0, 0, 0, 0), name
        assert r["params"] == r["manifest_params"] == TABLE[name][0]
        assert r["params_match"] is True


def test_check_manifest_reports_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest()
    mini = manifest["MINI"]
    del mini["transformer.norm.weight"]
    mini["transformer.extra.weight"] = [3]
    mini["pcl_embed.mlp.weight"] = [1024, 50]
    mini["_meta"]["buffers"]["pcl_embed.basis"]["dtype"] = "float64"
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"MINI": mini, "1B": manifest["1B"]}))
    code, out, _ = run(["lhm", "check-manifest", str(path), "--json"], capsys)
    assert code == 1
    result = json.loads(out)
    r = result["MINI"]
    assert (r["missing"], r["unexpected"], r["shape_mismatch"], r["dtype_mismatch"]) == (1, 1, 1, 1)
    assert "transformer.norm.weight" in r["details"] and "pcl_embed.mlp.weight" in r["details"]
    assert result["1B"]["missing"] == 0
    code, out, _ = run(["lhm", "check-manifest", str(path)], capsys)
    assert code == 1 and "MINI: missing 1, unexpected 1" in out and "MISMATCH" in out


def test_check_manifest_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["lhm", "check-manifest", str(tmp_path / "none.json")], capsys)
    assert code == 2 and "streamer lhm check-manifest: error: LHM state-dict manifest not found" in err
    code, _, err = run(["lhm", "check-manifest", str(tmp_path)], capsys)
    assert code == 2 and f"{tmp_path} is a folder; give the LHM state-dict manifest (.json)" in err
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps({"XL": {"a": [1]}}))
    code, out, _ = run(["lhm", "check-manifest", str(path), "--json"], capsys)
    assert code == 1 and "unknown LHM config 'XL'" in json.loads(out)["XL"]["error"]


def test_check_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = LHMNetwork(TINY)
    path = save_checkpoint(net, tmp_path / "tiny.pt")
    code, out, _ = run(["lhm", "check-checkpoint", str(path), "--config", "tiny", "--json"], capsys)
    assert code == 0 and json.loads(out)["missing"] == 0
    state = net.state_dict()
    state.pop("renderer.gs_net.out_layers.xyz.bias")
    torch.save(state, tmp_path / "broken.pt")
    code, out, _ = run(["lhm", "check-checkpoint", str(tmp_path / "broken.pt"), "--config", "tiny"], capsys)
    assert code == 1 and "renderer.gs_net.out_layers.xyz.bias" in out
    code, _, err = run(["lhm", "check-checkpoint", str(tmp_path)], capsys)
    assert code == 2 and "model.safetensors" in err
