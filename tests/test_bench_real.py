"""bench real's data handling: frame split, orbit loading, edge-line clean-up, held-out cameras."""

import numpy as np
import pytest
import torch
from PIL import Image

from orbitforge.bench.real import (
    contact_sheet,
    erase_edge_lines,
    held_out_frames,
    load_orbit,
    train_frames,
)


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


def test_contact_sheet_writes_a_png(tmp_path):
    p = tmp_path / "sheet.png"
    contact_sheet([torch.zeros(3, 8, 8, 3), torch.ones(3, 8, 8, 3)], str(p))
    with Image.open(p) as im:
        assert im.size == (24, 16)


def test_bench_real_runs_a_whole_object(tmp_path, capsys):
    """One object end to end through the public nodes (fit, mesh, held-out renders, contact
    sheet, JSON keys): a coloured box rendered on SV3D's static orbit, small and short."""
    import json

    import trimesh

    from orbitforge.bench.real import main
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras, sv3d_static_orbit
    from orbitforge.kernels.mesh.render import render_mesh

    box = trimesh.creation.box((0.8, 0.5, 0.6))
    box.visual.vertex_colors = np.tile([40, 160, 90, 255], (len(box.vertices), 1))
    cams = make_orbit_cameras(*sv3d_static_orbit(0.0), 2.0, 33.8, 48, 48)
    rgb = render_mesh(box, cams, ambient=0.6, diffuse=0.4)["rgb"]
    obj = tmp_path / "orbits" / "box"
    obj.mkdir(parents=True)
    for f in range(21):
        Image.fromarray((rgb[f].numpy() * 255).round().astype(np.uint8)).save(obj / f"{f:02d}.png")
    sheets = tmp_path / "sheets"
    assert main(["--dir", str(tmp_path / "orbits"), "--iters", "60", "--grid", "40",
                 "--calibrate", "off", "--out", str(sheets), "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    o = out["objects"]["box"]
    for k in ("splat_psnr", "splat_ssim", "mesh_silhouette_iou", "mesh_psnr", "roughness_deg",
              "wall_s"):
        assert k in o and k in out["mean"], k
    assert o["mesh_silhouette_iou"] > 0.8  # the mesh covers the held-out silhouettes
    assert o["splat_psnr"] > 13.0  # an empty render scores ~8 dB here
    assert (sheets / "box.png").exists()
