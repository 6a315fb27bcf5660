"""Camera construction: OpenCV axes, look-at orientation, framing."""

import pytest
import torch

from streamer.errors import InputError
from streamer.render import Camera


def project(cam: Camera, p) -> torch.Tensor:
    x = cam.viewmat @ torch.tensor([*p, 1.0])
    uv = cam.K @ x[:3]
    return uv[:2] / uv[2]


def test_look_at_front_view_orientation():
    # Camera on +Z looking at the origin: the body's left (+X) is image right, +Y is image up.
    cam = Camera.look_at((0, 0, 3), (0, 0, 0), 200, 100, fov_y_deg=40)
    centre = project(cam, (0, 0, 0))
    torch.testing.assert_close(centre, torch.tensor([100.0, 50.0]))
    assert project(cam, (0.5, 0, 0))[0] > 100  # +X -> right
    assert project(cam, (0, 0.5, 0))[1] < 50  # +Y -> up (smaller row)
    assert float((cam.viewmat @ torch.tensor([0, 0, 0, 1.0]))[2]) == pytest.approx(3.0)  # z forward


def test_framing_keeps_points_inside():
    pts = torch.tensor([[-0.9, -1.3, -0.2], [0.9, 0.45, 0.3], [0.0, 0.0, 0.0]])
    for az in (0, 90, 200):
        cam = Camera.framing(pts, 256, 128, azimuth_deg=az)
        for p in pts:
            u, v = project(cam, p.tolist())
            assert 0 <= u <= 256 and 0 <= v <= 128


def test_framing_a_wide_subject_in_a_portrait_picture():
    pts = torch.tensor([[-1.0, -0.2, 0.0], [1.0, 0.2, 0.0]])  # arms spread: wider than tall
    cam = Camera.framing(pts, 128, 256)
    for p in pts:
        u, v = project(cam, p.tolist())
        assert 0 <= u <= 128 and 0 <= v <= 256


def test_bad_cameras():
    with pytest.raises(InputError, match="NaN or infinite"):
        K = torch.tensor([[float("nan"), 0, 2], [0, 1, 2], [0, 0, 1]])
        Camera(K=K, viewmat=torch.eye(4), width=4, height=4)
    with pytest.raises(InputError, match="NaN or infinite"):
        Camera.look_at((0, 0, float("inf")), (0, 0, 0), 8, 8)
    with pytest.raises(InputError, match=r"Camera.K: expected shape \(3, 3\)"):
        Camera(K=torch.eye(2), viewmat=torch.eye(4), width=4, height=4)
    with pytest.raises(InputError, match="image size must be positive"):
        Camera(K=torch.eye(3), viewmat=torch.eye(4), width=0, height=4)
    with pytest.raises(InputError, match="eye and target coincide"):
        Camera.look_at((1, 1, 1), (1, 1, 1), 8, 8)
