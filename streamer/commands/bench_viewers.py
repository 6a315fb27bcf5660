"""``streamer bench viewers URL``: what a running server gives many viewers, measured from outside.

``bench stream`` runs its clients in the server's process, so with many viewers their decoding
shares the server's cores and the figures say more about the clients than the server. This one
connects ``--count`` viewers (real aiortc peers, :class:`~streamer.stream.client.StreamClient`) to a
server started elsewhere (``streamer serve``, another process or machine), waits until each shows
a picture, and measures for ``--seconds``: each viewer's frame rate, the stage's server-added
latency, and the server process's CPU (from the ``cpu_seconds`` of its ``/stats``). At the end each
viewer asks for its own figures on the data channel: the bit rate the server chose for its link
(from the viewer's bandwidth estimates), the resends it was allowed, and its steps down and up.
Run behind a shaped link (``docs/slow-link.md``) this shows the rate adapting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from ..errors import InputError, StreamError
from .bench_stream import VIEWER_CODECS

if TYPE_CHECKING:
    from ..stream.client import StreamClient

#: Most seconds to wait for every viewer's first picture.
FIRST_PICTURE_TIMEOUT_S = 60.0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """``streamer bench viewers``."""
    q = sub.add_parser(
        "viewers",
        help="many viewers on a running server: fps per viewer, latency, server CPU",
        description="Connect COUNT viewers to a server started elsewhere (streamer serve) and measure each "
        "viewer's frame rate, the stage's server-added latency and the server process's CPU. Run it in "
        "another process or on another machine than the server.",
    )
    q.add_argument("url", metavar="URL", help="the server's page URL, e.g. http://127.0.0.1:8080/")
    q.add_argument("--count", type=int, default=8, help="viewers to connect (default: %(default)s)")
    q.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default: %(default)s)")
    q.add_argument(
        "--warmup", type=float, default=2.0, help="seconds after every viewer's first picture (default: %(default)s)"
    )
    q.add_argument("--stage", default="main", help="stage to watch (default: %(default)s)")
    q.add_argument(
        "--codec",
        choices=sorted(VIEWER_CODECS),
        help="the only codec the viewers offer (default: aiortc's order, VP8 first)",
    )
    q.add_argument(
        "--ca",
        metavar="CERT.pem",
        help="for an https URL: trust this certificate besides the system's (the self-signed one given to "
        "streamer serve --cert)",
    )
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_viewers)


def tls_trusting(ca: str | None, url: str) -> ssl.SSLContext | None:
    """The TLS context for ``url`` that trusts ``ca`` besides the system's certificates (None: the default).

    Raises:
        InputError: ``ca`` is not a readable PEM certificate, or ``url`` is not https.
    """
    if ca is None:
        return None
    from ..fileio import check_input

    if not url.lower().startswith(("https:", "wss:")):
        raise InputError(f"--ca is for an https URL, not {url}")
    context = ssl.create_default_context()  # the system's certificates ...
    try:
        context.load_verify_locations(cafile=str(check_input("--ca", ca)))  # ... and this one
    except ssl.SSLError as exc:
        raise InputError(f"--ca {ca}: not a PEM certificate ({exc.reason or exc})") from None
    return context


def _server_stats(url: str, tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The ``/stats`` of the server behind page ``url`` (StreamError when it cannot be read)."""
    from ..stream.client import stats_url

    where = stats_url(url)
    try:
        with urllib.request.urlopen(where, timeout=10, context=tls) as reply:
            return json.loads(reply.read())
    except (OSError, ValueError) as exc:  # unreachable, an HTTP error, not JSON
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) and tls is None:
            hint = " (a self-signed certificate? give it with --ca CERT.pem)"
        raise StreamError(f"cannot read {where}: {exc}{hint}") from None


async def _measure(args: argparse.Namespace, tls: ssl.SSLContext | None) -> dict[str, Any]:
    from ..stream.client import StreamClient

    codecs = (VIEWER_CODECS[args.codec],) if args.codec else None
    clients = [
        StreamClient(args.url, "viewer", stage=args.stage, codecs=codecs, ssl=tls) for _ in range(args.count)
    ]
    try:
        for client in clients:
            try:
                await client.connect(timeout=FIRST_PICTURE_TIMEOUT_S)
            except OSError as exc:
                raise StreamError(f"cannot reach {args.url}: {exc}") from None
        deadline = time.monotonic() + FIRST_PICTURE_TIMEOUT_S
        while any(c.received.count == 0 for c in clients):
            if time.monotonic() > deadline:
                waiting = sum(c.received.count == 0 for c in clients)
                raise StreamError(f"{waiting} of {args.count} viewers got no picture within {FIRST_PICTURE_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.warmup)
        before = await asyncio.to_thread(_server_stats, args.url, tls)
        counts = [c.received.count for c in clients]
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        cpu = (time.process_time() - cpu0) / elapsed
        after = await asyncio.to_thread(_server_stats, args.url, tls)
        fps = [(c.received.count - n) / elapsed for c, n in zip(clients, counts)]
        codecs_got = sorted({c.video_codec or "?" for c in clients})
        peers = await _peer_figures(clients)
    finally:
        for client in clients:
            await client.close()
    stage = after["stages"].get(args.stage, {})
    server_cpu = after["server"]["cpu_seconds"] - before["server"]["cpu_seconds"]
    return {
        "bench": "viewers",
        "url": args.url,
        "stage": args.stage,
        "count": args.count,
        "codecs": codecs_got,
        "seconds": round(elapsed, 2),
        "fps_min": round(min(fps), 2),
        "fps_median": round(statistics.median(fps), 2),
        "fps_max": round(max(fps), 2),
        "fps_per_client": [round(f, 2) for f in fps],
        "stage_fps": stage.get("fps"),
        "latency_ms_p50": stage.get("latency_ms", {}).get("p50"),
        "latency_ms_p95": stage.get("latency_ms", {}).get("p95"),
        "bitrate_per_client": [p.get("bitrate") for p in peers],
        "estimate_bps_per_client": [p.get("estimate_bps") for p in peers],
        "resends_per_client": [p.get("resends_allowed") for p in peers],
        "steps_down_per_client": [p.get("steps_down") for p in peers],
        "steps_up_per_client": [p.get("steps_up") for p in peers],
        "loss_per_client": [p.get("loss") for p in peers],
        "server_cpu_cores": round(server_cpu / elapsed, 2),
        "viewers_cpu_cores": round(cpu, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


async def _peer_figures(clients: list[StreamClient], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Each viewer's own figures from the server (a stats message on its data channel; {} when none
    came within ``timeout``)."""
    stats = await asyncio.gather(*(c.fresh_stats(timeout) for c in clients))
    return [(s or {}).get("peer") or {} for s in stats]


def run_viewers(args: argparse.Namespace) -> int:
    if args.count < 1 or args.seconds <= 0 or args.warmup < 0:
        raise InputError("--count must be at least 1, --seconds positive and --warmup not negative")
    tls = tls_trusting(args.ca, args.url)
    stats = _server_stats(args.url, tls)  # reachable, and a server of ours (it says its CPU time)
    if "cpu_seconds" not in stats.get("server", {}):
        raise StreamError(f"{args.url} is not an avatar server of this version (its /stats has no cpu_seconds)")
    out = asyncio.run(_measure(args, tls))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"bench viewers  {out['count']} viewers of stage {out['stage']} at {out['url']}, {out['seconds']} s")
    print(
        f"  fps per viewer: min {out['fps_min']}  median {out['fps_median']}  max {out['fps_max']}  "
        f"(stage {out['stage_fps']} per peer; codecs {', '.join(out['codecs'])})"
    )
    print(f"  server-added latency ms: p50 {out['latency_ms_p50']}  p95 {out['latency_ms_p95']}")
    rates = sorted({r for r in out["bitrate_per_client"] if r is not None})
    losses = [x for x in out["loss_per_client"] if x is not None]
    print(
        f"  bit rates chosen (kbit/s): {', '.join(str(r // 1000) for r in rates) or '?'}; "
        f"steps down {sum(n or 0 for n in out['steps_down_per_client'])}, "
        f"up {sum(n or 0 for n in out['steps_up_per_client'])}, "
        f"resends {sum(n or 0 for n in out['resends_per_client'])}, "
        f"loss at most {f'{max(losses):.1%}' if losses else '?'}"
    )
    print(
        f"  server process CPU {out['server_cpu_cores']} cores; these viewers {out['viewers_cpu_cores']} cores "
        f"(load {out['load_average_1min']})"
    )
    return 0
