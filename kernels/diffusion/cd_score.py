"""HarmonyView's CD score (consistency-diversity) on CLIP embeddings (host-free).

Official ``eval_CD_score.py`` (byeongjun-park/HarmonyView), for one generated sample with views
``f_0 .. f_{n-1}`` (``f_0`` the input/reference view) and the text prompt ``"An image of {name}"``
(underscores -> spaces, digits removed), all encoded by CLIP ViT-L/14 in its joint space:

- ``D = sum_i (1 - cos(f_0, f_i))`` -- a **sum** over every view (the reference itself adds 0);
- ``S_var = variance_{n-1}( 100 * max(cos(t, f_i), 0) )`` over every view (reference included);
- the script logs ``D`` and ``S_var`` per sample; the paper's data-set score is
  ``CD = mean(D) / mean(S_var)`` (HarmonyView 0.792 vs SyncDreamer 0.717).

``cd = D / S_var`` of a single sample is the same ratio with one sample. Cosines are invariant to
(positive) scaling of either embedding, so normalised and unnormalised embeddings give the same
score; but image and text embeddings must live in the SAME joint space (CLIP's *projected*
image and text embeddings of one CLIP model), which is checked as far as widths go.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

PROMPT_TEMPLATE = "An image of {name}"


def official_object_name(name: str) -> str:
    """The official clean-up: ``_`` -> space, digits removed (``"alarm_2"`` -> ``"alarm "``), then
    (our addition) whitespace collapsed and stripped."""
    s = str(name).replace("_", " ")
    s = "".join(c for c in s if not c.isdigit())
    return re.sub(r"\s+", " ", s).strip()


def make_prompt(name: str, template: str = PROMPT_TEMPLATE, clean: bool = True) -> str:
    if "{name}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{name}}' placeholder: e.g. "
                         f"{PROMPT_TEMPLATE!r}")
    n = official_object_name(name) if clean else str(name).strip()
    if not n:
        raise ValueError(f"object name {name!r} is empty after clean-up: give what the object is "
                         "(e.g. 'alarm clock')")
    return template.replace("{name}", n)


def check_joint_space(image_dim: int, text_dim: int) -> None:
    """Image and text embeddings must have the same width (one CLIP model's joint space)."""
    if int(image_dim) != int(text_dim):
        raise ValueError(
            f"image embeddings are {int(image_dim)}-d but the text embedding is {int(text_dim)}-d: "
            "they are not in one CLIP joint space. Use an image encoder and a text encoder of the "
            "SAME CLIP model (paper: OpenAI ViT-L/14, 768-d: clip_vision ViT-L/14 + the clip_l "
            "text encoder; or OpenCLIP ViT-H/14, 1024-d: SV3D's CLIP_VISION + an SD2.x text "
            "encoder)")


@dataclass
class CDResult:
    """Per-sample CD terms. ``dissim [n]`` = 1 - cos(f_ref, f_i); ``text_sim [n]`` = 100 max(cos(t,
    f_i), 0)."""

    D: float
    S_var: float
    cd: float
    dissim: list = field(default_factory=list)
    text_sim: list = field(default_factory=list)
    reference: int = 0

    def report(self, labels: Sequence[str] | None = None) -> str:
        n = len(self.dissim)
        labels = list(labels) if labels is not None else [str(i) for i in range(n)]
        lines = [(f"CD = D / S_var = {self.D:.5f} / {self.S_var:.5f} = {self.cd:.5f}  "
                  f"(views {n}, reference view {self.reference})"),
                 "view   1-cos(ref)   text_sim(100*max(cos,0))"]
        for i in range(n):
            mark = "  <- reference" if i == self.reference else ""
            lines.append(f"{labels[i]:>4}   {self.dissim[i]:10.5f}   "
                         f"{self.text_sim[i]:10.4f}{mark}")
        if self.S_var == 0.0:
            lines.append("note: S_var = 0 (every view equally similar to the text): CD is infinite")
        return "\n".join(lines)


def check_views(n: int, reference: int, name: str = "reference") -> int:
    """``ValueError`` unless there are at least 2 views (S_var is a variance over views) and
    ``reference`` (the argument ``name``) indexes one of them, negative counting from the end;
    returns the reference index in ``0..n-1``."""
    if n < 2:
        raise ValueError(f"{n} view(s): the CD score needs at least 2 views (a variance over "
                         "views; paper: 16)")
    if not (-n <= int(reference) < n):
        raise ValueError(f"{name}={reference} is out of range for {n} views (use 0..{n - 1}, "
                         "or -1 for the last)")
    return int(reference) % n


def _as_matrix(x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 2:
        raise ValueError(f"{what} must be [n, D] (one embedding per view), got shape "
                         f"{tuple(x.shape)}")
    return x


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine ``[n]`` in float64 (as ``F.cosine_similarity``, eps 1e-8 on each norm)."""
    a = a.double()
    b = b.double()
    na = a.norm(dim=-1).clamp_min(1e-8)
    nb = b.norm(dim=-1).clamp_min(1e-8)
    return (a * b).sum(-1) / (na * nb)


def cd_terms(image_embeds: torch.Tensor, text_embed: torch.Tensor, reference: int = 0) -> CDResult:
    """CD terms of one sample.

    ``image_embeds``: ``[n, D]`` CLIP image embeddings of the n views (n >= 2);
    ``text_embed``: ``[D]`` or ``[1, D]`` CLIP text embedding; ``reference``: index of the input
    view (negative counts from the end; SV3D orbits: -1, the last frame).
    """
    f = _as_matrix(image_embeds, "image embeddings")  # [n, D]
    t = torch.as_tensor(text_embed).detach()
    t = t.reshape(-1, t.shape[-1])
    if t.shape[0] != 1:
        raise ValueError(f"expected ONE text embedding, got {t.shape[0]}")
    check_joint_space(f.shape[-1], t.shape[-1])
    ref = check_views(f.shape[0], reference)
    if not (torch.isfinite(f).all() and torch.isfinite(t).all()):
        raise ValueError("embeddings contain NaN/inf: check the encoders (e.g. a text projection "
                         "that was never loaded)")
    t = t.to(f.device)
    dissim = 1.0 - _cos(f[ref:ref + 1].expand_as(f), f)  # [n]
    text_sim = 100.0 * _cos(t.expand_as(f), f).clamp_min(0.0)  # [n]
    D = float(dissim.sum())
    S_var = float(text_sim.var(unbiased=True))
    if S_var < 1e-12:  # identical similarities up to float64 round-off: exactly no variance
        S_var = 0.0
    cd = D / S_var if S_var > 0 else math.inf
    return CDResult(D, S_var, cd, dissim.tolist(), text_sim.tolist(), ref)


def cd_score(image_embeds: torch.Tensor, text_embed: torch.Tensor, reference: int = 0) -> float:
    """Per-sample ``D / S_var``."""
    return cd_terms(image_embeds, text_embed, reference).cd


def cd_dataset(D: Sequence[float], S_var: Sequence[float]) -> float:
    """Data-set CD of the paper: ``mean(D) / mean(S_var)`` over samples (not the mean of ratios)."""
    d = [float(v) for v in D]
    s = [float(v) for v in S_var]
    if len(d) != len(s) or not d:
        raise ValueError(f"need as many D as S_var values and at least one sample, got {len(d)} "
                         f"and {len(s)}")
    ms = sum(s) / len(s)
    return (sum(d) / len(d)) / ms if ms > 0 else math.inf
