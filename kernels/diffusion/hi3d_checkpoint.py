"""Hi3D stage-2 checkpoint: safe reading, validation against the SVD video-UNet layout, and the
conversion to safetensors (``python -m orbitforge convert-hi3d IN OUT`` -> :func:`convert_main`).

Facts from the official code (yanghb22-fdu/Hi3D-Official):

* ``vtdm/vtdm_gen_stage2_degradeImage.py`` ``init_from_ckpt``: a ``.pt`` checkpoint is a
  DeepSpeed-style pickle ``{'module': {'module.<key>': tensor}}``; ``<key>`` are the
  ``DiffusionEngine`` state-dict keys, the UNet under ``model.diffusion_model.`` (beside it the
  conditioner: OpenCLIP, MiDaS, a VAE encoder; and ``first_stage_model.``, the VAE).
* ``configs/inference-v02.yaml``: ``VideoUNet`` with in_channels 17, out 4, model_channels 320,
  channel_mult (1, 2, 4, 4), 2 res blocks, attention at levels 0-2, transformer depth 1,
  context_dim 1024, adm_in_channels 512, temporal res blocks/attention (SVD's architecture).
* ``tool_make_init_svd_to_vid2vid.py``: the 17 input channels are SVD's 8 with 9 zero-initialised
  depth channels inserted after the noisy latent; label_emb 512 = a new elevation 256 + SVD's
  cond_aug 256.

Safety: pickles are only ever read with ``torch.load(weights_only=True)`` (no code executed);
anything other than (nested dicts of) tensors is refused with a clear error.

The layout below is derived from the architecture (the SVD ``VideoUNet`` state-dict naming, which
ComfyUI loads unchanged from ``svd_xt.safetensors``); an integration test checks it key-by-key
against ComfyUI's own ``VideoUNet``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..atomic import atomic_write

UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FORMAT_TAG = "orbitforge-hi3d-stage2-unet"
Layout = Dict[str, Tuple[int, ...]]


@dataclass(frozen=True)
class UNetConfig:
    """The shape-relevant hyper-parameters of an SVD-style video UNet."""

    in_channels: int = 17
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: Tuple[bool, ...] = (True, True, True, False)
    transformer_depth: int = 1
    context_dim: int = 1024
    adm_in_channels: int = 512

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(s: str) -> "UNetConfig":
        d = json.loads(s)
        d["channel_mult"] = tuple(d["channel_mult"])
        d["attention_levels"] = tuple(bool(v) for v in d["attention_levels"])
        return UNetConfig(**d)


HI3D_STAGE2 = UNetConfig()  # configs/inference-v02.yaml


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------


def _lin(out: Layout, p: str, o: int, i: int, bias: bool = True):
    out[p + ".weight"] = (o, i)
    if bias:
        out[p + ".bias"] = (o,)


def _norm(out: Layout, p: str, c: int):
    out[p + ".weight"] = (c,)
    out[p + ".bias"] = (c,)


def _conv(out: Layout, p: str, o: int, i: int, k: Tuple[int, ...]):
    out[p + ".weight"] = (o, i) + k
    out[p + ".bias"] = (o,)


def _resblock(out: Layout, p: str, cin: int, cout: int, emb: int):
    _norm(out, p + ".in_layers.0", cin)
    _conv(out, p + ".in_layers.2", cout, cin, (3, 3))
    _lin(out, p + ".emb_layers.1", cout, emb)
    _norm(out, p + ".out_layers.0", cout)
    _conv(out, p + ".out_layers.3", cout, cout, (3, 3))
    if cin != cout:
        _conv(out, p + ".skip_connection", cout, cin, (1, 1))
    t = p + ".time_stack"  # temporal res block, kernel (3, 1, 1)
    _norm(out, t + ".in_layers.0", cout)
    _conv(out, t + ".in_layers.2", cout, cout, (3, 1, 1))
    _lin(out, t + ".emb_layers.1", cout, emb)
    _norm(out, t + ".out_layers.0", cout)
    _conv(out, t + ".out_layers.3", cout, cout, (3, 1, 1))
    out[p + ".time_mixer.mix_factor"] = (1,)


def _attn(out: Layout, p: str, c: int, ctx: int):
    _lin(out, p + ".to_q", c, c, bias=False)
    _lin(out, p + ".to_k", c, ctx, bias=False)
    _lin(out, p + ".to_v", c, ctx, bias=False)
    _lin(out, p + ".to_out.0", c, c)


def _ff(out: Layout, p: str, c: int):
    _lin(out, p + ".net.0.proj", 8 * c, c)  # GEGLU, mult 4
    _lin(out, p + ".net.2", c, 4 * c)


def _transformer(out: Layout, p: str, c: int, depth: int, ctx: int):
    _norm(out, p + ".norm", c)
    _lin(out, p + ".proj_in", c, c)
    for d in range(depth):
        b = f"{p}.transformer_blocks.{d}"
        _attn(out, b + ".attn1", c, c)
        _ff(out, b + ".ff", c)
        _attn(out, b + ".attn2", c, ctx)
        for n in (1, 2, 3):
            _norm(out, f"{b}.norm{n}", c)
        t = f"{p}.time_stack.{d}"  # temporal transformer (extra_ff_mix_layer, cross-attn on)
        _norm(out, t + ".norm_in", c)
        _ff(out, t + ".ff_in", c)
        _attn(out, t + ".attn1", c, c)
        _ff(out, t + ".ff", c)
        _attn(out, t + ".attn2", c, ctx)
        for n in (1, 2, 3):
            _norm(out, f"{t}.norm{n}", c)
    _lin(out, p + ".proj_out", c, c)
    _lin(out, p + ".time_pos_embed.0", 4 * c, c)
    _lin(out, p + ".time_pos_embed.2", c, 4 * c)
    out[p + ".time_mixer.mix_factor"] = (1,)


def unet_layout(cfg: UNetConfig = HI3D_STAGE2) -> Layout:
    """Every key and shape of the video UNet's state dict (keys relative to the UNet)."""
    mc, emb, ctx = cfg.model_channels, 4 * cfg.model_channels, cfg.context_dim
    if len(cfg.attention_levels) != len(cfg.channel_mult):
        raise ValueError("attention_levels and channel_mult must have the same length")
    out: Layout = {}
    _lin(out, "time_embed.0", emb, mc)
    _lin(out, "time_embed.2", emb, emb)
    _lin(out, "label_emb.0.0", emb, cfg.adm_in_channels)
    _lin(out, "label_emb.0.2", emb, emb)
    _conv(out, "input_blocks.0.0", mc, cfg.in_channels, (3, 3))
    skips = [mc]
    ch, idx = mc, 1
    levels = len(cfg.channel_mult)
    for lvl, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            _resblock(out, f"input_blocks.{idx}.0", ch, mult * mc, emb)
            ch = mult * mc
            if cfg.attention_levels[lvl]:
                _transformer(out, f"input_blocks.{idx}.1", ch, cfg.transformer_depth, ctx)
            skips.append(ch)
            idx += 1
        if lvl != levels - 1:
            _conv(out, f"input_blocks.{idx}.0.op", ch, ch, (3, 3))
            skips.append(ch)
            idx += 1
    _resblock(out, "middle_block.0", ch, ch, emb)
    _transformer(out, "middle_block.1", ch, cfg.transformer_depth, ctx)
    _resblock(out, "middle_block.2", ch, ch, emb)
    idx = 0
    for lvl in reversed(range(levels)):
        mult = cfg.channel_mult[lvl]
        for i in range(cfg.num_res_blocks + 1):
            cin = ch + skips.pop()
            _resblock(out, f"output_blocks.{idx}.0", cin, mult * mc, emb)
            ch = mult * mc
            sub = 1
            if cfg.attention_levels[lvl]:
                _transformer(out, f"output_blocks.{idx}.1", ch, cfg.transformer_depth, ctx)
                sub = 2
            if lvl > 0 and i == cfg.num_res_blocks:
                _conv(out, f"output_blocks.{idx}.{sub}.conv", ch, ch, (3, 3))
            idx += 1
    _norm(out, "out.0", mc)
    _conv(out, "out.2", cfg.out_channels, mc, (3, 3))
    return out


# ----------------------------------------------------------------------------------------------
# Config inference and validation
# ----------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint that is not a (valid) Hi3D stage-2 UNet; the message lists what differs."""


def _fmt_list(items: Sequence[str], limit: int = 12) -> str:
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def infer_config(sd: Dict[str, torch.Tensor]) -> UNetConfig:
    """Read the hyper-parameters of a video UNet from its (UNet-relative) state dict."""
    need = ["input_blocks.0.0.weight", "out.2.weight", "label_emb.0.0.weight",
            "time_embed.0.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"not an SVD-style video UNet: missing {_fmt_list(missing)}")

    def dim(key: str, i: int, ndim: int) -> int:
        t = sd[key]
        if t.ndim != ndim or int(t.shape[i]) < 1:
            raise CheckpointError(f"{key} has shape {tuple(t.shape)}; a video UNet has a "
                                  f"{ndim}-d tensor there")
        return int(t.shape[i])

    mc, cin = dim("input_blocks.0.0.weight", 0, 4), dim("input_blocks.0.0.weight", 1, 4)
    mults, attn, depth, ctx = [], [], 1, None
    nrb_per_level, cur_nrb, cur_mult, cur_attn = [], 0, None, False
    idx = 1
    while any(k.startswith(f"input_blocks.{idx}.") for k in sd):
        if f"input_blocks.{idx}.0.op.weight" in sd:
            mults.append(cur_mult)
            attn.append(cur_attn)
            nrb_per_level.append(cur_nrb)
            cur_nrb, cur_attn = 0, False
        else:
            key = f"input_blocks.{idx}.0.out_layers.3.weight"
            if key not in sd:
                raise CheckpointError(f"input block {idx} is neither a res block nor a "
                                      f"downsample (no {key})")
            cur_mult = dim(key, 0, 4) // mc
            cur_nrb += 1
            if f"input_blocks.{idx}.1.proj_in.weight" in sd:
                cur_attn = True
                blocks = f"input_blocks.{idx}.1.transformer_blocks."
                depth = sum(1 for k in sd if k.startswith(blocks)
                            and k.endswith(".attn1.to_q.weight"))
                kk = f"input_blocks.{idx}.1.transformer_blocks.0.attn2.to_k.weight"
                if ctx is None and kk in sd:
                    ctx = dim(kk, 1, 2)
        idx += 1
    mults.append(cur_mult)
    attn.append(cur_attn)
    nrb_per_level.append(cur_nrb)
    if None in mults or len(set(nrb_per_level)) != 1:
        raise CheckpointError(f"unsupported UNet structure: res blocks per level {nrb_per_level}")
    if ctx is None:
        kk = "middle_block.1.transformer_blocks.0.attn2.to_k.weight"
        ctx = dim(kk, 1, 2) if kk in sd else 1024
    return UNetConfig(in_channels=cin, out_channels=dim("out.2.weight", 0, 4),
                      model_channels=mc, channel_mult=tuple(mults), num_res_blocks=nrb_per_level[0],
                      attention_levels=tuple(attn), transformer_depth=max(depth, 1),
                      context_dim=ctx, adm_in_channels=dim("label_emb.0.0.weight", 1, 2))


def compare_layout(sd: Dict[str, torch.Tensor], expected: Layout) -> Tuple[list, list, list]:
    """(missing keys, unexpected keys, 'key: got (..) expected (..)' shape mismatches)."""
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    shapes = sorted(f"{k}: got {tuple(sd[k].shape)} expected {expected[k]}"
                    for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k]))
    return missing, unexpected, shapes


def validate_stage2(sd: Dict[str, torch.Tensor], require_official: bool = False) -> UNetConfig:
    """Check a UNet state dict is a Hi3D stage-2 refiner (17 in, 4 out, vector 512) whose every
    key and shape matches the video-UNet layout; returns its config or raises CheckpointError."""
    cfg = infer_config(sd)
    problems = []
    if cfg.in_channels != 17:
        problems.append(f"input conv input_blocks.0.0.weight has {cfg.in_channels} input channels, "
                        "the Hi3D stage-2 refiner has 17 (latent 4 + depth 9 + condition latent "
                        "4); an 8-channel model is SVD/SV3D: use it in anchored mode instead")
    if cfg.out_channels != 4:
        problems.append(f"out.2.weight has {cfg.out_channels} output channels, expected 4")
    if cfg.adm_in_channels != 512:
        problems.append(f"label_emb.0.0.weight takes a {cfg.adm_in_channels}-d vector, the stage-2 "
                        "refiner takes 512 (elevation 256 + cond_aug 256)")
    if require_official and (cfg.model_channels, cfg.channel_mult, cfg.num_res_blocks,
                             cfg.context_dim) != (320, (1, 2, 4, 4), 2, 1024):
        problems.append(f"architecture {cfg} differs from the official configs/inference-v02.yaml")
    missing, unexpected, shapes = compare_layout(sd, unet_layout(cfg))
    if missing:
        problems.append(f"{len(missing)} missing keys: {_fmt_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_fmt_list(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_fmt_list(shapes, 8)}")
    not_float = sorted(f"{k} ({v.dtype})" for k, v in sd.items() if not v.is_floating_point())
    if not_float:
        problems.append(f"{len(not_float)} tensors are not floating point: {_fmt_list(not_float)}")
    if problems:
        raise CheckpointError("not a Hi3D stage-2 UNet checkpoint:\n- " + "\n- ".join(problems))
    return cfg


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


class _CappedReader:
    """A file whose ``read(n)`` never asks for more than what is left: the pickle reader
    allocates the length a (corrupt) record claims before reading it, so a flipped length byte
    would otherwise reserve gigabytes for a small file."""

    def __init__(self, f, size: int):
        self._f, self._size = f, size

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, *args) -> bytes:
        return self._f.readline(*args)

    def seek(self, *args) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()


def _load_pickle(path: str) -> object:
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # torch's zip format: records checked by the reader
                return torch.load(path, map_location="cpu", weights_only=True)
            f.seek(0)  # the legacy (torch < 1.6) format, read through size-capped reads
            return torch.load(_CappedReader(f, os.fstat(f.fileno()).st_size),
                              map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused. The pickle holds objects other than tensors and plain containers, "
            "and OrbitForge never runs pickled code (torch.load weights_only=True said: "
            f"{str(e).splitlines()[0] if str(e) else e!r}). Convert it to safetensors in a trusted "
            "environment, or use the original second_stage.pt.") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file makes torch.load raise many types
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint (corrupt or "
                              f"truncated? {type(e).__name__}: {msg})") from None


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def plain_state_dict(obj: object, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Unwrap ``{'module': ...}`` (DeepSpeed) / ``{'state_dict': ...}`` (Lightning), strip
    ``module.`` prefixes, and insist on a flat str -> Tensor mapping."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a state dict (a dict of tensors), got "
                              f"{type(obj).__name__}")
    for wrapper in ("module", "state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
            if any(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items()
           if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{source}: not a plain state dict; non-tensor entries: "
                              f"{_fmt_list(bad)}")
    if not obj:
        raise CheckpointError(f"{source}: holds no tensors")
    out = {}
    for k, v in obj.items():
        kk = _strip_module(k)
        if kk in out:
            raise CheckpointError(f"{source}: key {kk!r} appears twice after stripping 'module.'")
        out[kk] = v
    return out


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Read ``.safetensors`` or a torch pickle (weights only) -> (flat state dict, metadata)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open  # noqa: PLC0415

        sd, meta = {}, {}
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    sd[k] = f.get_tensor(k)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        return plain_state_dict(sd, path), meta
    return plain_state_dict(_load_pickle(path), path), {}


def extract_unet(sd: Dict[str, torch.Tensor],
                 source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The UNet part of a full engine state dict (``model.diffusion_model.*``), or ``sd`` itself
    when it already is a bare UNet state dict."""
    for p in UNET_PREFIXES:
        sub = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if sub:
            return sub
    if "input_blocks.0.0.weight" in sd:
        return dict(sd)
    groups = sorted({k.split(".")[0] for k in sd})
    raise CheckpointError(f"{source}: no UNet weights found (no 'model.diffusion_model.' keys); "
                          f"top-level key groups: {_fmt_list(groups)}")


def load_stage2_unet(path: str, require_official: bool = False
                     ) -> Tuple[Dict[str, torch.Tensor], UNetConfig]:
    """Read + strip + extract + validate: the stage-2 UNet state dict (UNet-relative keys)."""
    sd, _ = read_state_dict(path)
    return stage2_from_state_dict(sd, path, require_official)


def stage2_from_state_dict(sd: Dict[str, torch.Tensor], source: str, require_official: bool = False
                           ) -> Tuple[Dict[str, torch.Tensor], UNetConfig]:
    """Extract + validate a read checkpoint; errors are prefixed with ``source`` (the file)."""
    unet = extract_unet(sd, source)
    try:
        cfg = validate_stage2(unet, require_official)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    return unet, cfg


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


_DTYPES = {"keep": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_unet_safetensors(unet: Dict[str, torch.Tensor], out_path: str, cfg: UNetConfig,
                          source: str = "", dtype: Optional[torch.dtype] = None) -> None:
    """Write UNet-relative keys to safetensors atomically (temp file + os.replace)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors = {k: (v if dtype is None or not v.is_floating_point() else v.to(dtype)).contiguous()
               for k, v in unet.items()}
    meta = {"format": FORMAT_TAG, "config": cfg.to_json(), "source": os.path.basename(source)}
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    atomic_write(out_path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def convert(in_path: str, out_path: str, dtype: str = "keep", require_official: bool = False
            ) -> UNetConfig:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} must be one of {list(_DTYPES)}")
    if not out_path.lower().endswith(".safetensors"):
        raise ValueError(f"output {out_path!r} must end in .safetensors")
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("input and output are the same file")
    unet, cfg = load_stage2_unet(in_path, require_official)
    save_unet_safetensors(unet, out_path, cfg, in_path, _DTYPES[dtype])
    return cfg


def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m orbitforge convert-hi3d IN OUT [--dtype keep|fp32|fp16|bf16] [--official]``."""
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(
        prog="python -m orbitforge convert-hi3d",
        description="Convert Hi3D's second_stage.pt (DeepSpeed pickle, read with "
                    "weights_only=True) to a safetensors file holding only the stage-2 UNet.")
    ap.add_argument("input", help="second_stage.pt (or any stage-2 checkpoint / safetensors)")
    ap.add_argument("output", help="output .safetensors (e.g. "
                                   "models/orbitforge_refiner/hi3d_stage2.safetensors)")
    ap.add_argument("--dtype", default="keep", choices=list(_DTYPES),
                    help="cast floats (default keep)")
    ap.add_argument("--official", action="store_true",
                    help="also require the exact official architecture (320 channels, ...)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        cfg = convert(args.input, args.output, args.dtype, args.official)
    except (CheckpointError, ValueError) as e:
        print(f"convert-hi3d: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: Hi3D stage-2 UNet, {len(unet_layout(cfg))} tensors, config "
          f"{cfg.to_json()}")
    return 0
