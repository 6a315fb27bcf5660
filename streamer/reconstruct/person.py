"""Finding the person in a photo: landmarks, a person mask, and the 5:3 crop around them.

Two passes: the whole photo (scaled to at most :data:`DETECT_SIDE` px) finds the person and counts
people (a person too small for MediaPipe's detector there is searched for in zoomed windows); the
person is then cropped like LHM's input (centred, height:width = 5:3, a margin around the body)
and scaled to :data:`CROP_HEIGHT` x :data:`CROP_WIDTH`, where MediaPipe Holistic gives the
landmarks and MediaPipe Pose's segmentation the person mask (its edge snapped to the photo's colour
edges, :mod:`.mask_edges`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ReconstructionError, StreamerWarning
from ..tracking.landmarks import FrameLandmarks
from .mask_edges import snap_to_edges

if TYPE_CHECKING:
    from ..tracking.mediapipe_runner import MediaPipeRunner

DETECT_SIDE = 1024
CROP_HEIGHT, CROP_WIDTH = 1000, 600  # 5:3 like LHM's input
MARGIN = 0.08  # of the person's height, on each side
MIN_PERSON_PX = 96  # smallest person height in the photo, pixels
#: Zooms of the windows searched when the whole picture shows nobody (:func:`search_windows`), and the
#: size of the window then centred on the person found, relative to their box.
SEARCH_ZOOMS = (2, 3, 4)
SEARCH_RECENTRE = 1.6
#: The smallest window searched, pixels tall: the detector finds a person a third of a window tall or
#: more, so smaller windows could only find people under MIN_PERSON_PX, and they find faces in handbags.
SEARCH_MIN_WINDOW = 3 * MIN_PERSON_PX
OTHER_PERSON_FRACTION = 0.25  # a mask blob this large relative to the person counts as another person
# MediaPipe Pose landmark ids.
NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 0, 11, 12, 23, 24


@dataclass
class Person:
    """The person found in a photo, in the crop's pixels.

    Attributes:
        rgb: the crop, [CROP_HEIGHT, CROP_WIDTH, 3] uint8.
        mask: person probability in the crop, [CROP_HEIGHT, CROP_WIDTH] float32 in [0, 1]
            (MediaPipe's, its edge snapped to the photo's colours: :func:`.mask_edges.snap_to_edges`).
        landmarks: MediaPipe Holistic landmarks of the crop.
        box: the crop in the photo's pixels (x0, y0, x1, y1), may extend past the photo.
        people: how many people the whole-photo mask suggests (1 = just this one).
        full_body: whether hips and knees were visible (False: a half-body photo).
        valid: crop pixels that lie inside the photo, [CROP_HEIGHT, CROP_WIDTH] bool.
    """

    rgb: np.ndarray
    mask: np.ndarray
    landmarks: FrameLandmarks
    box: tuple[float, float, float, float]
    people: int
    full_body: bool
    valid: np.ndarray


def find_people(rgb: np.ndarray) -> tuple[int, np.ndarray | None]:
    """Count people with MediaPipe's selfie segmentation: mask blobs at least
    :data:`OTHER_PERSON_FRACTION` as large as the largest.

    Returns:
        the count, and (when more than one) where the largest person is: their blob dilated by
        5% of the image size, [H, W] bool; None otherwise.
    """
    import cv2
    from mediapipe.python.solutions import selfie_segmentation

    from ..tracking.native_log import quiet_native_stderr

    with quiet_native_stderr(), selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        res = seg.process(rgb)
    if res.segmentation_mask is None:
        return 1, None
    m = (res.segmentation_mask > 0.5).astype(np.uint8)
    _n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(float)
    if not len(areas):
        return 1, None
    count = int((areas >= OTHER_PERSON_FRACTION * areas.max()).sum())
    if count <= 1:
        return 1, None
    r = max(3, round(0.05 * max(m.shape)))
    largest = (labels == 1 + int(np.argmax(areas))).astype(np.uint8)
    return count, cv2.dilate(largest, np.ones((r, r), np.uint8)).astype(bool)


def crop_image(
    rgb: np.ndarray, box: tuple[float, float, float, float], out_h: int = CROP_HEIGHT, out_w: int = CROP_WIDTH
) -> np.ndarray:
    """Crop ``box`` (x0, y0, x1, y1, photo pixels, may leave the photo) and scale to out_h x out_w; outside = grey."""
    import cv2

    x0, y0, x1, y1 = box
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    # Continuous coordinates with pixel centres at +0.5 (our convention) on both sides; OpenCV puts
    # centres at integers, hence the (s - 1) / 2 terms: crop pixel j shows photo x0 + (j + 0.5) / sx.
    M = np.array(
        [[sx, 0.0, -x0 * sx + (sx - 1) / 2], [0.0, sy, -y0 * sy + (sy - 1) / 2]], dtype=np.float64
    )
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(
        rgb, M, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)
    )


def crop_valid(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Which pixels of a :func:`crop_image` crop come from inside a photo of ``shape`` (H, W). [CROP_HEIGHT, CROP_WIDTH] bool"""
    x0, y0, x1, y1 = box
    xs = x0 + (np.arange(CROP_WIDTH) + 0.5) * (x1 - x0) / CROP_WIDTH
    ys = y0 + (np.arange(CROP_HEIGHT) + 0.5) * (y1 - y0) / CROP_HEIGHT
    return ((ys >= 0) & (ys < shape[0]))[:, None] & ((xs >= 0) & (xs < shape[1]))[None, :]


def person_box(
    landmarks_px: np.ndarray,
    visibility: np.ndarray,
    mask: np.ndarray | None,
    offset: tuple[int, int] = (0, 0),
) -> tuple[float, float, float, float] | None:
    """Bounding box (x0, y0, x1, y1) of the visible landmarks and the mask (> 0.5), pixels.

    ``mask`` may cover a window of the photo whose corner is at ``offset``; None when there is
    neither a visible landmark nor a mask pixel.
    """
    pts = landmarks_px[visibility > 0.5, :2]
    if mask is not None:
        ys, xs = np.nonzero(mask > 0.5)
        if len(xs):
            corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], float) + offset
            pts = np.concatenate([pts, corners])
    if not len(pts):
        return None
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def crop_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The 5:3 (height:width) crop centred on a person box, with :data:`MARGIN` around it."""
    x0, y0, x1, y1 = box
    h = (y1 - y0) * (1 + 2 * MARGIN)
    w = (x1 - x0) + 2 * MARGIN * (y1 - y0)
    h = max(h, w * CROP_HEIGHT / CROP_WIDTH)
    w = h * CROP_WIDTH / CROP_HEIGHT
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def full_frame_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The smallest 5:3 (height:width) box centred on a frame that contains all of it, pixels."""
    h = max(float(height), width * CROP_HEIGHT / CROP_WIDTH)
    w = h * CROP_WIDTH / CROP_HEIGHT
    return width / 2 - w / 2, height / 2 - h / 2, width / 2 + w / 2, height / 2 + h / 2


@dataclass
class _Found:
    """MediaPipe Pose's person in one window of a photo (photo pixels)."""

    landmarks: np.ndarray  # [33, 2]
    visibility: np.ndarray  # [33]
    box: tuple[float, float, float, float]  # :func:`person_box` of the landmarks and MediaPipe's mask

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def contains(self, other: _Found) -> bool:
        """Whether ``other``'s box centre lies in this box (the same person, seen from two windows)."""
        x0, y0, x1, y1 = self.box
        cx, cy = (other.box[0] + other.box[2]) / 2, (other.box[1] + other.box[3]) / 2
        return x0 <= cx <= x1 and y0 <= cy <= y1


def _pose_in_window(
    runner: MediaPipeRunner,
    rgb: np.ndarray,
    window: tuple[int, int, int, int],
    grey: Sequence[tuple[float, float, float, float]] = (),
) -> _Found | None:
    """MediaPipe Pose on one window (x0, y0, x1, y1, inside the photo), scaled to at most :data:`DETECT_SIDE`.

    ``grey``: boxes (photo pixels) painted grey first, so that MediaPipe sees one person.
    None if nobody was found (or MediaPipe gave neither a visible landmark nor a mask).
    """
    import cv2

    x0, y0, x1, y1 = window
    part = rgb[y0:y1, x0:x1]
    if grey:
        part = part.copy()
        for bx0, by0, bx1, by1 in grey:
            rows = slice(max(0, round(by0) - y0), max(0, round(by1) - y0))
            part[rows, max(0, round(bx0) - x0) : max(0, round(bx1) - x0)] = 128
    scale = min(1.0, DETECT_SIDE / max(part.shape[:2]))
    if scale < 1:
        size = (max(1, round(part.shape[1] * scale)), max(1, round(part.shape[0] * scale)))
        part = cv2.resize(part, size, interpolation=cv2.INTER_AREA)
    found = runner.process(np.ascontiguousarray(part), 0.0)
    if found.pose is None:
        return None
    # MediaPipe's landmarks are fractions of the picture it saw, times its size: rescale to the window.
    lm = found.pose.image[:, :2].astype(np.float64) * [(x1 - x0) / part.shape[1], (y1 - y0) / part.shape[0]]
    lm += [x0, y0]
    vis = found.pose.visibility.astype(np.float64)
    mask = None
    if found.segmentation is not None:
        mask = cv2.resize(found.segmentation, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    box = person_box(lm, vis, mask, (x0, y0))
    return None if box is None else _Found(lm, vis, box)


def search_windows(width: int, height: int, zoom: int) -> list[tuple[int, int, int, int]]:
    """Windows of 1/``zoom`` the picture's width and height, overlapping by half: (2 zoom - 1)^2 of them."""
    w, h = width / zoom, height / zoom
    steps = 2 * zoom - 1
    return [
        (round(i * w / 2), round(j * h / 2), round(i * w / 2 + w), round(j * h / 2 + h))
        for j in range(steps)
        for i in range(steps)
    ]


def _search_small_person(runner: MediaPipeRunner, rgb: np.ndarray) -> tuple[_Found | None, int]:
    """Look for a person too small for MediaPipe's detector in the whole picture.

    MediaPipe Pose's detector sees the picture at 224 px: a person under about a third of a
    picture's height is often missed. Zoomed windows (:data:`SEARCH_ZOOMS`) show them larger; the
    tallest person found is then looked at again in a window centred on them (everyone else
    greyed out), so that no window edge cuts them off.

    Returns:
        the person (None: nobody) and how many different people the windows showed.
    """
    H, W = rgb.shape[:2]
    for zoom in SEARCH_ZOOMS:
        if H / zoom < SEARCH_MIN_WINDOW:
            break
        hits = [
            f for win in search_windows(W, H, zoom) if (f := _pose_in_window(runner, rgb, win)) is not None
        ]
        hits = sorted((f for f in hits if f.height >= MIN_PERSON_PX), key=lambda f: -f.height)
        if not hits:
            continue
        people: list[_Found] = []  # one hit per person, the tallest first
        for hit in hits:
            if not any(p.contains(hit) or hit.contains(p) for p in people):
                people.append(hit)
        best = people[0]
        x0, y0, x1, y1 = best.box
        side = SEARCH_RECENTRE * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        win = (
            max(0, round(cx - side / 2)),
            max(0, round(cy - side / 2)),
            min(W, round(cx + side / 2)),
            min(H, round(cy + side / 2)),
        )
        again = _pose_in_window(runner, rgb, win, grey=[p.box for p in people[1:]])
        return (again if again is not None and best.contains(again) else best), len(people)
    return None, 0


def _several_people(count: int, strict: bool) -> None:
    """Refuse (``strict``) or warn about a picture with ``count`` > 1 people."""
    if strict:
        raise ReconstructionError(f"{count} people in the picture; --strict allows exactly one")
    warnings.warn(f"{count} people in the picture: using the largest", StreamerWarning, stacklevel=3)


def find_person(
    rgb: np.ndarray, strict: bool = False, crop: tuple[float, float, float, float] | None = None
) -> Person:
    """Find the (largest) person, crop around them and compute landmarks and mask.

    Args:
        rgb: the photo, [H, W, 3] uint8 RGB.
        strict: refuse photos with several people instead of taking the largest with a warning.
        crop: crop this 5:3 box (x0, y0, x1, y1, photo pixels) instead of one around the person
            (e.g. :func:`full_frame_box` for a video whose person moves).

    Raises:
        ReconstructionError: nobody found; several people with ``strict``; the person too small,
            or cut off so that the head or the shoulders are missing.
    """
    import cv2

    from ..tracking.mediapipe_runner import MediaPipeRunner
    from ..tracking.native_log import quiet_native_stderr

    H, W = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(H, W))
    small = (
        cv2.resize(rgb, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
        if scale < 1
        else rgb
    )
    people, largest = find_people(small)
    if people > 1:
        _several_people(people, strict)
        assert largest is not None
        # Grey out everyone else, so that MediaPipe (which would take the most confident) sees one.
        keep = cv2.resize(largest.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        rgb = np.where(keep[..., None], rgb, np.uint8(128))
    # Pose (and its person mask) on the whole photo, then holistic (and its mask) on the crop.
    with MediaPipeRunner(models="pose", video=False, segmentation=True) as runner:
        found = _pose_in_window(runner, rgb, (0, 0, W, H))
        if found is None:
            with quiet_native_stderr():  # MediaPipe warns about its crop rectangle on some windows
                found, seen = _search_small_person(runner, rgb)
            if seen > 1 and people == 1:  # too small for the whole-picture count too
                people = seen
                _several_people(people, strict)
    if found is None:
        raise ReconstructionError(
            "no person found (if the person is small in the picture, crop it round them and try again)"
        )
    lm, vis, box = found.landmarks, found.visibility, found.box
    if found.height < MIN_PERSON_PX:
        raise ReconstructionError(
            f"the person is too small: {found.height:.0f} px tall, at least {MIN_PERSON_PX} px needed"
        )
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < W) & (lm[:, 1] >= 0) & (lm[:, 1] < H)
    if not (inside[NOSE] and vis[NOSE] > 0.5):
        raise ReconstructionError("the person's head is cut off or hidden: the face must be in the picture")
    if not (inside[[L_SHOULDER, R_SHOULDER]].all() and vis[[L_SHOULDER, R_SHOULDER]].min() > 0.3):
        raise ReconstructionError("the person is cut off: both shoulders must be in the picture")
    full_body = bool(inside[[L_HIP, R_HIP, 25, 26]].all() and vis[[L_HIP, R_HIP, 25, 26]].min() > 0.5)
    cbox = crop_box(box) if crop is None else crop
    image = crop_image(rgb, cbox)
    with MediaPipeRunner(models="holistic", video=False, segmentation=True) as runner:
        frame = runner.process(image, 0.0)
    if frame.pose is None:
        raise ReconstructionError(
            "the person found in the photo was lost in the crop round them: a photo showing at least the "
            "head and the upper body, both shoulders whole, works best"
        )
    if frame.segmentation is None:
        raise ReconstructionError("no person found after cropping round them (MediaPipe gave no person mask)")
    return Person(
        rgb=image,
        mask=snap_to_edges(image, frame.segmentation),
        landmarks=frame,
        box=cbox,
        people=people,
        full_body=full_body,
        valid=crop_valid((rgb.shape[0], rgb.shape[1]), cbox),
    )
