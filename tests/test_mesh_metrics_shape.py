"""Roughness and genus: the shape metrics of the mesh and real-orbit benchmarks."""

import numpy as np
import pytest
import trimesh

from orbitforge.kernels.metrics import genus, roughness_deg


def test_roughness_separates_smooth_from_noisy_and_ignores_scale():
    sphere = trimesh.creation.icosphere(5)
    smooth = roughness_deg(sphere)
    assert smooth < 1.0
    big = sphere.copy()
    big.vertices *= 37.0
    assert roughness_deg(big) == pytest.approx(smooth, abs=1e-6)
    noisy = sphere.copy()
    noisy.vertices += np.random.default_rng(0).normal(0, 0.003, noisy.vertices.shape)
    assert roughness_deg(noisy) > 5.0
    assert roughness_deg(noisy) == roughness_deg(noisy)  # seeded


def test_roughness_flat_faces_are_zero():
    box = trimesh.creation.box().subdivide().subdivide()
    assert roughness_deg(box, radius=0.01) == pytest.approx(0.0, abs=1e-6)


def test_genus_counts_handles_and_refuses_open_meshes():
    assert genus(trimesh.creation.icosphere(3)) == 0
    assert genus(trimesh.creation.torus(1.0, 0.3)) == 1
    two = trimesh.util.concatenate([trimesh.creation.torus(1.0, 0.3),
                                    trimesh.creation.torus(1.0, 0.3).apply_translation([5, 0, 0])])
    assert genus(two) == 2
    open_mesh = trimesh.creation.icosphere(2)
    open_mesh.update_faces(np.arange(len(open_mesh.faces)) != 0)
    with pytest.raises(ValueError, match="not watertight"):
        genus(open_mesh)
    with pytest.raises(ValueError, match="extent"):
        roughness_deg(trimesh.Trimesh([[0, 0, 0]] * 3, [[0, 1, 2]]))
