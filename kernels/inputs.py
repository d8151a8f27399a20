"""Validation of the IMAGE / MASK tensors nodes receive, before any work starts.

ComfyUI's conventions: an IMAGE is a float tensor ``[B, H, W, C]`` in 0..1 (C = 3, or 4 with
alpha), a MASK is ``[B, H, W]`` in 0..1. A foreign node can hand over anything, so each check
names the input and what is wrong. Finiteness is tested in slices of at most ``_CHUNK``
elements: checking a 16k x 16k image costs a few megabytes, not another copy of it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

_CHUNK = 1 << 22  # elements per isfinite() slice (4 MB of bools)


def _describe(t) -> str:
    return f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def nonfinite_items(t: torch.Tensor) -> list:
    """Indices along dim 0 whose values are not all finite (NaN/inf), tested slice by slice."""
    for d in range(1, t.ndim):  # broadcast (stride-0) dims repeat one value: test it once
        if t.stride(d) == 0 and t.shape[d] > 1:
            t = t.narrow(d, 0, 1)
    bad = []
    for b in range(t.shape[0]):
        item = t[b]
        if item.numel() == 0:
            continue
        rows = max(1, _CHUNK // max(1, item[0].numel())) if item.ndim else 1
        for r in range(0, item.shape[0] if item.ndim else 1, rows):
            part = item[r:r + rows] if item.ndim else item
            if not bool(torch.isfinite(part).all()):
                bad.append(b)
                break
    return bad


def check_image(t, name: str, channels: Sequence[int] = (3, 4)) -> None:
    """``t`` must be a non-empty float IMAGE ``[B,H,W,C]`` with C in ``channels``, all finite."""
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[-1] not in tuple(channels):
        raise ValueError(f"{name} must be an IMAGE tensor [B,H,W,{'|'.join(map(str, channels))}], "
                         f"got {_describe(t)}")
    if 0 in t.shape:
        raise ValueError(f"{name} is empty ({list(t.shape)}); connect at least one image with "
                         "pixels")
    if not t.is_floating_point():
        raise ValueError(f"{name} has dtype {t.dtype}; an IMAGE is float 0..1 (convert it, e.g. "
                         "divide 8-bit images by 255)")
    bad = nonfinite_items(t)
    if bad:
        raise ValueError(f"{name} {bad[:10]} contain NaN/inf pixels; fix the node that produced "
                         "them")


def check_mask(t, name: str, shape: Optional[Sequence[int]] = None, allow_empty: bool = True
               ) -> None:
    """``t`` must be a float/bool MASK ``[B,H,W]`` (of ``shape`` when given), all finite; with
    ``allow_empty=False`` every mask needs an object pixel (>= 0.5)."""
    if not isinstance(t, torch.Tensor) or t.ndim != 3:
        raise ValueError(f"{name} must be a MASK tensor [B,H,W], got {_describe(t)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must be [B,H,W] = {list(shape)} to match the views, got "
                         f"{list(t.shape)}")
    if 0 in t.shape:
        raise ValueError(f"{name} is empty ({list(t.shape)})")
    if not (t.is_floating_point() or t.dtype == torch.bool):
        raise ValueError(f"{name} has dtype {t.dtype}; a MASK is float 0..1")
    bad = nonfinite_items(t) if t.is_floating_point() else []
    if bad:
        raise ValueError(f"{name} {bad[:10]} contain NaN/inf values")
    if not allow_empty:
        empty = [b for b in range(t.shape[0]) if not bool((t[b] >= 0.5).any())]
        if empty:
            raise ValueError(f"{name} of view(s) {empty[:10]} is empty (no object pixel >= 0.5); "
                             "check the mask polarity (1 = object) or remove those views")
