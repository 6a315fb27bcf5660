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
