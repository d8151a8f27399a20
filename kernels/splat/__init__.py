"""Stage 2, 3D Gaussian Splatting: the ``GAUSSIANS`` type, its rasteriser (torch, reference,
gsplat), the fit with density control, spherical harmonics, PLY files and the splat frame.
In: views + masks + ``Cameras``. Out: ``Gaussians``, their renders (colour, depth, alpha), PLY
files."""
