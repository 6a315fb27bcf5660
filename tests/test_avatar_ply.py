"""Avatar .ply files: 3DGS-standard layout, exact skinning round trip, clear errors on bad files."""

import numpy as np
import pytest
import torch

from streamer.avatar import Avatar, Gaussians
from streamer.avatar.ply import SH_C0, read_ply, write_ply
from streamer.errors import AvatarFormatError, InputError


def _random_avatar(n: int = 500, seed: int = 0) -> Avatar:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    w = torch.rand(n, 55, generator=g) ** 6
    w[w < 0.05] = 0  # sparse, like real skinning
    w[:, 0] += 1e-3
    w = w / w.sum(1, keepdim=True)
    gs = Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=q / q.norm(dim=1, keepdim=True),
        scales=torch.rand(n, 3, generator=g) * 0.05 + 1e-3,
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        colors=torch.rand(n, 3, generator=g),
    )
    return Avatar(gs, w, betas=torch.randn(10, generator=g))


def test_round_trip(tmp_path):
    a = _random_avatar()
    path = a.save(tmp_path / "a.ply")
    b = Avatar.load(path)
    assert torch.equal(b.skin_weights, a.skin_weights)  # bit-exact
    assert torch.equal(b.betas, a.betas)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        torch.testing.assert_close(getattr(b.gaussians, name), getattr(a.gaussians, name), rtol=1e-5, atol=1e-6)


def test_file_uses_standard_3dgs_properties(tmp_path):
    a = _random_avatar(n=10)
    raw = a.save(tmp_path / "a.ply").read_bytes()
    header = raw[: raw.index(b"end_header")].decode()
    for prop in ["x", "y", "z", "f_dc_0", "f_dc_2", "opacity", "scale_0", "rot_0", "rot_3"]:
        assert f"property float {prop}\n" in header
    assert "format binary_little_endian 1.0" in header
    # Values are stored in the 3DGS activations' inverse spaces.
    g, extras, _ = read_ply(tmp_path / "a.ply")
    table = np.frombuffer(raw[raw.index(b"end_header\n") + 11 :], dtype=np.float32, count=17 * 10).reshape(10, -1)
    assert table[0, 6] == pytest.approx((a.gaussians.colors[0, 0].item() - 0.5) / SH_C0, rel=1e-5)
    assert table[0, 10] == pytest.approx(np.log(a.gaussians.scales[0, 0].item()), rel=1e-5)
    assert "skin_j_0" in extras and "skin_w_0" in extras


def test_extreme_opacities_and_unnormalised_quaternions(tmp_path):
    a = _random_avatar(n=4)
    a.gaussians.opacities[:2] = torch.tensor([0.0, 1.0])  # a logit of these would be infinite
    path = write_ply(tmp_path / "scene.ply", a.gaussians)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"end_header\n") + 11
    table = np.frombuffer(raw, dtype=np.float32, count=17 * 4, offset=start).reshape(4, 17).copy()
    assert np.isfinite(table).all()
    table[:, 13:17] *= 2.0  # another tool's file: quaternions stored unnormalised
    raw[start : start + table.nbytes] = table.tobytes()
    path.write_bytes(bytes(raw))
    g, _, _ = read_ply(path)
    torch.testing.assert_close(g.quats.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(g.quats, a.gaussians.quats, rtol=1e-5, atol=1e-6)
    assert 0.0 < float(g.opacities[0]) < 1e-5 and 1.0 - 1e-5 < float(g.opacities[1]) < 1.0


def test_plain_3dgs_ply_is_not_an_avatar(tmp_path):
    a = _random_avatar(n=20)
    write_ply(tmp_path / "scene.ply", a.gaussians)
    g, _, _ = read_ply(tmp_path / "scene.ply")
    assert len(g) == 20
    with pytest.raises(AvatarFormatError, match="not an animatable avatar"):
        Avatar.load(tmp_path / "scene.ply")


def test_truncated_ply(tmp_path):
    path = _random_avatar(n=100).save(tmp_path / "a.ply")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 50])
    with pytest.raises(AvatarFormatError, match="truncated: header declares 100 vertices"):
        Avatar.load(path)


def test_an_avatar_with_no_gaussians_is_refused_when_read(tmp_path):
    """A valid header declaring 0 vertices would start a server whose every session then fails."""
    path = _random_avatar(n=1).save(tmp_path / "a.ply")
    head, _, _ = path.read_bytes().partition(b"end_header\n")
    path.write_bytes(head.replace(b"element vertex 1\n", b"element vertex 0\n") + b"end_header\n")
    with pytest.raises(AvatarFormatError, match="a.ply: an avatar with no Gaussians"):
        Avatar.load(path)


def test_non_3dgs_ply(tmp_path):
    path = tmp_path / "mesh.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + np.zeros(3, np.float32).tobytes())
    with pytest.raises(AvatarFormatError, match="not a 3DGS PLY, missing properties: f_dc_0"):
        Avatar.load(path)
    path.write_bytes(b"\x89PNG\r\n garbage")
    with pytest.raises(AvatarFormatError, match="not a PLY file"):
        Avatar.load(path)
    good = _random_avatar(n=10).save(tmp_path / "good.ply").read_bytes()
    path.write_bytes(good[:60])  # cut inside the header
    with pytest.raises(AvatarFormatError, match="truncated or corrupt PLY header"):
        Avatar.load(path)
    with pytest.raises(AvatarFormatError, match="cannot read"):
        Avatar.load(tmp_path / "missing.ply")


def test_ascii_ply_is_refused_clearly(tmp_path):
    path = tmp_path / "ascii.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(AvatarFormatError, match="format ascii 1.0 unsupported"):
        Avatar.load(path)


def test_save_is_atomic_on_failure(tmp_path):
    a = _random_avatar(n=10)
    target = a.save(tmp_path / "a.ply")
    before = target.read_bytes()
    with pytest.raises(AvatarFormatError):
        write_ply(target, a.gaussians, extras={"bad name": np.zeros(10, np.float32)})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"means": torch.zeros(5, 2)}, "Gaussians.means: expected shape (N, 3), got (5, 2)"),
        ({"opacities": torch.zeros(4)}, "Gaussians.opacities: has 4 rows, means has 5"),
        ({"colors": torch.zeros(5, 3, dtype=torch.float64)}, "Gaussians.colors: expected float32"),
    ],
)
def test_gaussians_shape_errors(kwargs, message):
    fields = dict(means=torch.zeros(5, 3), quats=torch.zeros(5, 4), scales=torch.ones(5, 3),
                  opacities=torch.ones(5), colors=torch.zeros(5, 3))
    fields.update(kwargs)
    with pytest.raises(InputError) as err:
        Gaussians(**fields)
    assert message in str(err.value)


def test_avatar_rejects_bad_weights():
    a = _random_avatar(n=10)
    with pytest.raises(InputError, match=r"expected float32 \(10, 55\), got \(10, 54\)"):
        Avatar(a.gaussians, torch.ones(10, 54) / 54)
    with pytest.raises(InputError, match="each row sum to 1"):
        Avatar(a.gaussians, torch.ones(10, 55))
