"""The One Euro filter on its own: smoothing at rest, following fast moves, quaternion signs."""

import numpy as np
import pytest

from streamer.tracking.filters import OneEuroFilter


def test_smooths_jitter_at_rest_and_follows_a_fast_move() -> None:
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    noisy = 0.01 * rng.standard_normal((60, 1, 3))
    out = np.stack([f(x, 1 / 30) for x in noisy])
    assert out[10:].std() < 0.5 * noisy[10:].std()  # jitter at rest is damped
    f.reset()
    path = np.linspace(0.0, 2.0, 31)[:, None, None] * np.ones((1, 1, 3))  # 2 units in 1 s
    lag = [2.0 - f(x, 1 / 30)[0, 0] for x in path][-1]
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    lag_without_speed = [2.0 - slow(x, 1 / 30)[0, 0] for x in path][-1]
    assert lag < 0.5 * lag_without_speed  # speed raises the cut-off: less lag when moving fast


def test_quaternion_sign_flips_are_the_same_rotation() -> None:
    rng = np.random.default_rng(1)
    q = np.array([0.9, 0.1, -0.3, 0.3]) + 0.02 * rng.standard_normal((40, 4))  # a jittery rotation
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    signs = rng.choice([-1.0, 1.0], size=(40, 1))  # -q is the same rotation, as a tracker may report it
    plain = OneEuroFilter(min_cutoff=1.0, beta=0.5, quaternion=True)
    flipped = OneEuroFilter(min_cutoff=1.0, beta=0.5, quaternion=True)
    for x, s in zip(q, signs):
        a, b = plain(x[None], 1 / 30), flipped(s * x[None], 1 / 30)
        assert np.linalg.norm(b) == pytest.approx(1.0)
        assert abs(float(np.sum(a * b))) == pytest.approx(1.0, abs=1e-9)  # the same filtered rotation


def test_reset_and_a_bad_time_step_pass_the_sample_through() -> None:
    f = OneEuroFilter()
    f(np.zeros((1, 2)), 1 / 30)
    assert np.array_equal(f(np.ones((1, 2)), 0.0), np.ones((1, 2)))
    f.reset()
    assert np.array_equal(f(np.full((1, 2), 5.0), 1 / 30), np.full((1, 2), 5.0))
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroFilter(min_cutoff=0.0)
