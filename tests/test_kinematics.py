"""Depth-batched forward kinematics equals smplx's joint-by-joint chain."""

import pytest
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues

from streamer.body.joints import PARENTS
from streamer.body.kinematics import depth_levels, forward_kinematics


@pytest.mark.parametrize("batch", [(), (3,)])
def test_matches_smplx(batch):
    g = torch.Generator().manual_seed(0)
    rot = batch_rodrigues(torch.randn(batch + (55, 3), generator=g).reshape(-1, 3)).reshape(batch + (55, 3, 3))
    rest = torch.randn(batch + (55, 3), generator=g)
    A, joints = forward_kinematics(rot, rest, PARENTS)
    flat_rot, flat_rest = rot.reshape(-1, 55, 3, 3), rest.reshape(-1, 55, 3)
    ref_joints, ref_A = batch_rigid_transform(flat_rot, flat_rest, torch.tensor(PARENTS))
    torch.testing.assert_close(A.reshape(-1, 55, 4, 4), ref_A, rtol=0, atol=1e-5)
    torch.testing.assert_close(joints.reshape(-1, 55, 3), ref_joints, rtol=0, atol=1e-5)


def test_levels_cover_every_joint_once_and_reject_bad_order():
    levels = depth_levels(PARENTS)
    seen = sorted(j for joints, _ in levels for j in joints)
    assert seen == list(range(1, 55)) and len(levels) == 10  # spine1 (depth 1) .. third finger joints (depth 10)
    with pytest.raises(ValueError, match="topologically ordered"):
        depth_levels((-1, 2, 0))


def test_gradients_flow():
    rot = torch.eye(3).repeat(55, 1, 1).requires_grad_()
    rest = torch.randn(55, 3)
    _, joints = forward_kinematics(rot, rest, PARENTS)
    joints[20].sum().backward()
    assert rot.grad is not None and float(rot.grad[16].abs().sum()) > 0  # shoulder moves the wrist
    assert float(rot.grad[17].abs().sum()) == 0  # the other shoulder does not


def test_gradients_flow_after_a_first_call_in_inference_mode():
    """The cached index tensors must not be inference tensors (the stream calls FK in inference mode)."""
    from streamer.body import kinematics

    kinematics.level_index.cache_clear()
    kinematics._parent_index.cache_clear()
    with torch.inference_mode():
        forward_kinematics(torch.eye(3).repeat(55, 1, 1), torch.randn(55, 3), PARENTS)
    test_gradients_flow()


def test_batch_shapes_of_rotations_and_rest_joints_broadcast():
    g = torch.Generator().manual_seed(1)
    rot = batch_rodrigues(torch.randn(2 * 55, 3, generator=g)).reshape(2, 1, 55, 3, 3)
    rest = torch.randn(3, 55, 3, generator=g)
    A, joints = forward_kinematics(rot, rest, PARENTS)
    assert A.shape == (2, 3, 55, 4, 4) and joints.shape == (2, 3, 55, 3)
    A_one, _ = forward_kinematics(rot[1, 0], rest[2], PARENTS)
    torch.testing.assert_close(A[1, 2], A_one)


def test_does_not_import_sympy():
    """torch.broadcast_shapes imported sympy on its first call: 0.3-0.6 s of every command's start."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from streamer.body.kinematics import forward_kinematics\n"
        "forward_kinematics(torch.eye(3).repeat(2, 55, 1, 1), torch.zeros(55, 3), [-1] + list(range(54)))\n"
        "print('sympy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
