"""A contact sheet of ``eval animate``: video frames above the avatar driven by their tracked poses.

A long video must not fill the memory, and the frame count of a file is only the container's guess,
so the sheet keeps small tiles of evenly spaced frames by halving: it keeps every ``step``-th scored
frame and, when it holds more than twice the columns it shows, doubles ``step`` and drops the frames
off the new spacing. The last frame is kept too, so the sheet reaches the video's end. The worst
frame (lowest finite PSNR) is kept beside them and always shown, in a red frame, in place of the
evenly spaced frame nearest it, since that is the frame a person looking for what to fix wants to see.

Each avatar tile is drawn on white with the outline of the frame's person mask in green, so that a
limb out of place shows as the avatar crossing the line or leaving it empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MASK_LINE_RGB = (0, 170, 0)
WORST_RGB = (220, 0, 0)
LABEL_RGB = (255, 255, 255)


@dataclass
class ScoredFrame:
    """One evaluated frame: what was compared, and its scores."""

    index: int  # the frame's number in the video (0 is the reconstruction frame)
    image: np.ndarray  # the video frame in the evaluation crop, [H, W, 3] uint8 RGB
    render: np.ndarray  # the avatar on black (colour times alpha), [H, W, 3] float in [0, 1]
    alpha: np.ndarray  # [H, W] float in [0, 1]
    mask: np.ndarray  # the person mask, [H, W] bool
    scores: dict[str, float]
    valid: np.ndarray | None = None  # crop pixels inside the video frame, [H, W] bool; tiles show only these


@dataclass
class _Tile:
    index: int
    psnr_db: float
    frame: np.ndarray  # [h, w, 3] uint8
    avatar: np.ndarray  # [h, w, 3] uint8


class AnimationSheet:
    """Collects frames during ``eval animate`` and lays out the contact sheet.

    Args:
        columns: frames shown, the worst one included (at least 2).
        height: height of each tile in pixels.
    """

    def __init__(self, columns: int = 6, height: int = 320) -> None:
        if columns < 2:
            raise ValueError(f"columns must be >= 2, got {columns}")
        if height < 32:
            raise ValueError(f"height must be >= 32, got {height}")
        self.columns = columns
        self.height = height
        self._step = 1  # keep every step-th scored frame
        self._seen = 0  # scored frames so far
        self._kept: list[tuple[int, _Tile]] = []  # (ordinal among scored frames, tile)
        self._worst: _Tile | None = None
        self._last: _Tile | None = None

    def add(self, frame: ScoredFrame) -> None:
        """Take one scored frame; only its small tiles are kept, and only while it may be shown."""
        ordinal = self._seen
        self._seen += 1
        psnr_db = float(frame.scores.get("psnr_db", math.nan))
        worse = math.isfinite(psnr_db) and (self._worst is None or psnr_db < self._worst.psnr_db)
        spaced = ordinal % self._step == 0
        tile = self._tile(frame, psnr_db)
        self._last = tile
        if worse:
            self._worst = tile
        if spaced:
            self._kept.append((ordinal, tile))
            if len(self._kept) > 2 * self.columns:
                self._step *= 2
                self._kept = [(n, t) for n, t in self._kept if n % self._step == 0]

    def __len__(self) -> int:
        """Frames taken so far."""
        return self._seen

    def chosen(self) -> list[tuple[int, float, bool]]:
        """The frames the sheet shows, in video order: (index, PSNR dB, is the worst)."""
        return [(t.index, t.psnr_db, t is self._worst) for t in self._chosen_tiles()]

    def image(self) -> np.ndarray:
        """The sheet: frames on top, the avatar below, one column per chosen frame. [2h, W, 3] uint8 RGB

        Raises:
            ValueError: no frame was added.
        """
        tiles = self._chosen_tiles()
        if not tiles:
            raise ValueError("no frame to show")
        top, bottom = [], []
        for t in tiles:
            frame = t.frame.copy()
            avatar = t.avatar
            label = f"frame {t.index}: " + (f"{t.psnr_db:.1f} dB" if math.isfinite(t.psnr_db) else "no score")
            worst = t is self._worst and len(tiles) > 1
            _label(frame, label, WORST_RGB if worst else LABEL_RGB)
            if worst:  # a red frame round both tiles
                avatar = avatar.copy()
                for tile, sides in ((frame, slice(0, 3)), (avatar, slice(-3, None))):
                    tile[sides] = WORST_RGB
                    tile[:, :3] = tile[:, -3:] = WORST_RGB
            top.append(frame)
            bottom.append(avatar)
        return np.concatenate([np.concatenate(top, 1), np.concatenate(bottom, 1)], 0)

    def _chosen_tiles(self) -> list[_Tile]:
        tiles = [t for _, t in self._kept]
        if self._last is not None and (not tiles or tiles[-1] is not self._last):
            tiles.append(self._last)
        if len(tiles) > self.columns:  # evenly over what is kept, first and last included
            picks = np.unique(np.round(np.linspace(0, len(tiles) - 1, self.columns)).astype(int))
            tiles = [tiles[i] for i in picks]
        worst = self._worst
        if worst is not None and all(t is not worst for t in tiles):
            if len(tiles) < self.columns:
                tiles.append(worst)
            else:  # in place of the nearest evenly spaced frame, the first and last kept if possible
                inner = range(1, len(tiles) - 1) if len(tiles) > 2 else range(len(tiles))
                tiles[min(inner, key=lambda i: abs(tiles[i].index - worst.index))] = worst
        return sorted(tiles, key=lambda t: t.index)

    def _tile(self, f: ScoredFrame, psnr_db: float) -> _Tile:
        import cv2

        rows, cols = slice(None), slice(None)
        if f.valid is not None and f.valid.any():  # leave out the crop's padding
            ys, xs = np.nonzero(f.valid.any(1))[0], np.nonzero(f.valid.any(0))[0]
            rows, cols = slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)
        image, render, alpha = f.image[rows, cols], f.render[rows, cols], f.alpha[rows, cols]
        h, w = image.shape[:2]
        size = (max(1, round(w * self.height / h)), self.height)
        frame = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        avatar = np.clip(render + (1.0 - alpha[..., None]), 0.0, 1.0)  # the render's colour is premultiplied
        avatar = cv2.resize(avatar.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        avatar = (avatar * 255 + 0.5).astype(np.uint8)
        mask = cv2.resize(f.mask[rows, cols].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(avatar, contours, -1, MASK_LINE_RGB, 1)
        return _Tile(index=f.index, psnr_db=psnr_db, frame=frame, avatar=avatar)


def _label(img: np.ndarray, text: str, rgb: tuple[int, int, int]) -> None:
    """Write ``text`` at the tile's top left on a dark box, scaled to the tile's height."""
    import cv2

    (w1, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    scale = max(0.25, min(img.shape[0] / 600, (img.shape[1] - 8) / w1))
    thick = 1 if scale < 0.8 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(img, (0, 0), (min(img.shape[1], tw + 8), th + base + 8), (0, 0, 0), -1)
    cv2.putText(img, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, thick, cv2.LINE_AA)
