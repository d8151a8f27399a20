"""``python -m orbitforge.bench <name> [args]``: each benchmark prints one JSON object."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "splat": "3DGS fit of a mesh's orbit, held-out PSNR/SSIM, time, memory",
    "raster": "rasteriser forward+backward time per view",
    "real": "real generated orbits (SV3D): held-out splat/mesh PSNR, silhouette IoU, roughness",
    "mesh": "mesh from a mesh's orbit views and masks: chamfer, IoU, F-score, time, memory",
    "refiner": "Hi3D stage-2 refiner: time/step vs resolution, peak memory, depth consistency",
    "guidance": "SV3D sampling step cost: HarmonyView (3 branches, one batch) vs plain CFG",
    "diffusion2": "Diffusion² matrix sampler: time per pass vs single-frame baseline, forwards, "
                  "memory",
    "recon4d": "4D reconstruction of a turning mesh: held-out PSNR per time step, time, memory",
    "priors": "sparse-view fits with and without IPSM geometry regularisers (PSNR, time)",
    "core": "side by side with ComfyUI core splat nodes: render time/PSNR, mesh accuracy, PLY path",
    "core_schemas": "(tool) regenerate a host snapshot workflow_tools/core_schemas*.json "
                    "(checkout or --url)",
    "interrupt": "time from the interrupt flag to each long node raising; no file left behind",
    "fullsize": "(opt-in) random full-size SV3D/SVD/Hi3D checkpoints through ComfyUI's loaders: "
                "load time, peak RSS, s/step on the CPU",
    "gpu": "one-GPU check: rasterisers, full-size SV3D_p, refiner, Diffusion² memory, sample fit",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print("usage: python -m orbitforge.bench <name> [--help]\n")
        for k, v in BENCHES.items():
            print(f"  {k:12s} {v}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    mod = importlib.import_module(f".{argv[0]}", __package__)
    return int(mod.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
