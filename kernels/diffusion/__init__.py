"""Orbit generation by diffusion: SV3D conditioning, the EDM sampler, per-frame / HarmonyView
guidance, the CD score, Hi3D's depth-conditioned refiner and its checkpoint reading.
In: an input image (+ a model callable from the host). Out: orbit views and their latents."""
