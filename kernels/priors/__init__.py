"""Priors for sparse-view fits: IPSM's geometry terms, score distillation (SV3D SDS, IPSM) and the
regularisers that plug them into the 3DGS fit's ``regularizer`` hook.
In: cameras, renders (+ a diffusion model callable). Out: loss terms for the fit."""
