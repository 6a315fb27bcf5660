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

#: Largest decoded image, in pixels (about 40 MP: 160 MB of RGB; a 8000 x 5000 photo passes).
#: A larger JPEG (a phone's 48 or 50 MP mode) is decoded at 1/2 or 1/4 of its size by libjpeg's
#: scaled decoding, which never holds the full-size pixels; anything else larger is refused.
MAX_PIXELS = 40_000_000
#: JPEG decoding scales tried, in order, for a photo over :data:`MAX_PIXELS`.
JPEG_SCALES = (2, 4)
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


def _jpeg_end(data: bytes) -> int | None:
    """Offset just past the main picture's end-of-image marker; None when the data stops before it.

    Walks the marker segments from the start and skips each scan's entropy-coded data (where 0xFF
    is followed by 0x00 or a restart marker), so that an EXIF thumbnail's own end marker is not
    taken for the picture's, and what phones append after the picture (a Motion Photo's video, a
    maker's trailer, zero padding) is not taken for a cut file.
    """
    n, i = len(data), 2
    while True:
        i = data.find(b"\xff", i)  # libjpeg skips stray bytes between segments too
        if i < 0 or i + 1 >= n:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0xD9:
            return i + 2
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if i + 4 > n:
            return None
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xDA:  # a scan: its coded data runs to the next real marker
            while True:
                i = data.find(b"\xff", i)
                if i < 0 or i + 1 >= n:
                    return None
                nxt = data[i + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i += 2
                elif nxt == 0xFF:
                    i += 1
                else:
                    break


def _png_complete(data: bytes) -> bool:
    """Whether the PNG's chunks, followed from the signature, reach ``IEND`` within the data."""
    i = 8
    while i + 8 <= len(data):
        if data[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + struct.unpack(">I", data[i : i + 4])[0]
    return False


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


def exif_orientation(exif: bytes) -> int:
    """The orientation tag (1-8) of an EXIF block (TIFF header and IFD0, maybe after ``Exif``); 1 if none."""
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack(order + "I", exif[4:8])
        (count,) = struct.unpack(order + "H", exif[ifd : ifd + 2])
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind = struct.unpack(order + "HH", exif[entry : entry + 4])
            if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                (value,) = struct.unpack(order + "H", exif[entry + 8 : entry + 10])
                return value if 1 <= value <= 8 else 1
    except struct.error:  # cut short: no tag
        return 1
    return 1


def webp_orientation(data: bytes) -> int:
    """The EXIF orientation of a WebP file (its ``EXIF`` chunk); 1 if none. OpenCV does not apply it."""
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))  # the RIFF's own length: not what follows
    i = 12
    while i + 8 <= end:
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        if data[i : i + 4] == b"EXIF":
            return exif_orientation(data[i + 8 : i + 8 + size])
        i += 8 + size + (size & 1)  # chunks are padded to an even length
    return 1


#: How to turn a picture stored with EXIF orientation 2-8 upright ([H, W, C] arrays).
UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _may_be_transparent(data: bytes, fmt: str) -> bool:
    """A PNG with an alpha channel (colour type 4 or 6) or a transparency chunk; any WebP."""
    if fmt == "png":
        return data[25:26] in (b"\x04", b"\x06") or b"tRNS" in data[: data.find(b"IDAT")]
    return fmt == "webp"


def _over_white(bgr: np.ndarray, full: np.ndarray | None) -> np.ndarray:
    """The photo laid over white where ``full`` (the same picture decoded with its alpha channel) is
    transparent: a cut-out saved with black (or any colour) under its transparent background would
    otherwise be read as a person in front of that colour, which then fringes the avatar.

    ``bgr`` was turned upright by its EXIF orientation and ``full`` was not: the alpha is turned the
    way that makes ``full``'s colours ``bgr``'s. A picture without an alpha channel is returned as it is.
    """
    if full is None or full.ndim != 3 or full.shape[2] != 4:
        return bgr
    colour = (full[:, :, :3] >> 8).astype(np.uint8) if full.dtype == np.uint16 else full[:, :, :3]
    alpha = full[:, :, 3]
    for flip in (False, True):
        for turns in range(4):
            turned = np.rot90(colour[:, ::-1] if flip else colour, turns)
            if turned.shape != bgr.shape:
                continue
            gap = np.abs(turned[::4, ::4].astype(np.int16) - bgr[::4, ::4].astype(np.int16)).mean()
            if gap <= 2.0:  # (a 16-bit picture's 8-bit decode may round the other way)
                alpha = np.rot90(alpha[:, ::-1] if flip else alpha, turns)
                see = alpha < (65535 if full.dtype == np.uint16 else 255)
                if not see.any():
                    return bgr
                a = alpha[see].astype(np.float32)[:, None] / (65535.0 if full.dtype == np.uint16 else 255.0)
                out = bgr.copy()
                out[see] = np.clip(bgr[see] * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
                return out
    return bgr  # (no turn of it is the decoded picture: leave the photo as decoded)


def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a PNG, JPEG, WebP or BMP photo as RGB, upright by its EXIF orientation.

    A JPEG over ``max_pixels`` is decoded at 1/2 or 1/4 of its size (:data:`JPEG_SCALES`).

    Returns:
        [H, W, 3] uint8 RGB.

    Transparent parts (a cut-out PNG or WebP) are laid over white.

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
        raise ReconstructionError(
            f"{path}: not an image in a supported format (expected one of {', '.join(FORMATS)})"
        )
    size = image_size(data, fmt)
    if size is None:
        raise ReconstructionError(f"{path}: corrupt {fmt.upper()} header")
    w, h = size
    scale = 1
    if w * h > max_pixels:
        fits = [k for k in JPEG_SCALES if -(-w // k) * -(-h // k) <= max_pixels] if fmt == "jpeg" else []
        if not fits:
            raise ReconstructionError(
                f"{path}: image of {w}x{h} = {w * h / 1e6:.0f} MP exceeds the limit of "
                f"{max_pixels / 1e6:.0f} MP (refused before decoding; scale it down)"
            )
        scale = fits[0]
    if min(w, h) < MIN_SIDE:
        raise ReconstructionError(
            f"{path}: image of {w}x{h} is too small (each side must be >= {MIN_SIDE} px)"
        )
    if fmt == "png" and not _png_complete(data):
        raise ReconstructionError(f"{path}: truncated PNG (no IEND chunk)")
    if fmt == "jpeg" and _jpeg_end(data) is None:
        raise ReconstructionError(f"{path}: truncated JPEG (no end-of-image marker)")
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[scale]
    if fmt == "webp":  # we turn it ourselves below; a newer OpenCV that reads WebP's EXIF must not too
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    h, w = -(-h // scale), -(-w // scale)  # libjpeg's scaled size rounds up
    # OpenCV turns the picture upright by its EXIF orientation (phones store portraits sideways
    # with orientation 6 or 8), so the decoded size may be the header's, transposed.
    if bgr is None or bgr.shape[:2] not in ((h, w), (w, h)):
        raise ReconstructionError(f"{path}: corrupt {fmt.upper()} (cannot be decoded)")
    if _may_be_transparent(data, fmt):
        bgr = _over_white(bgr, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    if fmt == "webp" and (orientation := webp_orientation(data)) != 1:  # OpenCV 4.11 turns only JPEG, PNG
        bgr = UPRIGHT[orientation](bgr)
    return np.ascontiguousarray(bgr[:, :, ::-1])
