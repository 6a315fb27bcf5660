"""Reading a photo safely: format sniffing, a size guard before decoding, clear errors.

The header is parsed by hand (PNG ``IHDR``, JPEG ``SOFn``, WebP ``VP8 /VP8L/VP8X``, BMP
``BITMAPINFOHEADER``) so that an image whose pixels would exhaust memory (a decompression bomb:
a few kilobytes that decode to gigabytes) is refused before any pixel is decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import ReconstructionError

#: Largest accepted image, in pixels (about 40 MP: 160 MB of RGB; a 8000 x 5000 photo passes).
MAX_PIXELS = 40_000_000
#: Smallest accepted side, pixels.
MIN_SIDE = 64
FORMATS = ("png", "jpeg", "webp", "bmp")


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes of a file, or None when not one of :data:`FORMATS`."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker of a JPEG, None when not found."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def image_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from an image header without decoding pixels; None when the header is unreadable."""
    try:
        if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if fmt == "jpeg":
            return _jpeg_size(data)
        if fmt == "bmp" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "webp" and len(data) >= 30:
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
                return w, h
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
    except struct.error:
        return None
    return None


def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a PNG, JPEG, WebP or BMP photo as RGB.

    Returns:
        [H, W, 3] uint8 RGB.

    Raises:
        ReconstructionError: missing file, unsupported format, unreadable header, more than
            ``max_pixels`` pixels (checked before decoding), a corrupt or truncated file.
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        raise ReconstructionError(f"{path} is a folder, not a photo")
    if not path.is_file():
        raise ReconstructionError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReconstructionError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ReconstructionError(f"{path}: empty file")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ReconstructionError(f"{path}: unsupported image format (expected one of {', '.join(FORMATS)})")
    size = image_size(data, fmt)
    if size is None:
        raise ReconstructionError(f"{path}: corrupt {fmt.upper()} header")
    w, h = size
    if w * h > max_pixels:
        raise ReconstructionError(
            f"{path}: image of {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of {max_pixels / 1e6:.0f} MP "
            "(refused before decoding; scale it down)"
        )
    if min(w, h) < MIN_SIDE:
        raise ReconstructionError(
            f"{path}: image of {w}x{h} is too small (each side must be >= {MIN_SIDE} px)"
        )
    if fmt == "png" and not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise ReconstructionError(f"{path}: truncated PNG (no IEND chunk)")
    if fmt == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise ReconstructionError(f"{path}: truncated JPEG (no end-of-image marker)")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    # OpenCV turns the picture upright by its EXIF orientation (phones store portraits sideways
    # with orientation 6 or 8), so the decoded size may be the header's, transposed.
    if bgr is None or bgr.shape[:2] not in ((h, w), (w, h)):
        raise ReconstructionError(f"{path}: corrupt {fmt.upper()} (cannot be decoded)")
    return np.ascontiguousarray(bgr[:, :, ::-1])
