"""Full-size random-weight checkpoints, and ``python -m orbitforge.bench fullsize``.

The real model files cannot be downloaded here, so this writes files with their layout -- the
key names and shapes of the networks ComfyUI's loaders read -- filled with cheap random numbers:

* ``sv3d_u.safetensors``, ``sv3d_p.safetensors`` (Stability-AI generative-models,
  ``configs/inference/sv3d_u.yaml`` / ``sv3d_p.yaml``) and ``svd_xt.safetensors``
  (``configs/inference/svd.yaml``): the video UNet under ``model.diffusion_model.`` (320
  channels, multipliers 1-2-4-4, 2 res blocks, attention on the first three levels, 64-channel
  heads, context 1024, 8 input channels; vector ``adm_in_channels`` 256 / 1280 / 768), the
  OpenCLIP ViT-H/14 image encoder under ``conditioner.embedders.0.open_clip.model.visual.``
  (32 blocks, width 1280, 257 positions, projection 1280 -> 1024) and the VAE: SVD's
  ``first_stage_model.`` (AutoencoderKL encoder + the temporal ``VideoDecoder``), SV3D's
  ``conditioner.embedders.1.encoder.`` (the plain AutoencoderKL that ComfyUI reads for SV3D).
* Hi3D's stage-2 UNet (``configs/inference-v02.yaml`` of yanghb22-fdu/Hi3D-Official: the same
  video UNet with 17 input channels and a 512 vector,
  :data:`kernels.diffusion.hi3d_checkpoint.HI3D_STAGE2`) under ``model.diffusion_model.``, as
  ``hi3d_stage2.safetensors``.

The UNet layouts come from :func:`kernels.diffusion.hi3d_checkpoint.unet_layout` (derived from the
official configs; the opt-in test checks them key by key against ComfyUI's own model classes), the
CLIP layout is OpenCLIP's ``VisionTransformer`` naming, and the VAE layouts are taken from ComfyUI's
own VAE classes instantiated on the ``meta`` device (so the VAE part needs ComfyUI). Tensors are
written one at a time into the safetensors container (bounded memory, a few hundred MB at most),
in ``--dtype`` (default fp16: half the disk of fp32; ComfyUI casts weights to its compute dtype at
load, the dtype does not change what is detected).

``python -m orbitforge.bench fullsize --json`` (opt-in: needs ``COMFYUI_PATH`` and
``ORBITFORGE_FULLSIZE=1``, else it prints ``{"skipped": ...}``): builds the files in a temporary
folder (``--dir`` to keep them), then per model, in a fresh subprocess, the load through
ComfyUI's ``ImageOnlyCheckpointLoader`` (seconds, peak RSS) and one denoising step of our node at
a small latent size with the full-size networks (seconds per step): SV3D Sampler (sv3d_u, sv3d_p
with HarmonyView), Diffusion² (2x2, svd_xt + sv3d_p) and the refiner (Hi3D stage 2). The UNets are
kept in fp16 and cast per layer to fp32 on the CPU (ComfyUI's ``--fp16-unet`` manual cast), so
that two full-size UNets fit into the memory of a 24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import torch

from . import peak_rss_mb, run_child

VIDEO_ADM = {"svd_xt": 768, "sv3d_u": 256, "sv3d_p": 1280}
KINDS = ("sv3d_u", "sv3d_p", "svd_xt", "hi3d_stage2")
FILES = {k: f"{k}.safetensors" for k in KINDS}
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
VAE_PREFIX = {"svd_xt": "first_stage_model.", "sv3d_u": "conditioner.embedders.1.encoder.",
              "sv3d_p": "conditioner.embedders.1.encoder."}
_ST_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------------------
# layouts: {key: shape}
# ----------------------------------------------------------------------------------------------


def checkpoint_unet_layout(kind: str) -> dict:
    """The UNet's keys and shapes for ``kind`` as a full checkpoint stores them (under
    ``UNET_PREFIX``)."""
    from ..kernels.diffusion.hi3d_checkpoint import HI3D_STAGE2, UNetConfig, unet_layout

    if kind == "hi3d_stage2":
        cfg = HI3D_STAGE2
    else:
        cfg = UNetConfig(in_channels=8, adm_in_channels=VIDEO_ADM[kind])
    return {UNET_PREFIX + k: tuple(s) for k, s in unet_layout(cfg).items()}


def clip_vision_h_layout(width: int = 1280, layers: int = 32, patch: int = 14,
                         positions: int = 257, out_dim: int = 1024) -> dict:
    """OpenCLIP ViT-H/14 ``visual`` (``open_clip.transformer.VisionTransformer``) key names."""
    p = CLIP_PREFIX
    out = {p + "class_embedding": (width,), p + "positional_embedding": (positions, width),
           p + "conv1.weight": (width, 3, patch, patch), p + "ln_pre.weight": (width,),
           p + "ln_pre.bias": (width,)}
    for i in range(layers):
        b = f"{p}transformer.resblocks.{i}."
        out.update({b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
                    b + "attn.in_proj_weight": (3 * width, width),
                    b + "attn.in_proj_bias": (3 * width,),
                    b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                    b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                    b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
                    b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,)})
    out.update({p + "ln_post.weight": (width,), p + "ln_post.bias": (width,),
                p + "proj": (width, out_dim)})
    return out


_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
             "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
             "dropout": 0.0}


def vae_layout(kind: str) -> dict:
    """The VAE keys, from ComfyUI's own classes on the meta device (as ``comfy.sd.VAE`` builds
    them): SVD's AutoencodingEngine with the temporal VideoDecoder, SV3D's AutoencoderKL."""
    from comfy.ldm.models.autoencoder import AutoencoderKL, AutoencodingEngine

    with torch.device("meta"):
        if kind == "svd_xt":
            dec = dict(_DDCONFIG, video_kernel_size=[3, 1, 1], alpha=0.0)
            m = AutoencodingEngine(
                regularizer_config={"target":
                                    "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
                encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder",
                                "params": dict(_DDCONFIG)},
                decoder_config={"target": "comfy.ldm.modules.temporal_ae.VideoDecoder",
                                "params": dec})
        else:
            m = AutoencoderKL(ddconfig=dict(_DDCONFIG), embed_dim=4)
    return {VAE_PREFIX[kind] + k: tuple(v.shape) for k, v in m.state_dict().items()}


def checkpoint_layout(kind: str) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {KINDS}")
    if kind == "hi3d_stage2":
        return checkpoint_unet_layout(kind)
    out = checkpoint_unet_layout(kind)
    out.update(clip_vision_h_layout())
    out.update(vae_layout(kind))
    return out


# ----------------------------------------------------------------------------------------------
# streaming safetensors writer
# ----------------------------------------------------------------------------------------------


def _init_spec(key: str, shape) -> tuple:
    """(kind, value): how a key is filled -- norms 1, mix factors 0.3, matrices N(0, 0.02)
    scaled down with fan-in, vectors N(0, 0.01)."""
    name = key.rsplit(".", 1)[-1]
    if "mix_factor" in key:
        return "const", 0.3
    if len(shape) == 1 and name == "weight" and ("norm" in key or ".ln_" in key
                                                 or key.endswith("ln_pre.weight")
                                                 or key.endswith("ln_post.weight")
                                                 or "_layers.0." in key or ".out.0." in key
                                                 or key.endswith("out.0.weight")):
        return "const", 1.0
    if len(shape) <= 1:
        return "normal", 0.01
    fan_in = max(1, math.prod(shape[1:]))
    return "normal", min(0.02, 1.0 / math.sqrt(fan_in))


def nbytes(layout: dict, dtype=torch.float16) -> int:
    return sum(math.prod(s) for s in layout.values()) * torch.empty(0, dtype=dtype).element_size()


def write_random_safetensors(path: str, layout: dict, dtype=torch.float16, seed: int = 0,
                             metadata: dict | None = None, reuse: bool = False) -> str:
    """A safetensors file with ``layout``'s keys and shapes in ``dtype``, random contents, written
    tensor by tensor (memory: the largest tensor) and atomically. ``reuse``: keep an existing
    file with exactly this header."""
    from ..kernels.atomic import atomic_write

    if dtype not in _ST_DTYPES:
        raise ValueError(f"dtype {dtype} must be one of {list(_ST_DTYPES)}")
    size = torch.empty(0, dtype=dtype).element_size()
    header, off = {}, 0
    for k, s in layout.items():
        n = math.prod(s) * size
        header[k] = {"dtype": _ST_DTYPES[dtype], "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    if reuse and os.path.isfile(path) and os.path.getsize(path) == 8 + len(hb) + off:
        with open(path, "rb") as f:
            if f.read(8 + len(hb))[8:] == hb:
                return path
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if off + len(hb) > free - (1 << 30):
        raise ValueError(f"{path}: needs {(off + len(hb)) / 2**30:.1f} GiB but only "
                         f"{free / 2**30:.1f} GiB are free; choose another --dir")
    g = torch.Generator().manual_seed(int(seed))

    def writer(tmp):
        with open(tmp, "wb") as f:
            f.write(len(hb).to_bytes(8, "little"))
            f.write(hb)
            for k, s in layout.items():
                how, v = _init_spec(k, s)
                t = torch.empty(s, dtype=torch.float32)
                if how == "const":
                    t.fill_(v)
                else:
                    t.normal_(0.0, v, generator=g)
                f.write(t.to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
                del t
    return atomic_write(path, writer)


def build_checkpoints(folder: str, kinds=KINDS, dtype=torch.float16, seed: int = 0,
                      reuse: bool = False) -> dict:
    """Write the random full-size checkpoints into ``folder``: ``{kind: (path, seconds)}``
    (``reuse``: keep files already there with the same layout)."""
    from ..kernels.diffusion.hi3d_checkpoint import FORMAT_TAG, HI3D_STAGE2

    os.makedirs(folder, exist_ok=True)
    layouts = {k: checkpoint_layout(k) for k in kinds}
    need = sum(nbytes(lay, dtype) for k, lay in layouts.items()
               if not (reuse and os.path.isfile(os.path.join(folder, FILES[k]))))
    free = shutil.disk_usage(folder).free
    if need > free - (2 << 30):
        raise ValueError(f"the checkpoints need {need / 2**30:.1f} GiB in {folder} but only "
                         f"{free / 2**30:.1f} GiB are free; choose another folder")
    out = {}
    for i, (k, lay) in enumerate(layouts.items()):
        meta = {"orbitforge": "random weights in the layout of " + FILES[k]}
        if k == "hi3d_stage2":
            meta.update({"format": FORMAT_TAG, "config": HI3D_STAGE2.to_json()})
        t = time.time()
        p = write_random_safetensors(os.path.join(folder, FILES[k]), lay, dtype, seed + i, meta,
                                     reuse)
        out[k] = (p, time.time() - t)
    return out


# ----------------------------------------------------------------------------------------------
# the opt-in benchmark: each model in a fresh subprocess (clean peak RSS)
# ----------------------------------------------------------------------------------------------


def load_image_only(path: str):
    """ComfyUI's own ImageOnlyCheckpointLoader on ``path`` (registered as a checkpoints folder)."""
    import folder_paths
    from comfy_extras.nodes_video_model import ImageOnlyCheckpointLoader

    folder_paths.add_model_folder_path("checkpoints", os.path.dirname(path))
    return ImageOnlyCheckpointLoader().load_checkpoint(os.path.basename(path))


def _image(size: int) -> torch.Tensor:
    img = torch.ones(1, size, size, 4)
    a, b = size // 4, 3 * size // 4
    img[0, a:b, size // 3:2 * size // 3, :3] = torch.tensor([0.8, 0.2, 0.1])
    img[0, ..., 3] = 0.0
    img[0, a:b, size // 3:2 * size // 3, 3] = 1.0
    return img


def fp16_unet_on_cpu() -> None:
    """Keep UNet weights in fp16 with per-layer fp32 compute on the CPU (``--fp16-unet``)."""
    import comfy.cli_args

    comfy.cli_args.args.fp16_unet = True


def step_sv3d(model, clip_vision, vae, kind: str, size: int = 64, frames: int = 21) -> float:
    """One SV3D Sampler step (sv3d_p: HarmonyView, sv3d_u: triangle CFG); seconds."""
    from ..nodes.sv3d import SV3DSampler

    guidance = "harmonyview" if kind == "sv3d_p" else "triangle"
    t = time.time()
    views, _cams, lat = SV3DSampler().run(model, clip_vision, vae, _image(size), size, size, frames,
                                          "static", 10.0, 1e-5, 0.85, 0, 1, guidance, 1.0, 2.5,
                                          2.0, 1.0, 5, True)
    dt = time.time() - t
    if not torch.isfinite(views).all() or views.shape != (frames, size, size, 3):
        raise RuntimeError(f"SV3D Sampler returned {tuple(views.shape)} / non-finite values")
    return dt


def step_diffusion2(video, mv, clip_vision, vae, size: int = 64) -> float:
    """One Diffusion² step on a 2x2 matrix (plus its two reference sequences); seconds."""
    from ..nodes.diffusion2 import Diffusion2Sampler

    kw = dict(video_model=video, multiview_model=mv, clip_vision=clip_vision, vae=vae,  # noqa: C408
              prompt=_image(size)[..., :3], prompt_type="image", views=2, frames=2, size=size,
              elevation=10.0, multiview_cfg=2.5, video_cfg_min=1.5, video_cfg_max=3.0,
              motion_bucket_id=127, fps=25, video_cond_aug=0.02, multiview_cond_aug=1e-5,
              lambda_schedule="constant", lambda_value=0.6, logistic_k=15.0,
              view_weight_min=0.25, steps=1, vrs_steps=0, seed=0)
    t = time.time()
    out = Diffusion2Sampler().run(**kw)
    dt = time.time() - t
    if not torch.isfinite(out[0]).all() or out[0].shape[0] != 4:
        raise RuntimeError(f"Diffusion² returned {tuple(out[0].shape)} / non-finite values")
    return dt


def _worker(spec: dict) -> dict:
    """One measurement in this (fresh) process."""
    from .tiny_comfy import load_comfyui

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    load_comfyui()
    fp16_unet_on_cpu()
    folder, what, size = spec["dir"], spec["what"], int(spec["size"])
    res = {"what": what}
    t = time.time()
    if what in ("sv3d_u", "sv3d_p"):
        model, cv, vae = load_image_only(os.path.join(folder, FILES[what]))
        res["load_s"] = round(time.time() - t, 2)
        frames = int(spec.get("frames") or 21)
        res["s_per_step"] = round(step_sv3d(model, cv, vae, what, size, frames), 2)
        res["step"] = f"SV3D Sampler, 1 step, {frames} frames at {size}² (latent {size // 8}²)"
    elif what == "diffusion2":
        video, cv, vae = load_image_only(os.path.join(folder, FILES["svd_xt"]))
        mv, _cv, _vae = load_image_only(os.path.join(folder, FILES["sv3d_p"]))
        del _cv, _vae
        res["load_s"] = round(time.time() - t, 2)
        res["s_per_step"] = round(step_diffusion2(video, mv, cv, vae, size), 2)
        res["step"] = (f"Diffusion² 2x2 at {size}², 1 step: 2 reference sequences + 1 matrix "
                       "pass (svd_xt + sv3d_p)")
    elif what == "refiner":
        from ..nodes.host.models import load_refiner

        model = load_refiner(os.path.join(folder, FILES["hi3d_stage2"]))
        _m, cv, vae = load_image_only(os.path.join(folder, FILES["sv3d_p"]))
        del _m
        res["load_s"] = round(time.time() - t, 2)
        res["s_per_step"] = round(step_refiner(model, cv, vae, size), 2)
        res["step"] = f"Depth-Conditioned Refiner (Hi3D stage 2), 1 step, 4 frames at {size}²"
    else:
        raise ValueError(what)
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return res


def step_refiner(model, clip_vision, vae, size: int = 64, frames: int = 4) -> float:
    from ..nodes.refiner import DepthRefiner

    views = _image(size)[..., :3].repeat(frames, 1, 1, 1)
    depth = torch.rand(frames, size, size, 3)
    t = time.time()
    out = DepthRefiner().refine(model, clip_vision, vae, views, views[:1], size, 1, 1.0, 2.0, 1.0,
                                1e-5, 0, 0.0, "near_bright", 4, depth=depth)
    dt = time.time() - t
    if not torch.isfinite(out[0]).all():
        raise RuntimeError("the refiner returned non-finite values")
    return dt


def enabled() -> str | None:
    """None when the opt-in conditions hold, else why not."""
    if not os.environ.get("COMFYUI_PATH"):
        return "COMFYUI_PATH is unset (the loaders and networks are ComfyUI's)"
    if os.environ.get("ORBITFORGE_FULLSIZE") != "1":
        return "opt-in: set ORBITFORGE_FULLSIZE=1 (writes ~15 GiB of checkpoints, ~15 GB RAM)"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench fullsize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="write (and keep) the checkpoints here; files "
                    "already there with the same layout are reused")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    ap.add_argument("--size", type=int, default=64, help="image size of the steps (latent /8)")
    ap.add_argument("--steps", default="sv3d_u,sv3d_p,diffusion2,refiner",
                    help="measurements to run (comma list)")
    ap.add_argument("--frames", type=int, default=21, help="SV3D frames of the sampler steps "
                    "(21 needed > 24 GB of RAM here: lower it on small machines)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build-only", action="store_true", help="write the files, no steps")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="(output is always one JSON object)")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    why = enabled()
    if why:
        print(json.dumps({"bench": "fullsize", "skipped": why}))
        return 0
    from .tiny_comfy import load_comfyui

    load_comfyui()
    folder = args.dir or tempfile.mkdtemp(prefix="orbitforge_fullsize_")
    result = {"bench": "fullsize", "dir": folder, "dtype": args.dtype, "threads": args.threads,
              "files": {}, "steps": {}}
    try:
        built = build_checkpoints(folder, dtype=DTYPES[args.dtype], reuse=args.dir is not None)
        for k, (p, dt) in built.items():
            result["files"][k] = {"gib": round(os.path.getsize(p) / 2**30, 2),
                                  "write_s": round(dt, 1)}
        if not args.build_only:
            for what in [s.strip() for s in args.steps.split(",") if s.strip()]:
                spec = {"dir": folder, "what": what, "size": args.size, "threads": args.threads,
                        "frames": args.frames}
                result["steps"][what] = run_child("orbitforge.bench", "fullsize", "--worker",
                                                  json.dumps(spec))
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
