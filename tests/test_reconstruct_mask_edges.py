"""Snapping the person mask to the photo's colour edges (.mask_edges)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

JEANS = (40, 60, 120)
WOOD = (100, 55, 30)


def _scene(left: tuple[int, int, int], right: tuple[int, int, int], edge_x: int = 40, bleed_px: float = 4.0):
    """A person (``left`` colour, columns < edge_x) against a background, and a soft mask whose 0.5
    contour lies ``bleed_px`` out into the background, as MediaPipe's often does."""
    rng = np.random.default_rng(0)
    rgb = np.zeros((60, 100, 3), np.float64)
    rgb[:, :edge_x] = left
    rgb[:, edge_x:] = right
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    x = np.arange(100, dtype=np.float32)
    soft = np.clip(0.5 - (x - (edge_x + bleed_px)) / 8.0, 0.0, 1.0)
    return rgb, np.tile(soft, (60, 1))


def test_the_contour_moves_onto_the_colour_edge() -> None:
    from streamer.reconstruct.mask_edges import snap_to_edges

    rgb, soft = _scene(JEANS, WOOD)
    assert ((soft > 0.5).sum(1) == 44).all()  # MediaPipe's contour: 4 px of wood count as person
    snapped = snap_to_edges(rgb, soft)
    np.testing.assert_array_equal((snapped > 0.5).sum(1), np.full(60, 40))
    assert snapped.dtype == np.float32 and snapped.shape == soft.shape
    # far from the edge nothing changes
    np.testing.assert_array_equal(snapped[:, :30], soft[:, :30])
    np.testing.assert_array_equal(snapped[:, 60:], soft[:, 60:])
    # the same the other way round: a contour 3 px short of the edge grows to it
    rgb, soft = _scene(JEANS, WOOD, bleed_px=-3.0)
    np.testing.assert_array_equal((snap_to_edges(rgb, soft) > 0.5).sum(1), np.full(60, 40))


def test_alike_colours_keep_mediapipes_contour() -> None:
    """A white shirt on a white wall: the colours cannot tell, MediaPipe's value stays."""
    from streamer.reconstruct.mask_edges import snap_to_edges

    rgb, soft = _scene((235, 235, 235), (238, 238, 236), bleed_px=4.5)  # no pixel right at 0.5
    snapped = snap_to_edges(rgb, soft)
    np.testing.assert_allclose(snapped, soft, atol=0.05)
    np.testing.assert_array_equal(snapped > 0.5, soft > 0.5)
    np.testing.assert_array_equal(snap_to_edges(rgb, soft, radius_px=0), soft)


def test_a_hole_of_background_inside_the_person_is_cut_out() -> None:
    """The wall seen between a flared sleeve and the skirt: MediaPipe gives it 0.6 (person), and no
    confident background pixel lies within the colour window; the background's colour then comes from
    a wider window, and the hole is background. Person pixels of the same rows stay person."""
    from streamer.reconstruct.mask_edges import SNAP_RADIUS_PX, snap_to_edges

    wall = (236, 238, 244)
    rgb = np.zeros((80, 160, 3), np.uint8)
    rgb[:] = wall
    rgb[10:70, 20:140] = JEANS  # the person, 120 px wide
    rgb[30:50, 70:76] = wall  # a hole 6 px wide, 50 px from the person's edge
    soft = np.zeros((80, 160), np.float32)
    soft[10:70, 20:140] = 1.0
    soft[28:52, 68:78] = 0.6  # uncertain round the hole, but above 0.5
    assert 70 - 20 > 2 * SNAP_RADIUS_PX + 2  # no confident background in the hole's window
    snapped = snap_to_edges(rgb, soft)
    assert (snapped[30:50, 70:76] < 0.5).all()
    assert (snapped[28:52, 68:70] > 0.5).all() and (snapped[28:52, 76:78] > 0.5).all()
    np.testing.assert_array_equal(snapped[:, :60], soft[:, :60])


def test_an_uncertain_spot_with_no_background_anywhere_near_keeps_mediapipes_value() -> None:
    """A dark pocket deep inside a large person: not even the wide window holds a confident
    background pixel, so there is no background colour to compare with (it must not count as black)."""
    from streamer.reconstruct.mask_edges import SNAP_RADIUS_PX, WIDE_FACTOR, snap_to_edges

    size = 2 * WIDE_FACTOR * SNAP_RADIUS_PX + 60
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:] = JEANS
    c = size // 2
    rgb[c - 4 : c + 4, c - 4 : c + 4] = (10, 10, 12)  # the dark pocket
    soft = np.ones((size, size), np.float32)
    soft[c - 5 : c + 5, c - 5 : c + 5] = 0.6
    np.testing.assert_array_equal(snap_to_edges(rgb, soft), soft)


def test_refuses_a_mask_of_another_size() -> None:
    from streamer.reconstruct.mask_edges import snap_to_edges

    rgb, soft = _scene(JEANS, WOOD)
    with pytest.raises(ValueError, match="differ in size"):
        snap_to_edges(rgb, soft[:, :50])


@pytest.mark.skipif(not (SHARED_DATA / "photos").exists(), reason="shared photos not found beside the repository")
def test_on_a_photo_the_pixels_taken_out_are_wall() -> None:
    """woman_hat_bag: dark clothes and bare legs against a white wall. MediaPipe's mask reaches onto
    the wall around her; the pixels the snap takes out are mostly wall (bright and grey), and it
    takes out more than it adds."""
    from streamer.reconstruct.image import read_photo
    from streamer.reconstruct.mask_edges import snap_to_edges
    from streamer.tracking.mediapipe_runner import MediaPipeRunner

    rgb = read_photo(SHARED_DATA / "photos" / "woman_hat_bag.png")
    with MediaPipeRunner(models="pose", video=False, segmentation=True) as runner:
        soft = runner.process(rgb, 0.0).segmentation
    assert soft is not None
    raw, snapped = soft > 0.5, snap_to_edges(rgb, soft) > 0.5
    removed, added = raw & ~snapped, snapped & ~raw
    assert removed.sum() > 2 * added.sum() and removed.sum() > 200
    px = rgb[removed].astype(int)
    wall = (px.min(1) > 170) & (px.max(1) - px.min(1) < 40)
    assert wall.mean() > 0.6


@pytest.mark.skipif(not (SHARED_DATA / "photos").exists(), reason="shared photos not found beside the repository")
def test_the_reconstruction_uses_the_snapped_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.reconstruct import person as person_module
    from streamer.reconstruct.image import read_photo

    calls = []

    def spy(rgb: np.ndarray, soft: np.ndarray) -> np.ndarray:
        out = person_module_snap(rgb, soft)
        calls.append((soft, out))
        return out

    person_module_snap = person_module.snap_to_edges
    monkeypatch.setattr(person_module, "snap_to_edges", spy)
    person = person_module.find_person(read_photo(SHARED_DATA / "photos" / "woman_hat_bag.png"))
    assert len(calls) == 1
    raw, snapped = calls[0]
    assert person.mask is snapped and not np.array_equal(raw > 0.5, snapped > 0.5)
