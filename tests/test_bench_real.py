"""bench real's data handling: frame split, orbit loading, edge-line clean-up, held-out cameras."""

import numpy as np
import pytest
import torch
from PIL import Image

from orbitforge.bench.real import (contact_sheet, erase_edge_lines, held_out_frames, load_orbit,
                                   midpoint_cameras, train_frames)
from orbitforge.kernels.cameras import make_orbit_cameras, sv3d_static_orbit


def test_split_is_every_third_frame():
    assert held_out_frames() == [1, 4, 7, 10, 13, 16, 19]
    assert len(train_frames()) == 14 and not set(train_frames()) & set(held_out_frames())


def _write_orbit(folder, n=21, size=24):
    for f in range(n):
        a = np.full((size, size, 3), 255, np.uint8)
        a[8:16, 8:16] = (200, 30, 30)  # the object
        a[1, :] = 150  # an animation cell border along the top edge
        a[size - 6:size - 2, 0] = 120  # a short bit of a border at the left edge
        Image.fromarray(a).save(folder / f"{f:02d}.png")


def test_load_orbit_erases_edge_lines_keeps_the_object(tmp_path):
    _write_orbit(tmp_path)
    v = load_orbit(str(tmp_path))
    assert v.shape == (21, 24, 24, 3)
    assert torch.all(v[:, 1] == 1.0) and torch.all(v[:, :, 0] == 1.0)
    assert torch.allclose(v[:, 12, 12], torch.tensor([200, 30, 30]) / 255.0)
    # an object blob reaching into the edge band is kept whole
    x = torch.ones(1, 24, 24, 3)
    x[0, 0:14, 10:14] = 0.2
    assert torch.equal(erase_edge_lines(x), x)


def test_load_orbit_names_missing_frames(tmp_path):
    _write_orbit(tmp_path, n=20)
    with pytest.raises(ValueError, match="20.png"):
        load_orbit(str(tmp_path))


def test_held_out_cameras_are_midpoints_of_their_neighbours():
    el, az = sv3d_static_orbit(5.0, 21)
    cams = make_orbit_cameras(el, az, 2.0, 33.8, 32, 32)
    mid = midpoint_cameras(cams[train_frames()], held_out_frames())
    want = cams[held_out_frames()]
    assert torch.allclose(mid.viewmats, want.viewmats, atol=1e-5)
    assert torch.allclose(mid.Ks, want.Ks, atol=1e-4)


def test_contact_sheet_writes_a_png(tmp_path):
    p = tmp_path / "sheet.png"
    contact_sheet([torch.zeros(3, 8, 8, 3), torch.ones(3, 8, 8, 3)], str(p))
    with Image.open(p) as im:
        assert im.size == (24, 16)
