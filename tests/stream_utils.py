"""Helpers for the streaming tests: servers on free loopback ports, raw websocket exchanges, a
Chromium fake webcam made from the shared video, installing the browser, comparing avatar frames."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from conftest import SHARED_VIDEO

REPO = Path(__file__).resolve().parents[1]
#: The person in the shared video stands at rest until about 4.5 s, then moves widely until about 9 s.
REST_S = (0.0, 4.4)
MOTION_S = (5.0, 9.0)
#: Chromium flags that work on a machine without a display, GPU or outside network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
]

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 300.0) -> T:
    """Run a coroutine on a fresh event loop with an overall time limit."""

    async def limited() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(limited())


def require_shared_video() -> Path:
    """The shared test video; a clear failure when the data folder is missing."""
    if not SHARED_VIDEO.is_file():
        raise AssertionError(
            f"the shared test video is missing: expected {SHARED_VIDEO.name} in ../shared/data/video"
        )
    return SHARED_VIDEO


async def ws_exchange(
    url: str, messages: list[str | bytes], read_timeout: float = 60.0
) -> tuple[list[dict], int | None]:
    """Send raw messages on a fresh signalling websocket; return the JSON replies and the close code."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from streamer.stream.client import ws_url

    replies: list[dict] = []
    async with connect(ws_url(url), max_size=2**24) as ws:
        try:
            for m in messages:
                await ws.send(m)
            while True:
                data = await asyncio.wait_for(ws.recv(), read_timeout)
                replies.append(json.loads(data))
        except ConnectionClosed:
            pass
        code = ws.close_code
    return replies, code


def http_get(url: str, timeout: float = 30.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, errors included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def make_y4m(video: Path, out: Path, start_s: float, end_s: float, max_side: int = 480) -> Path:
    """Convert part of a video into a ``.y4m`` for Chromium's fake webcam (PyAV, yuv420p)."""
    import av

    from streamer.tracking.sources import VideoFileSource

    with VideoFileSource(video) as source:
        scale = max_side / max(source.width, source.height)
        width, height = round(source.width * scale / 2) * 2, round(source.height * scale / 2) * 2
        container = av.open(str(out), "w", format="yuv4mpegpipe")
        stream = container.add_stream("rawvideo", rate=Fraction(round(source.fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(1, 1)
        try:
            for t_ms, rgb in source:
                if t_ms < start_s * 1000.0:
                    continue
                if t_ms > end_s * 1000.0:
                    break
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    width=width, height=height, format="yuv420p"
                )
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return out


def ensure_chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing and we are root; else a clear failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise AssertionError(
            "Chromium is not installed and this process cannot install it (needs root and apt-get): "
            "install Debian's 'chromium' package, then run the tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    found = shutil.which("chromium")
    if not found:
        raise AssertionError("apt-get installed 'chromium' but no chromium executable is on PATH")
    return found


def ensure_playwright() -> Any:
    """Playwright's Python package (from PyPI when missing; it never downloads a browser here)."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        pass
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "playwright"],
        check=False,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise AssertionError(f"pip install playwright failed ({proc.returncode}): {proc.stderr[-2000:]}")
    importlib.invalidate_caches()
    return importlib.import_module("playwright.sync_api")


def silhouette(rgb: np.ndarray, background: float = 255.0, tol: float = 40.0) -> np.ndarray:
    """Pixels that are not the (white) background: [H, W] bool."""
    return np.abs(rgb.astype(np.float32) - background).max(axis=-1) > tol


def silhouette_change(a: np.ndarray, b: np.ndarray) -> float:
    """1 - IoU of two frames' silhouettes (0: same shape, 1: no overlap)."""
    sa, sb = silhouette(a), silhouette(b)
    union = np.logical_or(sa, sb).sum()
    return 0.0 if union == 0 else 1.0 - float(np.logical_and(sa, sb).sum()) / float(union)


#: A name that is not this machine's to the browser (no secure context without TLS), mapped to 127.0.0.1.
TEST_HOST = "avatar.test"


def self_signed(folder: Path, name: str, password: bytes | None = None) -> tuple[str, str]:
    """A self-signed PEM certificate for 127.0.0.1 and ``avatar.test`` (:data:`TEST_HOST`), and its key
    (encrypted with ``password``), in ``folder``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    names = x509.SubjectAlternativeName([loopback, x509.DNSName(TEST_HOST)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(names, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)
