"""Signalling and data-channel messages: parsing and validation, no I/O.

Signalling runs over one websocket per session, JSON text messages, one object each::

    client -> server                              server -> client
    {"type": "join", "role": "performer"|"viewer", {"type": "joined", "session": id, "stage": name,
     "stage": name, "key": k}                       "role": ..., "source": "webcam"|"motion",
                                                    "ice_servers": [{"urls": url, "username"?: u,
                                                      "credential"?: c}, ...], "size": px, "fps": f,
                                                    "background": [r, g, b]}
    {"type": "offer", "sdp": "v=0..."}            {"type": "answer", "sdp": "v=0..."}
    {"type": "ping"}                              {"type": "pong"}
    {"type": "bye"}                               (the server closes the session)
                                                  {"type": "error", "code": ..., "message": ...}

``key`` (optional) is the server's performer key (``streamer serve --performer-key``): without it a
server that has one refuses performers (``forbidden``); viewers need none.

The order is ``join`` then one ``offer``, within 2 minutes of connecting, and the media connection
must be up within 30 s of the answer (else ``timeout``); aiortc does not trickle ICE, so the offer and the answer carry all candidates. Any refused message is answered
with an ``error`` and the session is closed (the client reconnects with a new one, except after
``forbidden`` and ``replaced``). Error codes are those of :class:`SignallingError`.

The data channel (label ``control``, created by the client) carries small JSON messages::

    client -> server: {"type": "orbit", "azimuth": deg, "elevation": deg, "zoom": factor}
                      {"type": "stats"}                     (ask for a stats message now)
    server -> client: {"type": "stats", "stage": {...}, "peer": {...}}   (about once a second)
                      {"type": "error", "code": ..., "message": ...}     (the channel stays open)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import SignallingError

#: Largest signalling message accepted, bytes (a browser's offer is 3-10 KB).
MAX_MESSAGE_BYTES = 64 * 1024
#: Longest performer key accepted, characters.
MAX_KEY_CHARS = 256
#: Largest data-channel message accepted, bytes.
MAX_CONTROL_BYTES = 4 * 1024
#: Stage names: what may follow ``?stage=`` in a page URL.
STAGE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # whole names only: use fullmatch ($ would let "a\n" in)
DEFAULT_STAGE = "main"
ROLES = ("performer", "viewer")
#: Orbit limits: elevation in degrees, zoom as a factor on the framing distance.
ELEVATION_LIMIT_DEG = 80.0
ZOOM_RANGE = (0.3, 4.0)

Role = Literal["performer", "viewer"]


@dataclass(frozen=True)
class Join:
    """Ask to join a stage in a role."""

    role: Role
    stage: str
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Offer:
    """The client's SDP offer (all ICE candidates included)."""

    sdp: str


@dataclass(frozen=True)
class Ping:
    """Keep-alive; answered with ``pong``."""


@dataclass(frozen=True)
class Bye:
    """The client leaves; the server frees the session."""


@dataclass(frozen=True)
class Orbit:
    """A viewer's own camera around the stage framing: degrees about +Y, degrees up, distance factor."""

    azimuth: float = 0.0
    elevation: float = 0.0
    zoom: float = 1.0

    @property
    def key(self) -> tuple[float, float, float]:
        """Cameras equal to 0.1 degree / 0.1 % share one render."""
        return (round(self.azimuth % 360.0, 1), round(self.elevation, 1), round(self.zoom, 3))


@dataclass(frozen=True)
class StatsRequest:
    """Ask for a stats message now."""


ClientMessage = Join | Offer | Ping | Bye
ControlMessage = Orbit | StatsRequest


def _decode(data: str | bytes, limit: int) -> dict[str, Any]:
    """Size check, UTF-8 and JSON decoding of one message into an object with a string ``type``."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > limit:
        raise SignallingError(
            "too_large", f"message of {size} bytes is larger than the limit of {limit} bytes"
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SignallingError("bad_json", "message is not UTF-8 text") from None
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SignallingError("bad_json", f"message is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise SignallingError("bad_message", f"message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise SignallingError("bad_message", "message has no string field 'type'")
    return obj


def _string(obj: dict[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise SignallingError("bad_message", f"'{obj['type']}' message: field '{name}' must be a string")
    return value


def _number(obj: dict[str, Any], name: str, default: float) -> float:
    value = obj.get(name, default)
    try:  # JSON integers have no size limit: 1 followed by 400 zeros does not fit a float
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise SignallingError(
            "bad_message", f"'{obj['type']}' message: field '{name}' must be a finite number"
        )
    return number


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Parse one signalling message from a client.

    Raises:
        SignallingError: too large, not JSON, not an object, unknown ``type`` or bad fields
            (its ``code`` says which). The SDP's content is checked when it is applied.
    """
    obj = _decode(data, MAX_MESSAGE_BYTES)
    kind = obj["type"]
    if kind == "join":
        role = _string(obj, "role")
        if role not in ROLES:
            raise SignallingError(
                "bad_message", f"'join' message: role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        stage = _string(obj, "stage", DEFAULT_STAGE)
        if not STAGE_NAME.fullmatch(stage):
            raise SignallingError(
                "bad_message", f"'join' message: stage names are 1-64 of A-Z a-z 0-9 _ -, got {stage!r}"
            )
        key = _string(obj, "key") if obj.get("key") is not None else None
        if key is not None and len(key) > MAX_KEY_CHARS:
            raise SignallingError(
                "bad_message", f"'join' message: the key is longer than {MAX_KEY_CHARS} characters"
            )
        return Join(role=role, stage=stage, key=key)  # type: ignore[arg-type]
    if kind == "offer":
        sdp = _string(obj, "sdp")
        if not sdp.startswith("v=0"):
            raise SignallingError("bad_sdp", "'offer' message: the SDP must start with 'v=0'")
        return Offer(sdp=sdp)
    if kind == "ping":
        return Ping()
    if kind == "bye":
        return Bye()
    raise SignallingError(
        "unknown_type", f"unknown message type {kind[:40]!r}; expected join, offer, ping or bye"
    )


def parse_control_message(data: str | bytes) -> ControlMessage:
    """Parse one data-channel message from a client (orbit values are clamped to their ranges).

    Raises:
        SignallingError: as :func:`parse_client_message`.
    """
    obj = _decode(data, MAX_CONTROL_BYTES)
    kind = obj["type"]
    if kind == "orbit":
        elevation = _number(obj, "elevation", 0.0)
        zoom = _number(obj, "zoom", 1.0)
        return Orbit(
            azimuth=_number(obj, "azimuth", 0.0) % 360.0,
            elevation=min(max(elevation, -ELEVATION_LIMIT_DEG), ELEVATION_LIMIT_DEG),
            zoom=min(max(zoom, ZOOM_RANGE[0]), ZOOM_RANGE[1]),
        )
    if kind == "stats":
        return StatsRequest()
    raise SignallingError(
        "unknown_type", f"unknown control message type {kind[:40]!r}; expected orbit or stats"
    )


def error_message(code: str, message: str) -> str:
    """The JSON text of an ``error`` message."""
    return json.dumps({"type": "error", "code": code, "message": message})


def message(kind: str, **fields: Any) -> str:
    """The JSON text of a server message of type ``kind``."""
    return json.dumps({"type": kind, **fields})
