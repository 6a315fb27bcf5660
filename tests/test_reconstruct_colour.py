"""Colours of unseen Gaussians (.colour)."""

from __future__ import annotations

import numpy as np


def test_unseen_back_takes_the_front_at_the_same_place() -> None:
    """The fill measures nearness in the photo's image plane: a torso Gaussian behind the body takes
    the colour of the seen ones in front of it, not of seen ones nearer in canonical 3D."""
    from streamer.reconstruct.colour import fill_positions, fill_unseen

    rng = np.random.default_rng(0)
    red = np.column_stack([rng.normal(100, 1, 8), rng.normal(200, 1, 8)])  # pixels of the seen front
    blue = np.column_stack([rng.normal(300, 1, 8), rng.normal(200, 1, 8)])
    pix = np.concatenate([red, blue, [[100.0, 200.0]]])
    depth = np.full(17, 2.0)
    canon = np.zeros((17, 3))
    canon[:8] = [0.0, 0.0, 1.0]  # far in 3D from the back point ...
    canon[8:16] = [0.0, 0.0, -0.3]  # ... which is near these
    canon[16] = [0.0, 0.0, -0.35]
    colors = np.zeros((17, 3))
    colors[:8] = [1.0, 0.0, 0.0]
    colors[8:16] = [0.0, 0.0, 1.0]
    seen = np.arange(17) < 16
    parts = np.zeros(17, int)
    none = np.zeros(17, bool)
    filled = fill_unseen(fill_positions(canon, pix, depth, 500.0, parts), colors, seen, parts, none, none)
    np.testing.assert_allclose(filled[16], [1.0, 0.0, 0.0], atol=0.02)
    assert fill_unseen(canon, colors, seen, parts, none, none)[16, 2] > 0.9  # canonical 3D: blue
    # head Gaussians keep their canonical positions
    head = np.ones(17, int)
    np.testing.assert_array_equal(fill_positions(canon, pix, depth, 500.0, head), canon)


def test_a_part_never_seen_fills_from_the_body_not_the_head() -> None:
    """Legs of a half-body photo: no leg Gaussian is seen; they borrow from the seen body, never from
    the head, whose positions (canonical) live in another space than the body's (image plane)."""
    from streamer.reconstruct.colour import fill_unseen

    positions = np.zeros((17, 3))
    positions[:8] = [0.0, 1.0, 0.0]  # head, seen, and (by accident of the spaces) nearest the leg
    positions[8:16] = [0.0, 0.5, 0.0]  # torso, seen
    positions[16] = [0.0, 1.05, 0.0]  # a lower leg, unseen
    parts = np.array([1] * 8 + [0] * 8 + [4])
    colors = np.zeros((17, 3))
    colors[:8] = [0.1, 0.1, 0.1]  # hair
    colors[8:16] = [0.2, 0.3, 0.9]  # shirt
    seen = np.arange(17) < 16
    none = np.zeros(17, bool)
    filled = fill_unseen(positions, colors, seen, parts, none, none)
    np.testing.assert_allclose(filled[16], [0.2, 0.3, 0.9], atol=1e-6)


def test_the_back_of_the_head_takes_the_commoner_colour_of_its_top_not_a_blend() -> None:
    """The seen top of a head: dark hair (55%) and a lit forehead (45%). The unseen back takes the
    hair's colour; the per-channel median (a tan between the two) would read as bald skin."""
    from streamer.reconstruct.colour import dominant_colour, fill_unseen

    rng = np.random.default_rng(0)
    hair = rng.uniform(0.1, 0.5, (55, 1)) * [1.0, 0.9, 0.8]
    forehead = rng.uniform(0.7, 0.9, (45, 1)) * [1.0, 0.85, 0.75]
    top = np.concatenate([hair, forehead])
    assert float(np.median(top, axis=0)[0]) > 0.45  # the blend the median gives
    np.testing.assert_allclose(dominant_colour(top), np.median(hair, axis=0), atol=1e-9)
    np.testing.assert_allclose(dominant_colour(top[::-1]), np.median(hair, axis=0), atol=1e-9)  # order-free
    np.testing.assert_allclose(dominant_colour(np.tile([[0.3, 0.2, 0.1]], (7, 1))), [0.3, 0.2, 0.1])
    # in the fill: 100 seen top Gaussians, 20 unseen ones on the back of the head
    n = len(top)
    positions = np.concatenate([rng.normal(0, 0.05, (n, 3)), rng.normal(0, 0.05, (20, 3)) + [0, 0, -0.1]])
    colors = np.concatenate([top, np.zeros((20, 3))])
    seen = np.arange(n + 20) < n
    parts = np.ones(n + 20, int)
    filled = fill_unseen(positions, colors, seen, parts, ~seen, seen)
    np.testing.assert_allclose(filled[n:], np.tile(np.median(hair, axis=0), (20, 1)), atol=1e-9)


def test_fill_sources_leave_out_the_hip_behind_a_hand() -> None:
    """A hand resting on the hip: the hip Gaussians at the hand's pixels pass the visibility test
    (they are only just behind it) but must not colour the unseen back; hip Gaussians beside the
    hand, the hand itself, and a hip Gaussian in front of a hand still do."""
    from streamer.reconstruct.colour import fill_sources

    hand = np.array([[50.0 + dx, 60.0 + dy] for dx in range(4) for dy in range(4)])  # arm part
    hip_behind = hand + 0.2  # torso, same pixels, 1 cm behind
    hip_beside = hand + [5.0, 0.0]  # torso, pixels of its own next to the hand
    pix = np.concatenate([hand, hip_behind, hip_beside])
    depth = np.concatenate([np.full(16, 2.0), np.full(16, 2.01), np.full(16, 2.0)])
    parts = np.array([2] * 16 + [0] * 32)
    seen = np.ones(48, bool)
    seen[-1] = False  # an unseen one stays out whatever its place
    ok = fill_sources(pix, depth, parts, seen, (120, 120))
    assert ok[:16].all()  # the hand
    assert not ok[16:32].any()  # the hip behind it
    assert ok[32:47].all() and not ok[47]  # the hip beside it (its last one unseen)
    # the other way round (the hip in front), the hand is the one left out
    ok = fill_sources(pix, depth[[*range(16, 32), *range(16), *range(32, 48)]], parts, seen, (120, 120))
    assert not ok[:16].any() and ok[16:32].all()


def test_fill_sources_leave_out_the_outline() -> None:
    """Seen Gaussians on the photo's outline pixels (a blend of the person and the wall) colour no
    unseen one; those inside it still do."""
    from streamer.reconstruct.colour import fill_sources

    pix = np.array([[x + 0.5, 50.5] for x in range(20, 40)])
    depth, parts, seen = np.full(20, 2.0), np.zeros(20, int), np.ones(20, bool)
    blended = np.zeros((100, 100), bool)
    blended[:, 34:] = True  # the outline: the last 6 columns
    assert fill_sources(pix, depth, parts, seen, (100, 100)).all()
    ok = fill_sources(pix, depth, parts, seen, (100, 100), blended=blended)
    assert ok[:14].all() and not ok[14:].any()
