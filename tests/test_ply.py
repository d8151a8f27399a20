"""The standard 3DGS PLY: round trip, layout viewers rely on, and refusal of bad files."""

import os

import numpy as np
import pytest
import torch

from orbitforge.kernels.splat.gaussians import SH_C0, Gaussians
from orbitforge.kernels.splat.ply import read_ply, write_ply


def _scene(n=7, k=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g), torch.randn(n, generator=g),
                     torch.randn(n, k, 3, generator=g))


@pytest.mark.parametrize("k", [1, 4, 16])
def test_roundtrip_exact(tmp_path, k):
    g = _scene(k=k)
    p = str(tmp_path / "s.ply")
    write_ply(p, g)
    h = read_ply(p)
    for a, b in zip(g.tensors(), h.tensors()):
        assert torch.equal(a, b)


def test_layout_matches_reference_3dgs(tmp_path):
    g = _scene(n=2, k=4)
    p = str(tmp_path / "s.ply")
    write_ply(p, g)
    raw = open(p, "rb").read()
    head, body = raw.split(b"end_header\n", 1)
    props = [ln.split()[-1].decode() for ln in head.splitlines() if ln.startswith(b"property")]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[9:18] == [f"f_rest_{i}" for i in range(9)]
    assert props[18:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2",
                          "rot_3"]
    arr = np.frombuffer(body, "<f4").reshape(2, len(props))
    # normals zero; f_rest channel-major: all R coefficients first
    assert np.all(arr[:, 3:6] == 0)
    np.testing.assert_array_equal(arr[0, 9:12], g.sh[0, 1:, 0].numpy())
    np.testing.assert_array_equal(arr[0, 12:15], g.sh[0, 1:, 1].numpy())
    # colour convention
    assert float(g.rgb[0, 0]) == pytest.approx(0.5 + SH_C0 * arr[0, 6], abs=1e-6)


def test_truncated_and_foreign_files_are_refused(tmp_path):
    g = _scene(n=5)
    p = str(tmp_path / "s.ply")
    write_ply(p, g)
    raw = open(p, "rb").read()
    t = tmp_path / "trunc.ply"
    t.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(str(t))
    f = tmp_path / "mesh.ply"
    f.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                  b"property float y\nproperty float z\nend_header\n" + b"\0" * 12)
    with pytest.raises(ValueError, match="missing properties"):
        read_ply(str(f))
    a = tmp_path / "ascii.ply"
    a.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        read_ply(str(a))
    j = tmp_path / "junk.ply"
    j.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(str(j))


def test_bad_scene_leaves_no_file(tmp_path):
    g = _scene(n=3)
    g.means[0, 0] = float("nan")
    p = tmp_path / "nan.ply"
    with pytest.raises(ValueError, match="NaN"):
        write_ply(str(p), g)
    assert os.listdir(tmp_path) == []


def test_written_file_gets_normal_permissions(tmp_path):
    # temp files are private; the finished file must be readable like any other output
    p = str(tmp_path / "s.ply")
    write_ply(p, _scene(n=2))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~mask
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")] == []


def test_hostile_headers_are_refused_before_reading(tmp_path):
    """Huge and negative counts, duplicated properties and trailing bytes: a ValueError naming
    the file and the problem (a 10^12 count is compared with the file size, never allocated)."""
    g = _scene(n=4, k=1)
    p = str(tmp_path / "s.ply")
    write_ply(p, g)
    raw = open(p, "rb").read()
    cases = {
        "huge": (raw.replace(b"element vertex 4\n", b"element vertex 1000000000000\n"),
                 "truncated: header promises 1000000000000 Gaussians"),
        "negative": (raw.replace(b"element vertex 4\n", b"element vertex -4\n"),
                     "negative count -4"),
        "duplicated": (raw.replace(b"property float opacity\n",
                                   b"property float opacity\nproperty float opacity\n"),
                       "property 'opacity' of element 'vertex' is declared twice"),
        "trailing": (raw + b"garbage", "7 bytes after the data"),
    }
    for name, (data, msg) in cases.items():
        bad = tmp_path / f"{name}.ply"
        bad.write_bytes(data)
        with pytest.raises(ValueError) as e:
            read_ply(str(bad))
        assert str(bad) in str(e.value) and msg in str(e.value), (name, str(e.value))
