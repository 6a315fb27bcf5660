"""Camera intrinsics: from checkerboard views (OpenCV) or a field-of-view guess, saved as JSON.

The intrinsics follow the product's convention (DESIGN.md): ``K`` in pixels with pixel centres at
+0.5, as gsplat and :class:`streamer.render.Camera`. OpenCV puts pixel centres at integer
coordinates, so its principal point is 0.5 px smaller; :meth:`CameraIntrinsics.opencv_K` converts.
``dist`` holds OpenCV's distortion coefficients ``(k1, k2, p1, p2, k3)``.

The JSON file (written atomically) looks like::

    {"format": "streamer-camera-intrinsics", "version": 1, "width": 1280, "height": 720,
     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], "dist": [k1, k2, p1, p2, k3],
     "method": "checkerboard", "rms_px": 0.31, "views": 18}

Example:
    >>> intr = calibrate_checkerboard(images, pattern=(9, 6), square_mm=25.0)
    >>> intr.save("K.json")
    >>> load_intrinsics("K.json").scaled_to(640, 360).camera()  # a streamer.render.Camera
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from streamer.errors import CameraCalibrationError, InputError
from streamer.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from streamer.render import Camera  # torch: imported only when a Camera is made

FORMAT = "streamer-camera-intrinsics"
VERSION = 1
FovAxis = Literal["horizontal", "vertical", "diagonal"]
FOV_AXES: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_VIEWS = 4
_DIST_LENGTHS = (4, 5, 8, 12, 14)  # the lengths OpenCV accepts


@dataclass
class CameraIntrinsics:
    """A calibrated (or guessed) pinhole camera with lens distortion.

    Attributes:
        K: intrinsics, pixels, pixel centres at +0.5. [3, 3] float64
        dist: OpenCV distortion coefficients (k1, k2, p1, p2[, k3, ...]). [4|5|8|12|14] float64
        width, height: the image size K belongs to, pixels.
        method: ``"checkerboard"`` or ``"fov"``.
        rms_px: RMS reprojection error of the calibration, pixels (None for a guess).
        views: checkerboard views used (None for a guess).
    """

    K: np.ndarray
    width: int
    height: int
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    method: str = "fov"
    rms_px: float | None = None
    views: int | None = None

    def __post_init__(self) -> None:
        try:
            self.K = np.asarray(self.K, dtype=np.float64)
            self.dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
            self.width, self.height = int(self.width), int(self.height)
        except (TypeError, ValueError) as exc:
            raise CameraCalibrationError(f"camera intrinsics: non-numeric values ({exc})") from None
        if self.K.shape != (3, 3):
            raise CameraCalibrationError(f"camera intrinsics: K must be 3x3, got shape {self.K.shape}")
        if not (np.isfinite(self.K).all() and np.isfinite(self.dist).all()):
            raise CameraCalibrationError("camera intrinsics: K or dist contains NaN or infinite values")
        if (
            self.K[0, 0] <= 0
            or self.K[1, 1] <= 0
            or not np.allclose(self.K[2], [0, 0, 1])
            or self.K[1, 0] != 0
        ):
            raise CameraCalibrationError(
                "camera intrinsics: K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0; "
                f"got {self.K.tolist()}"
            )
        if self.dist.size not in _DIST_LENGTHS:
            raise CameraCalibrationError(
                f"camera intrinsics: dist must have {', '.join(map(str, _DIST_LENGTHS))} coefficients, "
                f"got {self.dist.size}"
            )
        if self.width <= 0 or self.height <= 0:
            raise CameraCalibrationError(
                f"camera intrinsics: image size must be positive, got {self.width}x{self.height}"
            )

    # -- views of the numbers ------------------------------------------------------------

    @property
    def fov_x_deg(self) -> float:
        """Horizontal field of view, degrees (pinhole, ignoring distortion)."""
        return math.degrees(2 * math.atan(self.width / (2 * self.K[0, 0])))

    @property
    def fov_y_deg(self) -> float:
        """Vertical field of view, degrees (pinhole, ignoring distortion)."""
        return math.degrees(2 * math.atan(self.height / (2 * self.K[1, 1])))

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def opencv_K(self) -> np.ndarray:
        """K with OpenCV's pixel-centre convention (principal point 0.5 px smaller). [3, 3] float64"""
        K = self.K.copy()
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        return K

    def scaled_to(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera at another resolution of the same picture (a resize, not a crop).

        Raises:
            CameraCalibrationError: the aspect ratio differs by more than 1% (a crop or another mode,
                whose intrinsics cannot be derived).
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx / sy - 1.0) > 0.01:
            raise CameraCalibrationError(
                f"camera intrinsics are for {self.width}x{self.height} but the frames are {width}x{height}: "
                "a different aspect ratio (cropped or another camera mode); calibrate at this resolution"
            )
        K = self.K.copy()
        K[0] *= sx  # fx, skew, cx (the +0.5 convention makes cx scale exactly)
        K[1] *= sy
        return CameraIntrinsics(
            K=K,
            width=width,
            height=height,
            dist=self.dist.copy(),
            method=self.method,
            rms_px=None if self.rms_px is None else self.rms_px * math.sqrt(sx * sy),
            views=self.views,
        )

    def undistort_points(self, points: np.ndarray) -> np.ndarray:
        """Remove lens distortion from pixel positions: where an ideal pinhole camera would see them.

        Args:
            points: pixel positions (our +0.5 convention). [N, 2] float
        Returns:
            undistorted pixel positions with the same K. [N, 2] float32
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion or len(pts) == 0:
            return pts.astype(np.float32)
        import cv2

        Kcv = self.opencv_K()
        out = cv2.undistortPoints((pts - 0.5).reshape(-1, 1, 2), Kcv, self.dist, P=Kcv).reshape(-1, 2)
        return (out + 0.5).astype(np.float32)

    def camera(self, viewmat: np.ndarray | None = None) -> Camera:
        """A :class:`streamer.render.Camera` with these intrinsics (distortion ignored).

        Args:
            viewmat: world-to-camera transform, OpenCV axes. [4, 4] (default: identity)
        """
        import torch

        from streamer.render import Camera

        view = np.eye(4) if viewmat is None else np.asarray(viewmat, dtype=np.float64)
        K, V = torch.from_numpy(self.K.astype(np.float32)), torch.from_numpy(view.astype(np.float32))
        return Camera(K=K, viewmat=V, width=self.width, height=self.height)

    # -- files ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "dist": self.dist.tolist(),
            "pixel_centers": 0.5,
            "method": self.method,
            "rms_px": self.rms_px,
            "views": self.views,
            "fov_x_deg": round(self.fov_x_deg, 3),
            "fov_y_deg": round(self.fov_y_deg, 3),
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically."""
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path


def load_intrinsics(path: str | Path) -> CameraIntrinsics:
    """Read a camera intrinsics JSON written by :meth:`CameraIntrinsics.save`.

    Raises:
        CameraCalibrationError: missing file, not JSON, wrong format, or invalid numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraCalibrationError(f"camera intrinsics file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CameraCalibrationError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CameraCalibrationError(f'{path}: not a camera intrinsics file (expected "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise CameraCalibrationError(
            f"{path}: unsupported version {data.get('version')!r} (this reader knows {VERSION})"
        )
    missing = [k for k in ("K", "width", "height") if k not in data]
    if missing:
        raise CameraCalibrationError(f"{path}: missing {', '.join(missing)}")
    rms = data.get("rms_px")
    try:
        return CameraIntrinsics(
            K=data["K"],
            width=data["width"],
            height=data["height"],
            dist=data.get("dist") or np.zeros(5),
            method=str(data.get("method", "fov")),
            rms_px=None if rms is None else float(rms),
            views=None if data.get("views") is None else int(data["views"]),
        )
    except CameraCalibrationError as exc:
        raise CameraCalibrationError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CameraCalibrationError(f"{path}: invalid values ({exc})") from None


def intrinsics_from_fov(
    fov_deg: float, width: int, height: int, axis: FovAxis = "diagonal"
) -> CameraIntrinsics:
    """A guess: square pixels, centred principal point, no distortion, the given field of view.

    Args:
        fov_deg: field of view in degrees, in (0, 180).
        width, height: image size, pixels.
        axis: which extent ``fov_deg`` spans; webcam data sheets usually quote the diagonal.
    """
    if not 0.0 < fov_deg < 180.0:
        raise InputError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    if axis not in FOV_AXES:
        raise InputError(f"fov axis must be one of {', '.join(FOV_AXES)}, got {axis!r}")
    extent = {"horizontal": width, "vertical": height, "diagonal": math.hypot(width, height)}[axis]
    f = 0.5 * extent / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(K=K, width=width, height=height, method="fov")


# -- checkerboard calibration -----------------------------------------------------------------


def parse_pattern(text: str) -> tuple[int, int]:
    """``"9x6"`` -> (9, 6): inner corners per row and per column (a 10x7-square board is 9x6)."""
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"checkerboard pattern must look like 9x6 (inner corners), got {text!r}") from None
    if cols < 2 or rows < 2:
        raise InputError(f"checkerboard pattern needs at least 2x2 inner corners, got {text!r}")
    return cols, rows


def board_points(pattern: tuple[int, int], square_mm: float) -> np.ndarray:
    """The inner corners on the board plane, row by row, metres. [cols * rows, 3] float32 (z = 0)"""
    cols, rows = pattern
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float32)
    return np.concatenate([grid * (square_mm / 1000.0), np.zeros((len(grid), 1), np.float32)], axis=1)


def find_checkerboard(
    gray: np.ndarray, pattern: tuple[int, int], detect_width: int = 1280
) -> np.ndarray | None:
    """Inner corners of a checkerboard in an image, refined to sub-pixel precision.

    Detection runs on a copy shrunk to ``detect_width`` (it is slow on large images); the corners
    are then refined on the full image.

    Args:
        gray: the image. [H, W] uint8 (or [H, W, 3] RGB)
        pattern: inner corners (per row, per column).
    Returns:
        corners in OpenCV pixel coordinates (centres at integers), or None. [cols * rows, 1, 2] float32
    """
    import cv2

    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, detect_width / gray.shape[1])
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(small, pattern, flags=flags)
    if not found:
        return None
    corners = ((corners + 0.5) / scale - 0.5).astype(np.float32)
    # Search window: a third of the smallest corner spacing, so refinement never jumps to a neighbour.
    spacing = float(np.min(np.linalg.norm(np.diff(corners.reshape(-1, 2), axis=0), axis=1)))
    win = int(np.clip(spacing / 3, 2, 11))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    return cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), criteria)


def calibration_images(
    inputs: Sequence[str | Path], max_video_frames: int = 120
) -> Iterator[tuple[str, np.ndarray]]:
    """Grey images to look for a checkerboard in: from a video, a folder of images, or image files.

    A video yields up to ``max_video_frames`` frames spread evenly over its length.

    Yields:
        (a name for messages, [H, W] uint8 grey image)
    Raises:
        InputError / SourceError: a missing or unreadable input.
    """
    import cv2

    from streamer.tracking.sources import VideoFileSource

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif not p.exists():
            raise InputError(f"checkerboard input not found: {p}")
        else:
            files.append(p)
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise InputError(f"{p}: not a readable image")
            yield p.name, img
            continue
        with VideoFileSource(p) as src:
            limit = max(1, max_video_frames)
            stride = max(1, math.ceil((src.frame_count or 1) / limit))  # ceil: never more than limit
            kept = 0
            for i, (_, rgb) in enumerate(src):
                if i % stride == 0:
                    yield f"{p.name}#{i}", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                    kept += 1
                    if kept >= limit:  # also when the container does not state its frame count
                        break


def calibrate_checkerboard(
    images: Iterable[tuple[str, np.ndarray]] | Iterable[np.ndarray],
    pattern: tuple[int, int] = (9, 6),
    square_mm: float = 25.0,
    max_views: int = 40,
    min_views: int = MIN_VIEWS,
) -> CameraIntrinsics:
    """Calibrate from images of a planar checkerboard (OpenCV ``calibrateCamera``).

    Views whose corners barely moved since the last kept view (still video frames) are skipped;
    at most ``max_views`` views, spread over the input, are used. Distortion: k1, k2, p1, p2 (k3
    fixed at 0: it overfits the few views a user records).

    Args:
        images: grey or RGB images ([H, W] or [H, W, 3] uint8), optionally as (name, image) pairs.
        pattern: inner corners per row and per column.
        square_mm: the side of one square, millimetres (only sets the scale of the board poses).
    Raises:
        CameraCalibrationError: images of different sizes, or the board found in fewer than
            ``min_views`` images.
    """
    import cv2

    if square_mm <= 0:
        raise InputError(f"square size must be positive, got {square_mm} mm")
    size: tuple[int, int] | None = None
    views: list[np.ndarray] = []
    seen = 0
    for item in images:
        img = item[1] if isinstance(item, tuple) else item
        seen += 1
        h, w = img.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise CameraCalibrationError(
                f"checkerboard images differ in size: {size[0]}x{size[1]} and {w}x{h}"
            )
        corners = find_checkerboard(img, pattern)
        if corners is None:
            continue
        if views:
            moved = float(np.mean(np.linalg.norm(corners - views[-1], axis=-1)))
            if moved < 0.01 * math.hypot(w, h):
                continue
        views.append(corners)
    if size is None:
        raise CameraCalibrationError("no images to calibrate from")
    if len(views) < min_views:
        raise CameraCalibrationError(
            f"found the {pattern[0]}x{pattern[1]} checkerboard in {len(views)} distinct view(s) "
            f"of {seen} image(s); "
            f"need at least {min_views}. Check --pattern (inner corners: a board of 10x7 squares is 9x6) and "
            "show the board whole, at several angles"
        )
    if len(views) > max_views:
        views = [views[i] for i in np.linspace(0, len(views) - 1, max_views).round().astype(int)]
    obj = board_points(pattern, square_mm)
    w, h = size
    flags = cv2.CALIB_FIX_K3
    # The initial K and distortion are placeholders: without CALIB_USE_INTRINSIC_GUESS OpenCV starts afresh.
    rms, K, dist, _, _ = cv2.calibrateCamera(
        [obj] * len(views), views, (w, h), np.eye(3), np.zeros(5), flags=flags
    )
    if not (np.isfinite(rms) and np.isfinite(K).all()):
        raise CameraCalibrationError("calibration did not converge; record the board at more varied angles")
    K = np.asarray(K, dtype=np.float64)
    K[0, 2] += 0.5  # OpenCV pixel centres at integers -> ours at +0.5
    K[1, 2] += 0.5
    return CameraIntrinsics(
        K=K,
        width=w,
        height=h,
        dist=np.asarray(dist).reshape(-1)[:5],
        method="checkerboard",
        rms_px=float(rms),
        views=len(views),
    )
