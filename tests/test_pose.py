import numpy as np
import pytest
import torch

from streamer.body import SmplxPose
from streamer.errors import PoseError


def test_zeros_shapes_single_and_batched():
    p = SmplxPose.zeros()
    assert p.batch_shape == ()
    assert p.body_pose.shape == (21, 3) and p.left_hand_pose.shape == (15, 3)
    assert p.full_pose().shape == (55, 3)
    b = SmplxPose.zeros(batch=4, num_betas=16)
    assert b.batch_shape == (4,) and len(b) == 4 and b.betas.shape == (4, 16)
    assert b.full_pose().shape == (4, 55, 3)
    assert b[2].batch_shape == () and len(b[1:3]) == 2


def test_full_pose_order_matches_smplx():
    p = SmplxPose.zeros().replace(
        global_orient=torch.tensor([1.0, 0, 0]),
        jaw_pose=torch.tensor([2.0, 0, 0]),
        left_hand_pose=torch.full((15, 3), 3.0),
        right_hand_pose=torch.full((15, 3), 4.0),
    )
    fp = p.full_pose()
    assert fp[0, 0] == 1 and fp[22, 0] == 2  # SMPL-X: root, 21 body, jaw, eyes, hands
    assert (fp[25:40] == 3).all() and (fp[40:55] == 4).all()


def test_dict_round_trip_and_stack():
    p = SmplxPose.zeros(batch=3).replace(body_pose=torch.randn(3, 21, 3))
    q = SmplxPose.from_dict(p.to_dict(), fill_missing=False)
    assert torch.equal(q.body_pose, p.body_pose)
    s = SmplxPose.stack([p[0], p[1]])
    assert torch.equal(s.body_pose, p.body_pose[:2])


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("body_pose", torch.zeros(20, 3), "SmplxPose.body_pose: expected shape (21, 3), got (20, 3)"),
        ("global_orient", torch.tensor([0.0, float("nan"), 0.0]), "SmplxPose.global_orient: contains NaN"),
        ("transl", torch.zeros(2, 3), "SmplxPose.transl: expected shape (3,), got (2, 3)"),
    ],
)
def test_bad_pose_names_the_problem(field, value, message):
    with pytest.raises(PoseError) as err:
        SmplxPose.zeros().replace(**{field: value})
    assert message in str(err.value)


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(PoseError, match="unknown SMPL-X pose keys: bogus"):
        SmplxPose.from_dict({"bogus": np.zeros(3)})
    with pytest.raises(PoseError, match="missing SMPL-X pose keys"):
        SmplxPose.from_dict({"global_orient": np.zeros(3)}, fill_missing=False)
    filled = SmplxPose.from_dict({"global_orient": np.zeros((5, 3))})
    assert filled.batch_shape == (5,) and filled.betas.shape == (5, 10)
