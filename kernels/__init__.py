"""Host-free maths and compute (never imports ComfyUI), one subpackage per pipeline stage:

1. ``geometry/``: cameras and orbits, orbit self-calibration, the visual hull of the masks;
2. ``diffusion/``: an image -> orbit views (SV3D conditioning, EDM sampling, guidance, Hi3D
   refiner);
3. ``splat/``: views + cameras -> 3D Gaussians (fit, rasteriser, PLY files);
4. ``mesh/``: views (+ the Gaussians' depth) -> a coloured mesh and its files;
5. ``priors/``: IPSM and score-distillation terms plugged into the splat fit;
6. ``dynamic/``: 4D, a views x time matrix of frames -> one set of Gaussians per time.

A stage imports only the stages numbered before it and the shared modules at this level:
``atomic`` (file writes), ``interrupt``, ``inputs`` (IMAGE / MASK checks), ``metrics``, ``sample``
(the bundled orbit)."""
