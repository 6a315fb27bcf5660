"""``streamer lhm ...``: inspect the LHM architecture and check manifests / checkpoints.

Sub-verbs (each handler returns the process exit code):

* ``lhm info --config NAME [--json]``: parameter counts, built on ``meta`` (no memory);
* ``lhm check-manifest FILE [--json]``: our networks against a state-dict manifest;
  exit 1 when any key, shape, dtype or count differs;
* ``lhm check-checkpoint PATH [--config NAME] [--json]``: a checkpoint's layout (header only)
  against our network; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ...errors import StreamerError
from .config import CONFIGS, get_config

# (the network's modules, and torch, load when a command runs: ``streamer --help`` stays quick)

#: Top-level state-dict components reported by ``lhm info``.
COMPONENTS: tuple[str, ...] = (
    "encoder.model.",
    "encoder.fusion_head.",
    "pcl_embed.",
    "transformer.",
    "renderer.",
    "motion_embed_mlp.",
)


def add_lhm_commands(subparsers: Any) -> None:
    """Add the ``lhm`` verb to the ``streamer`` console script.

    Args:
        subparsers: what ``argparse.ArgumentParser.add_subparsers()`` returned.
    """
    lhm = subparsers.add_parser("lhm", help="LHM network: architecture info, manifest and checkpoint checks")
    verbs = lhm.add_subparsers(dest="lhm_verb", metavar="WHAT")
    verbs.required = True

    info = verbs.add_parser("info", help="parameter counts of a configuration (built on the meta device)")
    info.add_argument("--config", required=True, help=f"one of {', '.join(CONFIGS)} (case-insensitive)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_info)

    man = verbs.add_parser("check-manifest", help="compare our networks with a state-dict manifest json")
    man.add_argument("file", metavar="FILE", help="manifest json: {config: {key: shape, ...}}")
    man.add_argument("--json", action="store_true", help="print json")
    man.set_defaults(func=cmd_check_manifest)

    ckpt = verbs.add_parser(
        "check-checkpoint", help="compare a checkpoint's keys and shapes with our network"
    )
    ckpt.add_argument("path", metavar="PATH", help="model.safetensors (or .pt), or its directory")
    ckpt.add_argument(
        "--config",
        help="configuration (default: detected from the checkpoint among the released MINI, 500M, 1B)",
    )
    ckpt.add_argument("--json", action="store_true", help="print json")
    ckpt.set_defaults(func=cmd_check_checkpoint)


_COUNT_KEYS = ("missing", "unexpected", "shape_mismatch", "dtype_mismatch")


def _fail(args: argparse.Namespace, message: str) -> int:
    """Say what went wrong as every other command does (``streamer lhm VERB: error: ...``); exit code 2."""
    print(f"streamer lhm {args.lhm_verb}: error: {message}", file=sys.stderr)
    return 2


def info_dict(config_name: str) -> dict[str, Any]:
    """The figures ``lhm info`` prints for one configuration."""
    from .model import ENCODER_PREFIX, build_network, count_parameters

    config = get_config(config_name)
    net = build_network(config, "meta")
    state = net.state_dict()
    n_params = sum(1 for _ in net.parameters())
    return {
        "config": config.name,
        "params": count_parameters(net),
        "params_excluding_encoder": count_parameters(net, (ENCODER_PREFIX,)),
        "params_by_component": {
            c.rstrip("."): sum(p.numel() for n, p in net.named_parameters() if n.startswith(c))
            for c in COMPONENTS
        },
        "state_dict_keys": len(state),
        "parameter_keys": n_params,
        "buffer_keys": len(state) - n_params,
        "transformer_layers": config.transformer_layers,
        "dim": config.dim,
        "heads": config.num_heads,
        "query_points": config.n_query_points,
        "body_points": config.n_body_points,
    }


def cmd_info(args: argparse.Namespace) -> int:
    """``lhm info``."""
    try:
        out = info_dict(args.config)
    except StreamerError as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"config: {out['config']}")
        print(f"params: {out['params']:,}")
        print(f"params_excluding_encoder: {out['params_excluding_encoder']:,}")
        for name, count in out["params_by_component"].items():
            print(f"  {name}: {count:,}")
        print(f"state_dict_keys: {out['state_dict_keys']} ({out['buffer_keys']} buffers)")
    return 0


def cmd_check_manifest(args: argparse.Namespace) -> int:
    """``lhm check-manifest``: exit 0 when every configuration matches, 1 otherwise."""
    from .manifest import check_entry, load_manifest

    try:
        entries = load_manifest(args.file)
    except StreamerError as exc:
        return _fail(args, str(exc))
    results: dict[str, dict[str, Any]] = {}
    ok = True
    for name, entry in entries.items():
        try:
            check = check_entry(entry)
        except StreamerError as exc:
            results[name] = {"error": str(exc)}
            ok = False
            continue
        results[name] = check.to_json()
        ok = ok and check.ok
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            if "error" in r:
                print(f"{name}: ERROR {r['error']}")
                continue
            status = "OK" if r["params_match"] and not any(r[k] for k in _COUNT_KEYS) else "MISMATCH"
            counts = ", ".join(f"{k} {r[k]}" for k in _COUNT_KEYS)
            print(f"{name}: {counts}, params {r['params']:,} (manifest {r['manifest_params']}) {status}")
            if "details" in r:
                print(f"  {r['details']}")
    return 0 if ok else 1


def cmd_check_checkpoint(args: argparse.Namespace) -> int:
    """``lhm check-checkpoint``: exit 0 when the checkpoint would load strictly, 1 otherwise."""
    from .checkpoint import detect_config, read_layout
    from .model import build_network
    from .state_dict_diff import compare_layouts, module_layout

    try:
        shapes, _ = read_layout(args.path)
        config = get_config(args.config) if args.config else detect_config(shapes)
    except StreamerError as exc:
        return _fail(args, str(exc))
    expected, _ = module_layout(build_network(config, "meta"))
    diff = compare_layouts(expected, shapes)
    out: dict[str, Any] = {"config": config.name, "keys": len(shapes), **diff.counts()}
    if not diff.ok:
        out["details"] = diff.describe()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{config.name}: {len(shapes)} keys; {diff.describe()}")
    return 0 if diff.ok else 1
