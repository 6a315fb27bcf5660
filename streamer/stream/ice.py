"""ICE server URLs (STUN/TURN) from the command line, for aiortc and for the browser."""

from __future__ import annotations

from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri

from ..errors import InputError

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")


def parse_ice_server(url: str) -> RTCIceServer:
    """``stun:host:port`` or ``turn:[USER:PASS@]host:port[?transport=udp]`` -> RTCIceServer.

    Raises:
        InputError: not a STUN/TURN URL aiortc can use (bad host, port or transport), or a TURN
            server without credentials.
    """
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ICE_SCHEMES or not rest:
        raise InputError(f"ICE server must be a stun:, stuns:, turn: or turns: URL, got {url!r}")
    username = credential = None
    if "@" in rest:
        creds, rest = rest.rsplit("@", 1)
        username, _, credential = creds.partition(":")
        if not username or not credential:
            raise InputError(f"ICE server credentials must be USER:PASS@, got {url!r}")
    if scheme.startswith("turn") and username is None:  # browsers refuse such a server outright
        raise InputError(f"a TURN server needs credentials: turn:USER:PASS@host:port, got {url!r}")
    try:  # what aiortc will parse for every connection: refuse it now, not then
        parsed = parse_stun_turn_uri(f"{scheme}:{rest}")
    except ValueError as exc:
        raise InputError(f"ICE server {url!r}: {exc} (expected {scheme}:host[:port])") from None
    if not 1 <= parsed["port"] <= 65535:
        raise InputError(f"ICE server {url!r}: port {parsed['port']} is not in [1, 65535]")
    if parsed.get("transport") not in (None, "udp", "tcp"):
        raise InputError(f"ICE server {url!r}: transport must be udp or tcp")
    return RTCIceServer(urls=f"{scheme}:{rest}", username=username, credential=credential)


def browser_ice_servers(urls: list[str]) -> list[dict[str, str]]:
    """The same servers in the browser's ``RTCConfiguration.iceServers`` form."""
    out = []
    for url in urls:
        s = parse_ice_server(url)
        entry = {"urls": str(s.urls)}
        if s.username:
            entry.update(username=s.username, credential=str(s.credential))
        out.append(entry)
    return out
