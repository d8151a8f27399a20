"""CPU reference rendering of triangle meshes (trimesh + Embree ray casting).

Used to make reference views (the bundled sample orbit, benchmarks, evaluation) in the ONE
camera convention of :mod:`.geometry.cameras`: pixel ``(i, j)`` is centred at
``(j + 0.5, i + 0.5)``, ``viewmats`` are world -> camera (OpenCV: x right, y down, z forward).

Shading is deliberately **view independent** -- ``albedo * (ambient + diffuse * max(0, n.l))``
with a fixed world-space light from above-front and two-sided normals -- so that a 3D Gaussian
fit with view-independent (degree-0 SH) colour can match the renders exactly.

Two optional terms make the shading physically plausible while keeping it view independent
(both are properties of the surface point, not of the camera): ``occlusion`` scales the ambient
term by per-vertex **ambient occlusion** (:func:`ambient_occlusion`: the cosine-weighted share
of the hemisphere not blocked by the mesh within ``ao_distance``), and ``shadows`` casts a ray
from every lit hit point towards the light (**cast shadows**). A path tracer (e.g. the Blender
renders generators are trained on) produces both; without them, every surface facing away from
the light is one flat colour.

Ray casting uses ``embreex`` (Embree 2) directly when it is installed (about 0.03 s per 256²
view for spot); otherwise trimesh's pure-python triangle intersector (much slower).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import trimesh

from ..geometry.cameras import Cameras, camera_rays
from ..interrupt import check_interrupt

try:  # optional fast path
    from embreex import rtcore_scene as _rtcs
    from embreex.mesh_construction import TriangleMesh as _EmbreeTriangleMesh

    HAVE_EMBREE = True
except Exception:  # pragma: no cover - depends on the install
    HAVE_EMBREE = False

# fixed world-space light direction (towards the light): above (+y) and in front (+z), a bit right
LIGHT_DIR = (0.3, 0.8, 0.5)
AMBIENT = 0.45
DIFFUSE = 0.55
DEFAULT_GREY = (0.7, 0.7, 0.7)

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------------
# Loading and normalisation
# ----------------------------------------------------------------------------------------------


def _find_texture(path: str) -> Optional[str]:
    """A texture image next to an OBJ that has UVs but no material image (e.g. spot)."""
    folder = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    names = []
    for base in (stem, stem + "_texture", stem.split("_")[0] + "_texture", stem.split("_")[0]):
        names += [base + e for e in _IMAGE_EXTS]
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isfile(p):
            return p
    images = [f for f in sorted(os.listdir(folder)) if f.lower().endswith(_IMAGE_EXTS)]
    return os.path.join(folder, images[0]) if len(images) == 1 else None


def _material_image(material):
    """(PIL image or None, rgb factor [3] float) of a trimesh material."""
    if material is None:
        return None, None
    img = getattr(material, "image", None)  # SimpleMaterial
    if img is None:
        img = getattr(material, "baseColorTexture", None)  # PBRMaterial
    factor = getattr(material, "baseColorFactor", None)
    if factor is None and img is None:
        factor = getattr(material, "diffuse", None)
    if factor is not None:
        factor = np.asarray(factor, dtype=np.float64).flatten()[:3]
        if factor.max() > 1.0:
            factor = factor / 255.0
    return img, factor


def _check_mesh_sizes(path: str, ext: str) -> None:
    """Compare what a binary header promises with the file size BEFORE a parser allocates it
    (PLY element counts, GLB chunk lengths, binary STL triangle count)."""
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    if ext == ".ply":
        from ..splat.ply import _parse_header, min_data_bytes

        fmt, elements, offset = _parse_header(path, head, lists=True)
        if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
            raise ValueError(f"{path!r}: unknown PLY format {fmt!r}")
        need = min_data_bytes(fmt, elements)
        if need > size - offset:
            raise ValueError(f"{path!r} is truncated or corrupt: its header promises at least "
                             f"{need} bytes of data, the file holds {size - offset}")
    elif ext == ".glb":
        if len(head) < 20 or head[:4] != b"glTF":
            raise ValueError(f"{path!r} is not a GLB file (no 'glTF' magic)")
        version, length = struct.unpack("<II", head[4:12])
        if version != 2 or length != size:
            raise ValueError(f"{path!r}: GLB version {version}, length {length} for a "
                             f"{size}-byte file (corrupt or truncated; glTF 2.0 GLB expected)")
        pos = 12
        with open(path, "rb") as f:
            while pos < size:
                f.seek(pos)
                hdr = f.read(8)
                n = struct.unpack("<I", hdr[:4])[0] if len(hdr) == 8 else size
                if pos + 8 + n > size:
                    raise ValueError(f"{path!r}: GLB chunk at byte {pos} claims {n} bytes, past "
                                     "the end of the file (corrupt or truncated)")
                pos += 8 + n
    elif ext == ".stl" and size >= 84 and not head[:80].lstrip().lower().startswith(b"solid"):
        n = struct.unpack("<I", head[80:84])[0]
        if 84 + 50 * n != size:
            raise ValueError(f"{path!r}: binary STL header promises {n} triangles "
                             f"({84 + 50 * n} bytes), the file has {size} bytes")


def _check_geometry(path: str, g: trimesh.Trimesh) -> None:
    faces, verts = np.asarray(g.faces), np.asarray(g.vertices)
    if faces.ndim != 2 or faces.shape[1] != 3 or (len(faces) and (
            faces.min() < 0 or faces.max() >= len(verts))):
        raise ValueError(f"{path!r}: faces index vertices that do not exist ({len(verts)} "
                         "vertices; corrupt file?)")
    if not np.isfinite(verts).all():
        raise ValueError(f"{path!r} has NaN/inf vertex coordinates")


def _gltf_color_visual(mesh: trimesh.Trimesh) -> None:
    """``COLOR_0`` beside a material without a texture (as core SaveGLB and Save Mesh write):
    trimesh files it as a vertex attribute of a texture visual; make it the vertex colours."""
    vis = mesh.visual
    if isinstance(vis, trimesh.visual.TextureVisuals) and vis.uv is None and \
            "color" in vis.vertex_attributes:
        mesh.visual = trimesh.visual.ColorVisuals(
            mesh, vertex_colors=np.asarray(vis.vertex_attributes["color"]))


def _gltf_colors_to_srgb(path: str, ext: str, mesh: trimesh.Trimesh) -> None:
    """glTF ``COLOR_0`` is linear (trimesh keeps it as stored): make the vertex colours sRGB
    like every other colour here. A GLB's single primitive is read at full precision (trimesh
    rounds to 8-bit linear, which loses dark shades); otherwise trimesh's 8-bit values."""
    from .gltf import glb_vertex_colors, linear_to_srgb

    _gltf_color_visual(mesh)
    if getattr(mesh.visual, "kind", None) != "vertex":
        return
    lin = None
    if ext == ".glb":
        with open(path, "rb") as f:
            lin = glb_vertex_colors(f.read())
        if lin is not None and len(lin) != len(mesh.vertices):
            lin = None
    vc = np.asarray(mesh.visual.vertex_colors)  # [N, 4] uint8
    rgb = lin[:, :3] if lin is not None else vc[:, :3] / 255.0
    srgb = linear_to_srgb(torch.as_tensor(rgb, dtype=torch.float64)).numpy()
    out = vc.copy()
    out[:, :3] = np.round(srgb * 255.0).astype(np.uint8)
    mesh.visual.vertex_colors = out


def load_mesh(path: str, texture: Optional[str] = None) -> trimesh.Trimesh:
    """Load an OBJ / PLY / GLB / GLTF file as one ``trimesh.Trimesh``.

    Scenes are flattened with their node transforms. Texture + UVs (``TextureVisuals``) or vertex
    colours are kept; vertex colours are sRGB whatever the format (a GLB/GLTF stores linear
    ``COLOR_0``, converted here). Vertices are not merged or reordered (``process=False``), so UV
    seams stay split. For an OBJ with UVs but no material image, ``texture`` (or, when None, an
    image found next to it: ``<stem>.png``, ``<stem>_texture.png``, ``<prefix>_texture.png`` or the
    only image in the folder) becomes its texture.
    """
    if not os.path.isfile(path):
        raise ValueError(f"mesh file not found: {path!r}; give the path of an OBJ/PLY/GLB/GLTF "
                         "file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".obj", ".ply", ".glb", ".gltf", ".off", ".stl"):
        raise ValueError(f"unsupported mesh format {ext!r} ({path}); use OBJ, PLY, GLB or GLTF")
    if texture is not None and not os.path.isfile(texture):
        raise ValueError(f"texture file not found: {texture!r}")
    _check_mesh_sizes(path, ext)
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as e:  # noqa: BLE001 - trimesh's parsers raise any type on corrupt files
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"{path!r} cannot be read as a {ext[1:].upper()} mesh (corrupt or "
                         f"truncated? {type(e).__name__}: {msg})") from None
    if isinstance(loaded, trimesh.Scene):
        meshes = []
        for node in loaded.graph.nodes_geometry:
            transform, geom_name = loaded.graph[node]
            g = loaded.geometry[geom_name]
            if isinstance(g, trimesh.Trimesh) and len(g.faces):
                _check_geometry(path, g)
                _gltf_color_visual(g)  # before copy(), which drops vertex attributes
                g = g.copy()
                g.apply_transform(transform)
                meshes.append(g)
        if not meshes:
            raise ValueError(f"{path!r} contains no triangle mesh")
        mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
    else:
        raise ValueError(f"{path!r} is not a triangle mesh (got {type(loaded).__name__}); "
                         "point clouds cannot be rendered")
    if len(mesh.faces) == 0:
        raise ValueError(f"{path!r} has no faces")
    _check_geometry(path, mesh)
    if ext in (".glb", ".gltf"):
        _gltf_colors_to_srgb(path, ext, mesh)
    vis = mesh.visual
    if isinstance(vis, trimesh.visual.TextureVisuals) and vis.uv is not None:
        img, _ = _material_image(vis.material)
        if ext == ".obj" and img is not None:
            # trimesh invents a 2x2 grey image for an OBJ with UVs but no material library
            with open(path, "rb") as fh:
                if b"mtllib" not in fh.read():
                    img = None
        tex = texture or (None if img is not None else _find_texture(path))
        if tex is not None:
            from PIL import Image

            with Image.open(tex) as im:
                image = im.convert("RGB").copy()
            # white diffuse: trimesh's default (0.4 grey) becomes glTF's baseColorFactor on export
            mat = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255))
            mesh.visual = trimesh.visual.TextureVisuals(uv=vis.uv, material=mat)
    return mesh


def normalize_mesh(mesh: trimesh.Trimesh):
    """Centre the bounding box at the origin and scale its largest extent to 1 (the
    evaluation frame of SyncDreamer's ``eval_mesh.py``).

    Returns ``(normalised copy, center [3], scale)`` with ``normalised = (v - center) * scale``;
    apply the same ``center``/``scale`` to a prediction to put it in this mesh's frame.
    """
    lo, hi = mesh.bounds
    center = (lo + hi) / 2.0
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"cannot normalise a mesh with bounding-box extent {extent}")
    scale = 1.0 / extent
    out = mesh.copy()
    out.vertices = (np.asarray(mesh.vertices, dtype=np.float64) - center) * scale
    return out, center, scale


# ----------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------


class _Caster:
    """Closest-hit ray casting: returns (hit [R] bool, face [R], barycentric [R,3], t [R])."""

    def __init__(self, mesh: trimesh.Trimesh):
        self.tris = np.asarray(mesh.triangles, dtype=np.float64)  # [F, 3, 3]
        if HAVE_EMBREE:
            self.scene = _rtcs.EmbreeScene()
            _EmbreeTriangleMesh(scene=self.scene,
                                vertices=np.asarray(mesh.vertices, dtype=np.float32),
                                indices=np.asarray(mesh.faces, dtype=np.int32))
        else:
            self.rmi = trimesh.ray.ray_triangle.RayMeshIntersector(mesh)

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        n = origins.shape[0]
        if HAVE_EMBREE:
            res = self.scene.run(np.ascontiguousarray(origins, dtype=np.float32),
                                 np.ascontiguousarray(dirs, dtype=np.float32), output=1)
            face = np.asarray(res["primID"]).astype(np.int64)
            hit = face >= 0
            u = np.asarray(res["u"], dtype=np.float64)
            v = np.asarray(res["v"], dtype=np.float64)
            bary = np.stack([1 - u - v, u, v], -1)  # embree: p = (1-u-v) v0 + u v1 + v v2
            t = np.asarray(res["tfar"], dtype=np.float64)
            face = np.where(hit, face, 0)
            return hit, face, bary, t
        hit = np.zeros(n, bool)
        face = np.zeros(n, np.int64)
        bary = np.zeros((n, 3))
        t = np.zeros(n)
        tri_idx, ray_idx, loc = self.rmi.intersects_id(origins, dirs, multiple_hits=False,
                                                       return_locations=True)
        if len(ray_idx):
            hit[ray_idx] = True
            face[ray_idx] = tri_idx
            bary[ray_idx] = trimesh.triangles.points_to_barycentric(self.tris[tri_idx], loc)
            dn = dirs[ray_idx]
            t[ray_idx] = ((loc - origins[ray_idx]) * dn).sum(-1) / (dn * dn).sum(-1)
        return hit, face, bary, t


# ----------------------------------------------------------------------------------------------
# Shading helpers
# ----------------------------------------------------------------------------------------------


def _weld(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices at the same position (split UV-seam copies): ``(first [U], inv [V])`` -- the
    index of one copy per position, and each vertex's position index."""
    _, first, inv = np.unique(np.round(v, 7), axis=0, return_index=True, return_inverse=True)
    return first, inv.reshape(-1)


def _ray_offset(mesh: trimesh.Trimesh) -> float:
    """How far secondary rays start off the surface (so they do not hit their own triangle)."""
    return 1e-5 * float(np.linalg.norm(mesh.extents))


def smooth_vertex_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` shared across split (UV-seam) copies of a vertex."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces)
    _, inv = _weld(v)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # area-weighted
    acc = np.zeros((inv.max() + 1, 3))
    for k in range(3):
        np.add.at(acc, inv[f[:, k]], fn)
    n = acc[inv]
    return n / np.clip(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12, None)


def ambient_occlusion(mesh: trimesh.Trimesh, n_rays: int = 32, max_dist: float = 0.5,
                      seed: int = 0, normals: Optional[np.ndarray] = None,
                      caster: Optional["_Caster"] = None) -> np.ndarray:
    """Per-vertex ambient occlusion ``[V]`` in 0..1 (1 = open sky): ``n_rays`` cosine-weighted
    rays over the hemisphere of the smooth vertex normal; a ray hitting the mesh closer than
    ``max_dist`` (world units) counts as blocked. Vertices at the same position (UV-seam copies)
    share one estimate, so seams do not show. Deterministic for a given ``seed``."""
    if int(n_rays) < 1 or not max_dist > 0:
        raise ValueError(f"ambient_occlusion needs n_rays >= 1 and max_dist > 0, got {n_rays}, "
                         f"{max_dist}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    vn = smooth_vertex_normals(mesh) if normals is None else normals
    first, inv = _weld(v)
    p, n = v[first], vn[first]  # [U, 3]
    caster = caster or _Caster(mesh)
    # an orthonormal frame around each normal
    a = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = np.cross(n, a)
    t1 /= np.clip(np.linalg.norm(t1, axis=-1, keepdims=True), 1e-12, None)
    t2 = np.cross(n, t1)
    eps = _ray_offset(mesh)
    rng = np.random.default_rng(seed)
    blocked = np.zeros(len(p))
    for _ in range(int(n_rays)):
        u1, u2 = rng.random(len(p)), rng.random(len(p))
        r, phi = np.sqrt(u1), 2.0 * np.pi * u2
        d = (r * np.cos(phi))[:, None] * t1 + (r * np.sin(phi))[:, None] * t2 \
            + np.sqrt(1.0 - u1)[:, None] * n
        hit, _, _, t = caster.cast(p + eps * n, d)
        blocked += hit & (t > 0) & (t < max_dist)
    return (1.0 - blocked / int(n_rays))[inv]


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear, repeat-wrapped lookup of ``img [h,w,3]`` at UVs ``[R,2]`` (v up, OpenGL)."""
    h, w = img.shape[:2]
    x = (uv[:, 0] % 1.0) * w - 0.5
    y = (1.0 - (uv[:, 1] % 1.0)) * h - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0m, x1m = x0 % w, (x0 + 1) % w
    y0c, y1c = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    return ((img[y0c, x0m] * (1 - fx) + img[y0c, x1m] * fx) * (1 - fy)
            + (img[y1c, x0m] * (1 - fx) + img[y1c, x1m] * fx) * fy)


class _Albedo:
    """Per-hit base colour from a mesh's visuals (texture, vertex/face colours or grey)."""

    def __init__(self, mesh: trimesh.Trimesh, default=DEFAULT_GREY):
        self.kind = "grey"
        self.grey = np.asarray(default, dtype=np.float64)
        vis = mesh.visual
        nf = len(mesh.faces)
        if isinstance(vis, trimesh.visual.TextureVisuals):
            img, factor = _material_image(vis.material)
            if img is not None and vis.uv is not None and len(vis.uv) == len(mesh.vertices):
                self.kind = "texture"
                self.tex = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
                if factor is not None:
                    self.tex = self.tex * factor
                self.uv = np.asarray(vis.uv, dtype=np.float64)
                self.faces = np.asarray(mesh.faces)
            elif factor is not None:
                self.grey = factor
        elif isinstance(vis, trimesh.visual.ColorVisuals) and vis.defined:
            if vis.kind == "vertex":
                self.kind = "vertex"
                self.vc = np.asarray(vis.vertex_colors, dtype=np.float64)[:, :3] / 255.0
                self.faces = np.asarray(mesh.faces)
            elif vis.kind == "face" and len(vis.face_colors) == nf:
                self.kind = "face"
                self.fc = np.asarray(vis.face_colors, dtype=np.float64)[:, :3] / 255.0

    def __call__(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        if self.kind == "texture":
            uv = (self.uv[self.faces[face]] * bary[:, :, None]).sum(1)
            return _bilinear(self.tex, uv)
        if self.kind == "vertex":
            return (self.vc[self.faces[face]] * bary[:, :, None]).sum(1)
        if self.kind == "face":
            return self.fc[face]
        return np.broadcast_to(self.grey, (face.shape[0], 3))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def render_mesh(mesh: trimesh.Trimesh, cams: Cameras, background: Sequence[float] = (1.0, 1.0, 1.0),
                ss: int = 1, smooth: bool = True, light_dir: Sequence[float] = LIGHT_DIR,
                ambient: float = AMBIENT, diffuse: float = DIFFUSE, occlusion: bool = False,
                shadows: bool = False, ao_rays: int = 32, ao_distance: float = 0.5,
                progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Render ``mesh`` from every camera (CPU ray casting).

    Args:
        mesh: the mesh, in world units of ``cams`` (normalise it first for the SyncDreamer
            ``eval_mesh.py`` protocol).
        cams: N cameras; ``cams.width`` x ``cams.height`` output images.
        background: RGB (0..1) the colour is composited on.
        ss: supersampling factor per axis (anti-aliasing; ss=2 costs 4x).
        smooth: interpolate smooth vertex normals (else flat face normals).
        light_dir / ambient / diffuse: the view-independent shading
            ``albedo * (ambient + diffuse * max(0, n.l))``; normals are two-sided.
        occlusion: multiply the ambient term by per-vertex ambient occlusion
            (:func:`ambient_occlusion` with ``ao_rays`` rays, ``ao_distance`` reach).
        shadows: zero the diffuse term where the mesh blocks the way to the light.
        progress: optional ``callback(done_views, total_views)``.

    Returns a dict of CPU float32 tensors:
        ``rgb`` [N,H,W,3] 0..1 composited on ``background``; ``mask`` [N,H,W] coverage (1 =
        object; fractional on edges when ss > 1); ``depth`` [N,H,W] camera-space z (0 where
        empty; mean over covered sub-samples); ``normals`` [N,H,W,3] unit world-space normals
        facing the camera (0 where empty).
    """
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError("render_mesh needs a non-empty trimesh.Trimesh, got "
                         f"{type(mesh).__name__}")
    if int(ss) != ss or ss < 1:
        raise ValueError(f"ss (supersampling) must be an integer >= 1, got {ss}")
    bg = np.asarray(background, dtype=np.float64).flatten()
    if bg.shape != (3,):
        raise ValueError(f"background must be 3 RGB values in 0..1, got {background}")
    ss = int(ss)
    W, H = cams.width, cams.height
    sc = cams.resized(W * ss, H * ss) if ss > 1 else cams
    Ws, Hs = sc.width, sc.height

    caster = _Caster(mesh)
    albedo = _Albedo(mesh)
    faces = np.asarray(mesh.faces)
    vn = smooth_vertex_normals(mesh) if smooth or occlusion else None
    fnorm = np.asarray(mesh.face_normals, dtype=np.float64)
    light = np.asarray(light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    ao = (ambient_occlusion(mesh, ao_rays, ao_distance, normals=vn, caster=caster)
          if occlusion else None)
    eps = _ray_offset(mesh)

    n_views = len(cams)
    out_rgb = np.empty((n_views, H, W, 3), np.float32)
    out_mask = np.empty((n_views, H, W), np.float32)
    out_depth = np.empty((n_views, H, W), np.float32)
    out_nrm = np.empty((n_views, H, W, 3), np.float32)
    vms = sc.viewmats.detach().double().cpu()
    Ks = sc.Ks.detach().double().cpu()
    for k in range(n_views):
        check_interrupt()
        o, d = camera_rays(vms[k:k + 1], Ks[k:k + 1], Hs, Ws)  # [1, 3], [1, Hs, Ws, 3]
        dirs = d.reshape(-1, 3).numpy()  # [Hs*Ws, 3], t = camera z
        origins = np.broadcast_to(o[0].numpy(), dirs.shape).copy()
        hit, face, bary, t = caster.cast(origins, dirs)
        hit &= t > 0
        idx = np.nonzero(hit)[0]
        f, b = face[idx], bary[idx]
        if smooth:
            n = (vn[faces[f]] * b[:, :, None]).sum(1)
            bad = np.linalg.norm(n, axis=-1) < 1e-8
            n[bad] = fnorm[f[bad]]
        else:
            n = fnorm[f].copy()
        n /= np.clip(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12, None)
        flip = (n * dirs[idx]).sum(-1) > 0  # two-sided: face the camera
        n[flip] *= -1
        amb = ambient if ao is None else ambient * (ao[faces[f]] * b).sum(1)
        lit = np.clip(n @ light, 0.0, None)
        if shadows:
            on = np.nonzero(lit > 0)[0]
            if len(on):
                # leave the surface on the camera's side of the face, towards the light
                fn = fnorm[f[on]] * np.where((fnorm[f[on]] * dirs[idx[on]]).sum(-1) > 0,
                                             -1.0, 1.0)[:, None]
                p = origins[idx[on]] + t[idx[on], None] * dirs[idx[on]] + eps * fn
                blk, _, _, tb = caster.cast(p, np.broadcast_to(light, p.shape))
                lit[on[blk & (tb > 0)]] = 0.0
        shade = amb + diffuse * lit
        col = np.clip(albedo(f, b) * shade[:, None], 0.0, 1.0)

        rgb = np.broadcast_to(bg, (Hs * Ws, 3)).copy()
        rgb[idx] = col
        mask = hit.astype(np.float64)
        depth = np.where(hit, t, 0.0)
        nrm = np.zeros((Hs * Ws, 3))
        nrm[idx] = n
        if ss > 1:
            pool = lambda a: a.reshape(H, ss, W, ss, *a.shape[2:]).mean((1, 3))  # noqa: E731
            rgb = pool(rgb.reshape(Hs, Ws, 3))
            cov = pool(mask.reshape(Hs, Ws))
            depth = np.where(cov > 0, pool(depth.reshape(Hs, Ws)) / np.maximum(cov, 1e-12), 0.0)
            nrm = pool(nrm.reshape(Hs, Ws, 3))
            nn = np.linalg.norm(nrm, axis=-1, keepdims=True)
            nrm = np.where(nn > 1e-8, nrm / np.maximum(nn, 1e-12), 0.0)
            mask = cov
        out_rgb[k] = rgb.reshape(H, W, 3)
        out_mask[k] = mask.reshape(H, W)
        out_depth[k] = depth.reshape(H, W)
        out_nrm[k] = nrm.reshape(H, W, 3)
        if progress is not None:
            progress(k + 1, n_views)
    return {"rgb": torch.from_numpy(out_rgb), "mask": torch.from_numpy(out_mask),
            "depth": torch.from_numpy(out_depth), "normals": torch.from_numpy(out_nrm)}
