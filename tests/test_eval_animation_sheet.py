"""The contact sheet of ``eval animate``: which frames it shows, in bounded memory, and what it draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.reconstruct.animation_sheet import MASK_LINE_RGB, WORST_RGB, AnimationSheet, ScoredFrame

H, W = 40, 24  # frame size of the synthetic frames; tiles are drawn at the sheet's height


def frame(index: int, psnr_db: float, valid: np.ndarray | None = None) -> ScoredFrame:
    """A frame whose picture is one grey level coding its index, the avatar a square inside the mask."""
    image = np.full((H, W, 3), index % 256, np.uint8)
    render = np.zeros((H, W, 3))
    alpha = np.zeros((H, W))
    mask = np.zeros((H, W), bool)
    mask[10:30, 6:18] = True
    render[mask] = 0.5
    alpha[mask] = 1.0
    render[4:6, 6:18], alpha[4:6, 6:18] = 0.25, 0.5  # a soft edge: colour 0.5 at alpha 0.5, premultiplied
    return ScoredFrame(index, image, render, alpha, mask, {"psnr_db": psnr_db}, valid)


def test_evenly_spaced_frames_and_the_worst_in_bounded_memory() -> None:
    sheet = AnimationSheet(columns=6, height=80)
    held = []
    for i in range(1, 1001):
        sheet.add(frame(i, 5.0 if i == 377 else 20.0 + (i % 7)))
        held.append(len(sheet._kept))
    assert len(sheet) == 1000 and max(held) <= 12  # never more than twice the columns
    chosen = sheet.chosen()
    assert len(chosen) == 6
    assert (377, 5.0, True) in chosen and sum(worst for *_, worst in chosen) == 1
    shown = [i for i, _, _ in chosen]
    assert shown[0] == 1 and shown[-1] == 1000  # from the video's start to its end
    assert max(np.diff(shown)) <= 300, shown  # spread over it, not bunched at the start (even: 200)
    img = sheet.image()
    tile_w = round(W * 80 / H)
    assert img.shape == (160, 6 * tile_w, 3) and img.dtype == np.uint8
    # Each column shows its own frame: the frame's grey level below the label; the worst is framed in red.
    for col, (index, _, worst) in enumerate(chosen):
        assert img[70, col * tile_w + tile_w // 2].tolist() == [index % 256] * 3
        edge = img[:, col * tile_w]
        assert np.all(edge == WORST_RGB, axis=1).all() == worst
        assert np.all(img[-1, col * tile_w : (col + 1) * tile_w] == WORST_RGB, axis=1).all() == worst


def test_the_worst_replaces_a_better_one_and_unscored_frames_are_never_worst() -> None:
    sheet = AnimationSheet(columns=3, height=40)
    for i, p in enumerate([18.0, math.nan, 12.0, 15.0, math.inf], start=1):
        sheet.add(frame(i, p))
    assert [(i, w) for i, _, w in sheet.chosen() if w] == [(3, True)]
    lone = AnimationSheet(columns=3, height=40)
    lone.add(frame(1, math.nan))
    lone.add(frame(2, 30.0))
    assert [i for i, _, w in lone.chosen() if w] == [2]
    unscored = AnimationSheet(columns=3, height=40)
    for i in range(1, 5):
        unscored.add(frame(i, math.nan))
    assert [w for *_, w in unscored.chosen()] == [False] * 3  # no red frame when nothing was scored
    assert not np.all(unscored.image() == WORST_RGB, axis=2).any()


@pytest.mark.parametrize("count", [2, 5, 7, 13, 24, 38, 100, 301])
@pytest.mark.parametrize("columns", [2, 3, 6])
def test_first_last_and_worst_are_shown_the_rest_spread_evenly(count: int, columns: int) -> None:
    for worst in sorted({1, count // 2, count}):
        sheet = AnimationSheet(columns=columns, height=40)
        for i in range(1, count + 1):
            sheet.add(frame(i, 10.0 if i == worst else 20.0))
        shown = [i for i, _, _ in sheet.chosen()]
        assert len(shown) == min(columns, count) and worst in shown, (shown, worst)
        assert shown[0] == 1 or worst == 1 or columns == 2, shown
        assert shown[-1] == count or columns == 2, shown
        if count >= 2 * columns:  # a gap at most twice the even one (halving keeps every step-th)
            assert max(np.diff(shown)) <= 2.5 * count / (columns - 1), (shown, worst)


def test_the_avatar_is_drawn_on_white_inside_the_masks_outline() -> None:
    sheet = AnimationSheet(columns=2, height=H)
    sheet.add(frame(1, 20.0))
    img = sheet.image()
    avatar = img[H:]  # the second row
    assert avatar[2, 2].tolist() == [255, 255, 255]  # outside the avatar: white
    assert avatar[20, 12].tolist() == [128, 128, 128]  # the avatar's own colour
    assert avatar[5, 12].tolist() == [191, 191, 191]  # the soft edge over white: 0.25 + 0.5, not darker
    line = np.all(avatar == MASK_LINE_RGB, axis=2)
    assert line[10, 6:18].all() and line[29, 6:18].all() and line[10:30, 6].all()  # the mask's outline
    assert not line[12:28, 8:16].any()


def test_the_crops_padding_is_left_out() -> None:
    valid = np.zeros((H, W), bool)
    valid[8:32] = True  # a landscape video padded above and below to the 5:3 crop
    sheet = AnimationSheet(columns=2, height=48)
    sheet.add(frame(1, 20.0, valid))
    img = sheet.image()
    assert img.shape == (96, round(W * 48 / 24), 3)  # 24 rows of the 40 shown, scaled to 48


@pytest.mark.parametrize("columns, height", [(1, 100), (4, 8)])
def test_bad_layout_is_refused(columns: int, height: int) -> None:
    with pytest.raises(ValueError):
        AnimationSheet(columns=columns, height=height)


def test_an_empty_sheet_says_so() -> None:
    with pytest.raises(ValueError, match="no frame"):
        AnimationSheet().image()
