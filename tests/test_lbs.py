"""Linear blend skinning of Gaussians against smplx's own vertices."""

import math

import pytest
import torch
from conftest import random_pose
from smplx.lbs import batch_rodrigues

from streamer.avatar import Avatar, Gaussians
from streamer.avatar.avatar import skinning_transforms
from streamer.avatar.lbs import matrix_to_quat, quat_multiply, skin_gaussians, unskin_gaussians
from streamer.body import BodyModel, SmplxPose
from streamer.errors import PoseError


def _vertex_avatar(body: BodyModel, betas: torch.Tensor) -> Avatar:
    """One Gaussian exactly on each shaped rest vertex, with that vertex's skinning weights."""
    n = body.num_vertices
    g = torch.Generator().manual_seed(1)
    q = torch.randn(n, 4, generator=g)
    gs = Gaussians(
        means=body.shaped_vertices(betas).contiguous(),
        quats=q / q.norm(dim=1, keepdim=True),
        scales=torch.full((n, 3), 0.01),
        opacities=torch.ones(n),
        colors=torch.rand(n, 3, generator=g),
    )
    return Avatar(gs, body.lbs_weights.clone(), betas)


@pytest.fixture(scope="module")
def body_no_correctives():
    body = BodyModel.load()
    body.layer.posedirs.zero_()  # compare skinning alone
    return body


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussians_on_vertices_land_on_smplx_vertices(body_no_correctives, seed):
    body = body_no_correctives
    pose = random_pose(seed)
    avatar = _vertex_avatar(body, pose.betas)
    verts, _ = body.forward(pose)
    posed = avatar.pose(body, pose)
    # float32 chains of 4x4 products differ only in rounding order: 1e-5 m = 0.01 mm.
    torch.testing.assert_close(posed.means, verts, rtol=0, atol=1e-5)


def test_batched_equals_per_frame(body_no_correctives):
    body = body_no_correctives
    poses = random_pose(7, batch=4)
    avatar = _vertex_avatar(body, torch.zeros(10))
    batched = avatar.pose(body, poses)
    assert isinstance(batched, list) and len(batched) == 4
    for i in range(4):
        single = avatar.pose(body, poses[i])
        torch.testing.assert_close(batched[i].means, single.means, rtol=0, atol=1e-6)
        torch.testing.assert_close(batched[i].quats, single.quats, rtol=0, atol=1e-6)


def test_rigid_part_rotates_with_its_joint(body):
    """A Gaussian weighted fully to one joint turns by that joint's world rotation."""
    n = 3
    w = torch.zeros(n, 55)
    w[:, 18] = 1.0  # left elbow
    q0 = torch.tensor([[1.0, 0, 0, 0], [0.0, 1, 0, 0], [math.cos(0.3), 0, math.sin(0.3), 0]])
    gs = Gaussians(means=torch.zeros(n, 3), quats=q0, scales=torch.full((n, 3), 0.01),
                   opacities=torch.ones(n), colors=torch.zeros(n, 3))
    avatar = Avatar(gs, w)
    pose = random_pose(3).replace(betas=torch.zeros(10))
    posed = avatar.pose(body, pose)
    chain = [18, 16, 13, 9, 6, 3, 0]  # elbow up to the root
    rot = torch.eye(3)
    full = batch_rodrigues(pose.full_pose())
    for j in reversed(chain):
        rot = rot @ full[j]
    expected = quat_multiply(matrix_to_quat(rot).expand(n, 4), q0)
    dots = (posed.quats * expected).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones(n), rtol=0, atol=1e-5)


def test_rest_pose_is_identity(demo_avatar, body):
    posed = demo_avatar.pose(body, SmplxPose.zeros())
    torch.testing.assert_close(posed.means, demo_avatar.gaussians.means, rtol=0, atol=1e-6)
    dots = (posed.quats * demo_avatar.gaussians.quats).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), rtol=0, atol=1e-5)


def test_translation_moves_everything(demo_avatar, body):
    t = torch.tensor([0.5, -0.2, 1.0])
    posed = demo_avatar.pose(body, SmplxPose.zeros().replace(transl=t))
    torch.testing.assert_close(posed.means, demo_avatar.gaussians.means + t, rtol=0, atol=1e-6)


def test_matrix_to_quat_round_trip():
    aa = torch.randn(100, 3)
    rot = batch_rodrigues(aa)
    q = matrix_to_quat(rot)
    w, v = q[:, :1], q[:, 1:]
    # Rodrigues from the quaternion: R = (w^2 - |v|^2) I + 2 v v^T + 2 w [v]x
    vx = torch.zeros(100, 3, 3)
    vx[:, 0, 1], vx[:, 0, 2], vx[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    vx = vx - vx.transpose(1, 2)
    back = (w**2 - (v * v).sum(1, keepdim=True))[..., None] * torch.eye(3) + 2 * v[:, :, None] * v[:, None, :] + 2 * w[..., None] * vx
    torch.testing.assert_close(back, rot, rtol=0, atol=1e-5)


def test_nan_written_into_pose_is_caught(demo_avatar, body):
    pose = SmplxPose.zeros()
    pose.body_pose[3, 1] = float("nan")
    with pytest.raises(PoseError, match="body_pose: contains NaN"):
        demo_avatar.pose(body, pose)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_lbs_equals_cpu(demo_avatar, body):
    pose = random_pose(5, batch=3)
    cpu = demo_avatar.pose_tensors(body, pose)
    on_gpu = demo_avatar.to("cuda"), body.to("cuda")
    # A pose on the GPU runs the torch twin there; a pose on the CPU (as the server keeps its live
    # poses) gets its joint transforms from the C++ kernel and is skinned on the GPU.
    for gpu_pose in (pose.to("cuda"), pose):
        means, quats = on_gpu[0].pose_tensors(on_gpu[1], gpu_pose)
        assert means.device.type == "cuda" and quats.device.type == "cuda"
        torch.testing.assert_close(means.cpu(), cpu[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(quats.cpu(), cpu[1], rtol=0, atol=1e-5)


def test_cpp_joint_transforms_equal_the_torch_twin(body, monkeypatch):
    """The C++ joint kernel (a CPU pose, no autograd) and the differentiable torch path agree."""
    from streamer.avatar import avatar as avatar_module
    from streamer.avatar.lbs import align_quat_signs

    kernel = avatar_module._lbs_cpu
    assert kernel is not None, "C++ skinning kernel not built (pip install -e .)"
    calls = []

    class Spy:  # the kernel, counting its calls: the comparison below must not be the twin with itself
        def joint_transforms(self, *args):
            calls.append(args[0].shape)
            return kernel.joint_transforms(*args)

    monkeypatch.setattr(avatar_module, "_lbs_cpu", Spy())
    rest = body.rest_joints(torch.randn(body.num_betas) * 0.5)
    for batch in (None, 5):
        pose = random_pose(21, scale=1.2, batch=batch)  # large angles: every quaternion branch
        pose = pose.replace(transl=torch.randn(pose.transl.shape))
        A, Q = skinning_transforms(body, pose, rest)
        assert not A.requires_grad
        ref_A, _ = body.joint_transforms(pose, rest_joints=rest)
        ref_Q = align_quat_signs(matrix_to_quat(ref_A[..., :3, :3]), body.parents)
        torch.testing.assert_close(A, ref_A, rtol=0, atol=2e-6)
        torch.testing.assert_close(Q, ref_Q, rtol=0, atol=2e-6)
    assert calls == [(1, 55, 3), (5, 55, 3)]
    # Batched rest joints, and a pose that needs gradients, go through the twin; gradients flow.
    A, _ = skinning_transforms(body, random_pose(23, batch=2), rest.expand(2, 55, 3))
    assert A.shape == (2, 55, 4, 4) and len(calls) == 2
    pose = random_pose(22)
    orient = pose.global_orient.clone().requires_grad_()
    A, Q = skinning_transforms(body, pose.replace(global_orient=orient), rest)
    (A.sum() + Q.sum()).backward()
    assert orient.grad is not None and bool(orient.grad.abs().sum() > 0)


def test_cpp_joint_kernel_refuses_a_bad_tree():
    import numpy as np

    from streamer.avatar import avatar as avatar_module

    kernel = avatar_module._lbs_cpu.joint_transforms
    aa, rest, transl = np.zeros((1, 3, 3), np.float32), np.zeros((3, 3), np.float32), np.zeros((1, 3), np.float32)
    out_A, out_Q = np.zeros((1, 3, 16), np.float32), np.zeros((1, 3, 4), np.float32)
    kernel(aa, rest, np.array([-1, 0, 1], np.int32), transl, out_A, out_Q)
    assert np.allclose(out_A[0, :, :].reshape(3, 4, 4), np.eye(4), atol=1e-6) and np.allclose(out_Q[0, :, 0], 1)
    with pytest.raises(ValueError, match="topologically ordered"):
        kernel(aa, rest, np.array([-1, 2, 0], np.int32), transl, out_A, out_Q)
    with pytest.raises(ValueError, match="rest must be"):
        kernel(aa, np.zeros((2, 3), np.float32), np.array([-1, 0, 1], np.int32), transl, out_A, out_Q)
    parents = np.array([-1, 0, 1], np.int32)
    # Outputs it would have written into a converted copy: another dtype, a strided view, Fortran order.
    for bad in (out_A.astype(np.float64), out_A.astype(np.float16), np.zeros((1, 3, 32), np.float32)[..., ::2]):
        with pytest.raises(TypeError):
            kernel(aa, rest, parents, transl, bad, out_Q)
    means, quats = np.zeros((2, 3), np.float32), np.tile(np.float32([1, 0, 0, 0]), (2, 1))
    skin_args = (means, quats, np.zeros((2, 1), np.int32), np.ones((2, 1), np.float32), np.zeros((3, 12), np.float32))
    out_q = np.zeros((2, 4), np.float32)
    joint_q = np.tile(np.float32([1, 0, 0, 0]), (3, 1))
    avatar_module._lbs_cpu.skin_sparse(*skin_args, joint_q, np.ones((2, 3), np.float32), out_q)
    assert np.array_equal(out_q, quats)  # the right arrays are taken (and written)
    for bad in (np.zeros((2, 3)), np.asfortranarray(np.zeros((2, 3), np.float32)), np.zeros((2, 6), np.float32)[:, ::2]):
        with pytest.raises(TypeError):
            avatar_module._lbs_cpu.skin_sparse(*skin_args, joint_q, bad, out_q)


def test_few_op_forms_equal_the_written_out_ones():
    """quat_multiply and the blended transform have a few-op form (for GPUs): the same function."""
    from streamer.avatar.lbs import _apply_blended

    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 50, 4, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(quat_multiply(a, b, few_ops=True), quat_multiply(a, b, few_ops=False), rtol=0, atol=1e-12)
    assert quat_multiply(a[0, 0], b[0], few_ops=True).shape == (4,)
    blended, points = torch.randn(2, 50, 3, 4, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_apply_blended(blended, points, True), _apply_blended(blended, points, False), rtol=0, atol=1e-12)


def test_cpu_kernel_equals_torch_twin(demo_avatar, body):
    """The C++ sparse kernel (CPU fast path) and the dense torch implementation agree."""
    from streamer.avatar import avatar as avatar_module
    from streamer.avatar.avatar import skinning_transforms
    from streamer.avatar.lbs import skin_gaussians

    assert avatar_module._lbs_cpu is not None, "C++ skinning kernel not built (pip install -e .)"
    poses = random_pose(11, batch=2)
    fast_means, fast_quats = demo_avatar.pose_tensors(body, poses)
    A, Q = skinning_transforms(body, poses, demo_avatar.rest_joints(body))
    g = demo_avatar.gaussians
    ref_means, ref_quats = skin_gaussians(g.means, g.quats, demo_avatar.skin_weights, A, Q)
    torch.testing.assert_close(fast_means, ref_means, rtol=0, atol=2e-6)
    torch.testing.assert_close(fast_quats, ref_quats, rtol=0, atol=2e-6)
    idx, w = demo_avatar.sparse_weights()
    dense = torch.zeros(len(g), 55).scatter_add_(1, torch.from_numpy(idx).long(), torch.from_numpy(w))
    assert torch.equal(dense, demo_avatar.skin_weights)  # the sparse form is exact


def test_gradients_use_the_torch_path(demo_avatar, body):
    means = demo_avatar.gaussians.means.clone().requires_grad_()
    avatar = Avatar(demo_avatar.gaussians.replace(means=means), demo_avatar.skin_weights, demo_avatar.betas)
    posed, _ = avatar.pose_tensors(body, random_pose(2))
    posed.sum().backward()
    assert means.grad is not None and means.grad.shape == means.shape


def test_quaternion_signs_follow_the_tree(body):
    from streamer.avatar.lbs import align_quat_signs

    q = torch.nn.functional.normalize(torch.randn(55, 4), dim=-1)
    aligned = align_quat_signs(q, body.parents)
    assert torch.equal(aligned.abs(), q.abs())  # only signs change
    for j, p in enumerate(body.parents.tolist()):
        if p >= 0:
            assert float((aligned[j] * aligned[p]).sum()) >= 0


@pytest.mark.parametrize("seed", [0, 3])
def test_unskin_inverts_skin(demo_avatar, body, seed):
    """Posing and then un-posing with the same weights gives the canonical Gaussians back (no photo)."""
    pose = random_pose(seed, scale=0.6)
    g = demo_avatar.gaussians
    A, Q = skinning_transforms(body, pose, demo_avatar.rest_joints(body))
    posed_m, posed_q = skin_gaussians(g.means, g.quats, demo_avatar.skin_weights, A, Q)
    assert (posed_m - g.means).abs().max() > 0.05  # the pose really moved them
    m, q = unskin_gaussians(posed_m, posed_q, demo_avatar.skin_weights, A, Q)
    assert torch.allclose(m, g.means, atol=2e-5)
    same = (q * g.quats).sum(-1).abs()  # q and -q are one rotation
    assert same.min() > 1 - 1e-5


def test_unskin_is_differentiable_and_checks_shapes(demo_avatar, body):
    g = demo_avatar.gaussians.subset(slice(0, 50))
    w = demo_avatar.skin_weights[:50]
    A, Q = skinning_transforms(body, random_pose(1), demo_avatar.rest_joints(body))
    means = g.means.clone().requires_grad_(True)
    m, _ = unskin_gaussians(means, g.quats, w, A, Q)
    m.sum().backward()
    assert means.grad is not None and means.grad.abs().sum() > 0
    with pytest.raises(Exception, match="unskin_gaussians"):
        unskin_gaussians(g.means, g.quats, w[:10], A, Q)
