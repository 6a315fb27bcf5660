"""Bad photos: each a clear error, a non-zero exit and no output file (``streamer reconstruct``)."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA

from streamer.cli import main
from streamer.errors import ReconstructionError
from streamer.reconstruct.image import image_size, read_photo, sniff_format

PHOTO = SHARED_DATA / "photos" / "woman_hat_bag.png"
needs_photo = pytest.mark.skipif(not PHOTO.exists(), reason="shared photos not found beside the repository")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height RGB pixels (all zero rows, deflated to almost nothing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    data = b"".join(comp.compress(row) for _ in range(16)) + comp.flush()  # the start is enough for the test
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def run_cli(photo: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["reconstruct", str(photo), "-o", str(out)])
    return code, capsys.readouterr().err


def assert_refused(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], words: str) -> None:
    out = tmp_path / "avatar.ply"
    code, err = run_cli(photo, out, capsys)
    assert code == 2
    assert "streamer reconstruct: error:" in err and words in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".avatar")] == []  # no temp file left


def test_sniff_and_header_sizes() -> None:
    assert sniff_format(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "png"
    assert sniff_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_format(b"GIF89a") is None
    assert image_size(bomb_png(123, 45), "png") == (123, 45)
    ok, jpg = cv2.imencode(".jpg", np.zeros((37, 91, 3), np.uint8))
    assert ok and image_size(jpg.tobytes(), "jpeg") == (91, 37)
    # WebP's three headers, odd sizes so that an off-by-one shows: lossless (VP8L, width - 1 in 14
    # bits), lossy (VP8 , the size as is) and extended (VP8X, width - 1 in 24 bits; hand-made)
    ok, lossless = cv2.imencode(".webp", np.zeros((71, 81, 3), np.uint8))
    assert ok and lossless[12:16].tobytes() == b"VP8L" and image_size(lossless.tobytes(), "webp") == (81, 71)
    noise = np.random.default_rng(0).integers(0, 255, (71, 81, 3)).astype(np.uint8)
    ok, lossy = cv2.imencode(".webp", noise, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok and lossy[12:16].tobytes() == b"VP8 " and image_size(lossy.tobytes(), "webp") == (81, 71)
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x08\0\0\0" + (4999).to_bytes(3, "little") + (2999).to_bytes(3, "little")
    extended = b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x
    assert image_size(extended, "webp") == (5000, 3000)
    ok, bmp = cv2.imencode(".bmp", np.zeros((33, 65, 3), np.uint8))
    top_down = bmp.tobytes()[:22] + struct.pack("<i", -33) + bmp.tobytes()[26:]  # rows stored top first
    assert ok and image_size(bmp.tobytes(), "bmp") == (65, 33) and image_size(top_down, "bmp") == (65, 33)


def test_a_thin_image_is_refused_before_detection(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), np.full((200, 63, 3), 128, np.uint8))
    with pytest.raises(ReconstructionError, match="63x200 is too small"):
        read_photo(path)


def test_reads_png_as_rgb(tmp_path: Path) -> None:
    img = np.zeros((80, 90, 3), np.uint8)
    img[..., 0] = 255  # red
    cv2.imwrite(str(tmp_path / "red.png"), img[:, :, ::-1])
    rgb = read_photo(tmp_path / "red.png")
    assert (
        rgb.shape == (80, 90, 3)
        and rgb.dtype == np.uint8
        and (rgb[..., 0] == 255).all()
        and (rgb[..., 2] == 0).all()
    )


@pytest.mark.parametrize(("suffix", "depth"), [(".png", np.uint8), (".png", np.uint16), (".webp", np.uint8)])
def test_a_cut_out_is_laid_over_white(tmp_path: Path, suffix: str, depth: type) -> None:
    """A cut-out saved with black under its transparent background (as cut-out tools do): the
    background reads white, a half-transparent edge half way to white, the opaque person as it is."""
    top = np.iinfo(depth).max
    bgra = np.zeros((120, 100, 4), depth)
    bgra[:, 40:60, :3] = (top // 255) * np.array([30, 60, 200])  # a red-brown "person" (BGR)
    bgra[:, 40:60, 3] = top
    bgra[:, 60:64, :3] = (top // 255) * np.array([30, 60, 200])
    bgra[:, 60:64, 3] = top // 2 + 1  # half transparent
    path = tmp_path / f"cutout{suffix}"
    assert cv2.imwrite(str(path), bgra, [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else [])
    rgb = read_photo(path).astype(int)
    assert (rgb[:, :40] == 255).all() and (rgb[:, 64:] == 255).all()  # not black
    assert np.abs(rgb[:, 40:60] - [200, 60, 30]).max() <= 1
    assert np.abs(rgb[:, 60:64] - [228, 158, 143]).max() <= 2  # (c + 255) / 2


def test_a_palette_cut_out_is_laid_over_white(tmp_path: Path) -> None:
    """A palette PNG whose transparency is a tRNS chunk (index 0: black, transparent; 1: opaque;
    2: half transparent), written byte by byte."""
    height, width = 120, 80
    rows = np.zeros((height, width), np.uint8)
    rows[:, 30:50] = 1
    rows[:, 50:55] = 2
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
        + _png_chunk(b"PLTE", bytes([0, 0, 0, 200, 60, 30, 200, 60, 30]))
        + _png_chunk(b"tRNS", bytes([0, 255, 128]))
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    (tmp_path / "palette.png").write_bytes(png)
    rgb = read_photo(tmp_path / "palette.png").astype(int)
    assert (rgb[:, :30] == 255).all() and (rgb[:, 55:] == 255).all()
    assert np.abs(rgb[:, 30:50] - [200, 60, 30]).max() <= 1
    assert np.abs(rgb[:, 50:55] - [228, 158, 143]).max() <= 2


@pytest.mark.parametrize("orientation", [1, 2, 3, 6, 8])
def test_a_cut_out_with_an_exif_orientation_is_laid_over_white_the_same_way_round(
    tmp_path: Path, orientation: int
) -> None:
    """The colour decode turns a PNG upright by its EXIF chunk, the decode with alpha does not: the
    alpha must be turned the same way (mirrored ones included). Expected: the same picture laid
    over white beforehand, with the same EXIF chunk, read the same way."""
    bgra = np.zeros((120, 80, 4), np.uint8)  # stored black where transparent
    bgra[10:90, 5:35] = (30, 60, 200, 255)  # an opaque block off the middle: no turn maps it onto itself
    bgra[10:90, 35:40] = (30, 60, 200, 128)  # a half-transparent edge on its right
    over_white = bgra[:, :, :3].astype(np.float32) * (bgra[:, :, 3:] / 255.0) + 255.0 * (1 - bgra[:, :, 3:] / 255.0)
    exif = _png_chunk(b"eXIf", exif_block(orientation)[6:])  # (PNG's chunk holds the TIFF data alone)
    for name, picture in (("cutout.png", bgra), ("expected.png", np.round(over_white).astype(np.uint8))):
        ok, png = cv2.imencode(".png", picture)
        assert ok
        data = png.tobytes()
        (tmp_path / name).write_bytes(data[:33] + exif + data[33:])  # after the signature and IHDR
    got, expected = read_photo(tmp_path / "cutout.png"), read_photo(tmp_path / "expected.png")
    assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1


def exif_block(orientation: int, order: str = ">") -> bytes:
    """EXIF data: a TIFF header and one IFD entry, tag 0x0112 (Orientation), type SHORT, count 1."""
    tiff = (b"MM\x00\x2a" if order == ">" else b"II\x2a\x00") + struct.pack(order + "I", 8)
    tiff += struct.pack(order + "HHHIHH", 1, 0x0112, 3, 1, orientation, 0)
    return b"Exif\x00\x00" + tiff + struct.pack(order + "I", 0)  # no next IFD


def exif_jpeg(stored_rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``stored_rgb`` whose EXIF says how to turn it upright (as phones write portraits)."""
    bgr = np.ascontiguousarray(stored_rgb[:, :, ::-1])
    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    app1 = exif_block(orientation)
    data = jpg.tobytes()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def exif_webp(stored_rgb: np.ndarray, orientation: int) -> bytes:
    """A lossless WebP of ``stored_rgb`` in the extended format (VP8X) with a little-endian EXIF chunk."""
    ok, simple = cv2.imencode(".webp", np.ascontiguousarray(stored_rgb[:, :, ::-1]), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok and simple[12:16].tobytes() == b"VP8L"
    h, w = stored_rgb.shape[:2]
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x08\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    exif = exif_block(orientation, "<")[6:]  # WebP's EXIF chunk holds the TIFF data itself
    exif_chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + b"\0" * (len(exif) & 1)
    body = b"WEBP" + vp8x + simple.tobytes()[12:] + exif_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_reads_upright_from_jpeg_and_webp(tmp_path: Path, orientation: int) -> None:
    """Four coloured quadrants, so that mirrored orientations (2, 4, 5, 7) show too. OpenCV turns a
    JPEG itself; a WebP's EXIF chunk is read by us."""
    from streamer.reconstruct.image import UPRIGHT

    upright = np.zeros((120, 80, 3), np.uint8)
    upright[:60, :40] = (255, 0, 0)
    upright[:60, 40:] = (0, 255, 0)
    upright[60:, :40] = (0, 0, 255)
    upright[60:, 40:] = (255, 255, 0)
    # the stored picture: the inverse turn (2-5 and 7 are their own inverses, 6 and 8 each other's)
    stored = UPRIGHT[{6: 8, 8: 6}.get(orientation, orientation)](upright) if orientation > 1 else upright
    assert np.array_equal(UPRIGHT[orientation](stored) if orientation > 1 else stored, upright)
    for name, data in (("phone.jpg", exif_jpeg(stored, orientation)), ("phone.webp", exif_webp(stored, orientation))):
        (tmp_path / name).write_bytes(data)
        rgb = read_photo(tmp_path / name)
        assert rgb.shape == upright.shape, name
        for ys, xs in ((slice(5, 55), slice(5, 35)), (slice(5, 55), slice(45, 75)),
                       (slice(65, 115), slice(5, 35)), (slice(65, 115), slice(45, 75))):
            assert np.abs(rgb[ys, xs].astype(int) - upright[ys, xs]).max() < 40, (name, ys, xs)


def test_a_webp_exif_chunk_outside_the_riff_is_not_read() -> None:
    """Bytes after the RIFF's own length are not the WebP's (a trailer, padding): no chunk is read there."""
    from streamer.reconstruct.image import webp_orientation

    stored = np.zeros((70, 90, 3), np.uint8)
    inside = exif_webp(stored, 6)
    assert webp_orientation(inside) == 6
    riff = inside[: 8 + struct.unpack("<I", inside[4:8])[0]]
    exif = riff[riff.index(b"EXIF") :]
    plain = riff[: riff.index(b"EXIF")]
    plain = plain[:4] + struct.pack("<I", len(plain) - 8) + plain[8:]  # the same file without its EXIF
    assert webp_orientation(plain) == 1 and webp_orientation(plain + exif) == 1


def test_bomb_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(100_000, 100_000))  # 10 gigapixels, 30 GB decoded
    assert path.stat().st_size < 100_000

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    with pytest.raises(ReconstructionError, match="exceeds the limit"):
        read_photo(path)
    assert_refused(path, tmp_path, capsys, "exceeds the limit")


def test_unsupported_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "photo.gif"
    path.write_bytes(b"GIF89a" + b"\0" * 100)
    assert_refused(path, tmp_path, capsys, "not an image in a supported format")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    assert_refused(text, tmp_path, capsys, "not an image in a supported format")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(tmp_path / "nowhere.png", tmp_path, capsys, "no such file")


def test_empty_file_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert_refused(empty, tmp_path, capsys, "empty.jpg: empty file")
    folder = tmp_path / "photos"
    folder.mkdir()
    assert_refused(folder, tmp_path, capsys, "is a folder, not a photo")


def test_unwritable_output_is_refused_before_the_photo_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the photo was read")

    monkeypatch.setattr("streamer.reconstruct.image.read_photo", no_read)
    (tmp_path / "afile").write_text("a file, not a folder")
    for out, words in (("avatar.txt", "must end in .ply"), ("afile/avatar.ply", "afile is not a folder")):
        assert main(["reconstruct", "photo.png", "-o", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert "streamer reconstruct: error:" in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@needs_photo
def test_truncated_png_and_jpeg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = PHOTO.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    assert_refused(cut, tmp_path, capsys, "truncated PNG")
    _ok, jpg = cv2.imencode(".jpg", cv2.imread(str(PHOTO)))
    cutj = tmp_path / "cut.jpg"
    cutj.write_bytes(jpg.tobytes()[: len(jpg) // 2])
    assert_refused(cutj, tmp_path, capsys, "truncated JPEG")


def _stripes(h: int = 120, w: int = 90) -> np.ndarray:
    """Textured RGB, so that the JPEG's coded data holds many 0xFF bytes."""
    rng = np.random.default_rng(4)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_what_phones_append_after_the_picture_is_not_a_cut_file(tmp_path: Path) -> None:
    rgb = _stripes()
    ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    ok2, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok and ok2
    trailers = {
        "motion.jpg": jpg.tobytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40,  # a video
        "padded.jpg": jpg.tobytes() + b"\x00" * 512,
        "maker.jpg": jpg.tobytes() + b"\x00\x00SEFH" + bytes(range(256)) * 8 + b"SEFT",
        "trailer.png": png.tobytes() + b"saved by an editor",
    }
    for name, data in trailers.items():
        (tmp_path / name).write_bytes(data)
        got = read_photo(tmp_path / name)
        assert got.shape == rgb.shape, name
        if name.endswith(".png"):
            np.testing.assert_array_equal(got, rgb)


def test_a_cut_jpeg_is_refused_even_when_its_thumbnail_is_whole(tmp_path: Path) -> None:
    ok, thumb = cv2.imencode(".jpg", _stripes(16, 16))
    ok2, main_jpg = cv2.imencode(".jpg", _stripes())
    assert ok and ok2
    app1 = b"Exif\x00\x00" + thumb.tobytes()  # the thumbnail's own end marker lies in APP1
    data = main_jpg.tobytes()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    (tmp_path / "whole.jpg").write_bytes(data)
    assert read_photo(tmp_path / "whole.jpg").shape == (120, 90, 3)
    progressive = cv2.imencode(".jpg", _stripes(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    for name, cut in (("cut.jpg", data[: len(data) - 200]), ("cut_progressive.jpg", progressive[:-100])):
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(ReconstructionError, match="truncated JPEG"):
            read_photo(tmp_path / name)


def test_a_jpeg_over_the_pixel_limit_is_decoded_smaller(tmp_path: Path) -> None:
    upright = np.zeros((400, 300, 3), np.uint8)  # red on top, blue below, stored sideways
    upright[:200, :, 0] = 255
    upright[200:, :, 2] = 255
    path = tmp_path / "big.jpg"
    path.write_bytes(exif_jpeg(np.rot90(upright, 1), 6))
    half = read_photo(path, max_pixels=40_000)  # 120,000 pixels: decoded at 1/2
    assert half.shape == (200, 150, 3)
    assert half[:90, :, 0].min() > 200 and half[110:, :, 2].min() > 200  # still upright
    assert read_photo(path, max_pixels=8_000).shape == (100, 75, 3)  # 1/4
    with pytest.raises(ReconstructionError, match="exceeds the limit"):
        read_photo(path, max_pixels=7_000)  # not even 1/4 fits
    png = tmp_path / "big.png"
    cv2.imwrite(str(png), upright)
    with pytest.raises(ReconstructionError, match="exceeds the limit"):
        read_photo(png, max_pixels=40_000)  # only JPEG has a scaled decoder


def test_corrupt_png_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = bytearray(png.tobytes())
    data[100:4000] = b"\x55" * 3900  # garbage in the compressed pixel data, header and end intact
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    assert_refused(path, tmp_path, capsys, "corrupt PNG")


def test_no_person(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(150, 10, (480, 640, 3)), 0, 255).astype(np.uint8)  # a plain wall
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), img)
    assert_refused(path, tmp_path, capsys, "wall.png: no person")  # which photo, too


@needs_photo
@pytest.mark.parametrize(
    ("crop", "words"),
    [
        # the top 22% off: the hat and face go, the body is still found (a quarter off: nobody is)
        ((slice(int(0.22 * 960), None), slice(None)), "the person's head is cut off or hidden"),
        # the left half off: the face stays, one shoulder goes
        ((slice(None), slice(360, None)), "the person is cut off: both shoulders must be in the picture"),
    ],
    ids=["head", "shoulder"],
)
def test_person_cut_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], crop: tuple[slice, slice], words: str
) -> None:
    photo = cv2.imread(str(PHOTO))
    assert photo.shape[:2] == (960, 720)  # the crops above are in this photo's pixels
    path = tmp_path / "cut.png"
    cv2.imwrite(str(path), photo[crop])
    code, err = run_cli(path, tmp_path / "avatar.ply", capsys)
    assert code == 2 and not (tmp_path / "avatar.ply").exists()
    assert words in err, err


@needs_photo
def test_person_far_away_is_not_found_and_told_to_crop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = cv2.resize(cv2.imread(str(PHOTO)), (60, 80), interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 960, 3), 235, np.uint8)
    canvas[300:380, 400:460] = small
    path = tmp_path / "far.png"
    cv2.imwrite(str(path), canvas)
    code, err = run_cli(path, tmp_path / "avatar.ply", capsys)
    assert code == 2 and not (tmp_path / "avatar.ply").exists()
    assert "no person found (if the person is small in the picture, crop it round them" in err, err


@needs_photo
def test_person_under_the_minimum_height_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MediaPipe finds nobody much under the minimum (see the test above), so the check is tried
    on the real photo with the minimum raised above its height."""
    from streamer.reconstruct import person

    monkeypatch.setattr(person, "MIN_PERSON_PX", 2000)
    code, err = run_cli(PHOTO, tmp_path / "avatar.ply", capsys)
    assert code == 2 and not (tmp_path / "avatar.ply").exists()
    assert re.search(r"the person is too small: \d+ px tall, at least 2000 px needed", err), err


def test_search_windows_overlap_by_half_so_a_person_half_their_size_fits_in_one() -> None:
    from streamer.reconstruct.person import search_windows

    wins = np.array(search_windows(1200, 900, 3))
    assert len(wins) == 25
    assert ((wins[:, 2] - wins[:, 0] == 400) & (wins[:, 3] - wins[:, 1] == 300)).all()
    assert wins[:, :2].min() == 0 and wins[:, 2].max() == 1200 and wins[:, 3].max() == 900
    rng = np.random.default_rng(0)
    for x0, y0 in zip(rng.uniform(0, 1000, 200), rng.uniform(0, 750, 200)):  # 200 x 150 boxes
        inside = (wins[:, 0] <= x0) & (wins[:, 1] <= y0) & (wins[:, 2] >= x0 + 200) & (wins[:, 3] >= y0 + 150)
        assert inside.any(), (x0, y0)


def _wide_picture(*people: tuple[Path, int, int, int]) -> np.ndarray:
    """A 2400x1800 blurred-noise picture with each (photo, height, x, y) pasted in, RGB."""
    rng = np.random.default_rng(0)
    canvas = cv2.GaussianBlur(rng.integers(40, 200, (1800, 2400, 3)).astype(np.uint8), (0, 0), 6)
    for photo, h, x, y in people:
        one = cv2.imread(str(photo))[:, :, ::-1]
        w = round(one.shape[1] * h / one.shape[0])
        canvas[y : y + h, x : x + w] = cv2.resize(one, (w, h), interpolation=cv2.INTER_AREA)
    return canvas


@needs_photo
def test_a_person_small_in_a_wide_picture_is_found_by_zooming_in() -> None:
    """MediaPipe's detector alone misses a person a quarter of the picture's height; the search finds her."""
    from streamer.reconstruct.person import _pose_in_window, find_person
    from streamer.tracking.mediapipe_runner import MediaPipeRunner

    h, w = 480, 360
    canvas = _wide_picture((PHOTO, h, 1500, 900))
    with MediaPipeRunner(models="pose", video=False, segmentation=True) as runner:
        assert _pose_in_window(runner, canvas, (0, 0, 2400, 1800)) is None  # the whole picture: nobody
    person = find_person(canvas)
    assert person.people == 1
    x0, y0, x1, y1 = person.box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 1500 < cx < 1500 + w and 900 < cy < 900 + h, person.box
    assert h < y1 - y0 < 2 * h  # the crop frames her, with its margin
    assert person.mask[person.valid].mean() > 0.1


@needs_photo
def test_small_people_found_by_the_search_are_counted() -> None:
    """Two people too small for the whole-picture count: --strict refuses, else the taller is taken."""
    from streamer.reconstruct.person import find_person

    skirt = SHARED_DATA / "photos" / "studio_woman_skirt.png"
    canvas = _wide_picture((PHOTO, 480, 1500, 900), (skirt, 440, 300, 700))
    with pytest.raises(ReconstructionError, match="2 people in the picture; --strict"):
        find_person(canvas, strict=True)
    with pytest.warns(UserWarning, match="2 people in the picture: using the largest"):
        person = find_person(canvas)
    assert person.people == 2 and (person.box[0] + person.box[2]) / 2 > 1500  # the taller, on the right


@needs_photo
def test_several_people_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = cv2.imread(str(PHOTO))
    other = np.full_like(one, 230)
    other[192:, :576] = cv2.resize(one, (576, 768))
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), np.concatenate([one, other], 1))
    out = tmp_path / "avatar.ply"
    assert main(["reconstruct", str(path), "-o", str(out), "--strict"]) == 2
    assert "2 people" in capsys.readouterr().err and not out.exists()


def test_sample_image_many_points_and_none() -> None:
    from streamer.reconstruct.colour import sample_image

    img = np.zeros((4, 5, 3), np.uint8)
    img[2, 3] = (255, 128, 0)
    pix = np.tile(
        np.array([[3.5, 2.5], [0.5, 0.5]]), (25_000, 1)
    )  # 50,000 points: more than remap's 32767 rows
    out = sample_image(img, pix)
    assert out.shape == (50_000, 3)
    np.testing.assert_allclose(out[0], (1.0, 128 / 255, 0.0), atol=1e-6)
    np.testing.assert_allclose(out[1::2], 0.0)
    assert sample_image(img, np.zeros((0, 2))).shape == (0, 3)


@needs_photo
def test_several_people_takes_the_largest_with_a_warning() -> None:
    from streamer.reconstruct.person import find_person

    one = cv2.imread(str(PHOTO))[:, :, ::-1]
    other = np.full_like(one, 230)
    other[192:, :576] = cv2.resize(one, (576, 768))
    with pytest.warns(UserWarning, match="2 people in the picture: using the largest"):
        person = find_person(np.ascontiguousarray(np.concatenate([one, other], 1)))
    assert person.people == 2
    x0, _, x1, _ = person.box
    assert (x0 + x1) / 2 < one.shape[1]  # the larger person, on the left


def test_crop_image_maps_pixel_centres() -> None:
    """Crop pixel j shows photo position x0 + (j + 0.5) / scale (pixel centres at +0.5 on both sides)."""
    from streamer.reconstruct.person import crop_image, crop_valid

    H, W = 40, 60
    xs = np.arange(W, dtype=np.float32) + 0.5  # each pixel holds its own centre's coordinate
    ys = np.arange(H, dtype=np.float32) + 0.5
    photo = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.zeros((H, W), np.float32)), -1)
    box = (10.0, 5.0, 22.0, 25.0)  # 12 x 20 photo pixels -> 30 x 50 crop pixels (2.5x)
    crop = crop_image(photo, box, out_h=50, out_w=30)
    j, i = np.arange(30), np.arange(50)
    expect_x = 10.0 + (j + 0.5) * 12.0 / 30
    expect_y = 5.0 + (i + 0.5) * 20.0 / 50
    # (OpenCV interpolates at 1/32-pixel steps; the old half-pixel error was 0.3 here)
    assert np.allclose(crop[25, :, 0], expect_x, atol=0.04)
    assert np.allclose(crop[:, 15, 1], expect_y, atol=0.04)
    assert crop_valid((H, W), (-5.0, 0.0, 55.0, 100.0)).shape == (1000, 600)


def test_step_clock_times_steps_in_order() -> None:
    import time

    from streamer.reconstruct.steps import StepClock

    seen: list[str] = []
    clock = StepClock(seen.append)
    clock("a")
    time.sleep(0.5)
    clock("b")
    seconds = clock.done()
    assert seen == ["a", "b"] and list(seconds) == ["a", "b"]
    assert seconds["a"] >= 0.45 and 0.0 <= seconds["b"] < seconds["a"]
