"""The posed body's filled silhouette, which the outline offsets are measured against (.silhouette)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from streamer.reconstruct.silhouette import body_silhouette


def test_overlapping_triangles_fill_their_union() -> None:
    pix = np.array([[2.0, 2.0], [18.0, 2.0], [2.0, 18.0], [18.0, 18.0]])
    faces = np.array([[0, 1, 2], [0, 1, 3]])  # the square's upper-left and upper-right halves
    sil = body_silhouette(pix, faces, (20, 20))
    each = [body_silhouette(pix, faces[k : k + 1], (20, 20)) for k in range(2)]
    assert each[0][3, 10] and each[1][3, 10]  # row 3, column 10: in the overlap at the top
    assert (sil == each[0] | each[1]).all()
    twice = body_silhouette(pix, np.concatenate([faces, faces]), (20, 20))
    assert (twice == sil).all()  # a layer drawn twice changes nothing


def test_a_closed_body_fills_its_outline_without_holes(body) -> None:  # type: ignore[no-untyped-def]
    v = body.v_template.double().numpy()
    pix = v[:, :2] * np.array([300.0, -300.0]) + np.array([300.0, 400.0])  # front view, 300 px/m
    sil = body_silhouette(pix, body.faces.numpy(), (800, 600))
    assert (ndimage.binary_fill_holes(sil) == sil).all()
    assert sil[400, 300]  # the belly: the front and the back of the trunk overlap there
