"""``streamer serve``: the live avatar server (web client, websocket signalling, WebRTC video)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ..errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the live avatar: webcam in, avatar video out, over WebRTC",
        description="Serve the web client and stream the avatar as WebRTC video. Open the printed URL: "
        "the performer page (/) sends the webcam and shows the avatar; viewer pages (/view) show it too and "
        "can orbit the camera. Add ?stage=NAME to run several stages at once. Stop with Ctrl+C.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port for HTTP and websockets (default: %(default)s; 0: any free)",
    )
    p.add_argument("--avatar", metavar="A.ply", help="avatar to serve (default: the built-in demo avatar)")
    p.add_argument(
        "--motion",
        metavar="M",
        help="drive the avatar from this motion file (looped) instead of a webcam; 'demo' for the built-in "
        "demo motion",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server (stun:host:port, turn:USER:PASS@host:port); repeatable; none by default "
        "(same machine or LAN)",
    )
    p.add_argument(
        "--size", type=int, default=512, help="avatar video width and height in pixels (default: %(default)s)"
    )
    p.add_argument("--fps", type=float, default=30.0, help="avatar video frame rate (default: %(default)s)")
    p.add_argument(
        "--background",
        default="1,1,1",
        metavar="R,G,B",
        help="avatar video background, RGB in [0,1] (default: %(default)s, white; 0,0.69,0.25 is a "
        "chroma-key green for capturing the viewer page into a video call)",
    )
    p.add_argument(
        "--backend", default="auto", choices=["auto", "cpu", "cuda"], help="renderer (default: %(default)s)"
    )
    p.add_argument(
        "--no-mirror", action="store_true", help="do not mirror the performer (default: selfie view)"
    )
    p.add_argument(
        "--models",
        default="holistic",
        help="MediaPipe models: holistic, or a comma list of pose, hands, face (default: %(default)s)",
    )
    p.add_argument(
        "--render-threads",
        type=int,
        default=1,
        help="OpenMP threads per CPU render (default: %(default)s; a second one slows live tracking on small "
        "machines; 0 = one per core)",
    )
    p.add_argument("--smplx-dir", help="folder with real SMPL-X files (default: built-in body model)")
    p.add_argument(
        "--web-root", metavar="DIR", help="the web client's folder (default: clients/web of this source tree)"
    )
    p.add_argument(
        "--performer-key",
        metavar="KEY",
        default=os.environ.get("STREAMER_PERFORMER_KEY") or None,
        help="only pages opened with ?key=KEY may perform (viewers need none); the printed performer URL "
        "carries it; use a long random one, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())' "
        "(default: $STREAMER_PERFORMER_KEY if set and not empty, else anybody may perform)",
    )
    p.add_argument("--cert", metavar="CERT.pem", help="serve HTTPS (needed for webcams on other machines)")
    p.add_argument("--key", metavar="KEY.pem", help="private key for --cert")
    p.add_argument("--verbose", "-v", action="store_true", help="log sessions and stages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..render.base import check_background
    from ..stream import ServerConfig, run_server
    from ..tracking.mediapipe_runner import parse_models

    if not args.host.strip():  # asyncio would listen on every interface, behind a 127.0.0.1 URL
        raise InputError("--host is empty; give an address (127.0.0.1, or 0.0.0.0 for every interface)")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    parse_models(args.models)
    try:
        background = check_background(args.background.split(","))
    except InputError:
        message = f"--background must be 3 numbers in [0, 1] (R,G,B), got {args.background!r}"
        raise InputError(message) from None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        avatar=args.avatar,
        motion=args.motion,
        ice_servers=list(args.ice_server),
        size=args.size,
        fps=args.fps,
        background=background,
        backend=args.backend,
        mirror=not args.no_mirror,
        models=args.models,
        render_threads=args.render_threads,
        smplx_dir=args.smplx_dir,
        web_root=args.web_root,
        certfile=args.cert,
        keyfile=args.key,
        performer_key=args.performer_key,
    )
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.ERROR)
    try:
        asyncio.run(run_server(config))
    except KeyboardInterrupt:
        print("streamer serve: stopped")
    return 0
