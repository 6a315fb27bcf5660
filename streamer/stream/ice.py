"""ICE server URLs (STUN/TURN) from the command line, for aiortc and for the browser."""

from __future__ import annotations

from aiortc import RTCIceServer

from ..errors import InputError

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")


def parse_ice_server(url: str) -> RTCIceServer:
    """``stun:host:port`` or ``turn:[USER:PASS@]host:port[?transport=udp]`` -> RTCIceServer.

    Raises:
        InputError: not a STUN/TURN URL.
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
