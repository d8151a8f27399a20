"""HarmonyView CD score: the official formula on a hand-computed example, invariances, refusals,
and the node inside a real ComfyUI with tiny random-weight CLIP towers (skipped without
COMFYUI_PATH)."""

import json
import math
import os
import statistics

import pytest
import torch

from orbitforge.kernels.diffusion.cd_score import (
    PROMPT_TEMPLATE,
    cd_dataset,
    cd_score,
    cd_terms,
    make_prompt,
)

# --------------------------------------------------------------------------------- formula


def test_hand_computed_example():
    # f0 = input view; t the text embedding
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.2]], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0])
    r = cd_terms(f, t, reference=0)
    c2 = 1 / math.sqrt(2)
    c3 = -1 / math.sqrt(1.04)
    dissim = [0.0, 1.0, 1 - c2, 1 - c3]
    assert r.dissim == pytest.approx(dissim, abs=1e-12)
    assert r.D == pytest.approx(sum(dissim), abs=1e-12)  # a SUM, reference term included (0)
    text = [100.0, 0.0, 100 * c2, 0.0]  # 100*max(cos, 0): the negative cosine is clipped to 0
    assert r.text_sim == pytest.approx(text, abs=1e-10)
    m = sum(text) / 4
    s_var = sum((v - m) ** 2 for v in text) / 3  # sample variance (n - 1)
    assert r.S_var == pytest.approx(s_var, rel=1e-12)
    # the official script's call
    assert r.S_var == pytest.approx(statistics.variance(text), rel=1e-12)
    assert r.cd == pytest.approx(sum(dissim) / s_var, rel=1e-12)
    assert cd_score(f, t, 0) == r.cd
    # numbers written out: D = 1 + (1 - 0.70711) + (1 + 0.98058) = 3.27347;
    # S_var = var(100, 0, 70.711, 0) = 2571.49
    assert r.D == pytest.approx(3.273474, abs=1e-5) and r.S_var == pytest.approx(2571.4887,
                                                                                 rel=1e-6)


def test_reference_index_and_report():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 8, generator=g)
    t = torch.randn(8, generator=g)
    last = cd_terms(f, t, reference=-1)
    flipped = cd_terms(f.flip(0), t, reference=0)
    assert last.reference == 5 and last.dissim[5] == pytest.approx(0.0, abs=1e-12)
    assert last.cd == pytest.approx(flipped.cd, rel=1e-12)
    assert cd_terms(f, t, reference=2).D != pytest.approx(last.D)
    rep = last.report()
    assert "<- reference" in rep and len(rep.splitlines()) == 2 + 6


def test_invariant_to_positive_scaling_and_l2_normalisation():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(16, 32, generator=g)
    t = torch.randn(1, 32, generator=g)
    base = cd_terms(f, t, 0)
    scales = torch.rand(16, 1, generator=g) * 10 + 0.1
    scaled = cd_terms(f * scales, t * 37.0, 0)
    normed = cd_terms(f / f.norm(dim=-1, keepdim=True), t / t.norm(), 0)
    for r in (scaled, normed):
        assert r.cd == pytest.approx(base.cd, rel=1e-6)  # float32 inputs
        assert r.D == pytest.approx(base.D, rel=1e-6) and r.S_var == pytest.approx(base.S_var,
                                                                                   rel=1e-6)
    # a rotation of the joint space (applied to image AND text) changes nothing either
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    rot = cd_terms(f.double() @ q, t.double() @ q, 0)
    assert rot.cd == pytest.approx(base.cd, rel=1e-6)


def test_more_diverse_views_score_higher_consistent_text_lower_variance():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(32, generator=g)
    ref = t + 0.5 * torch.randn(32, generator=g)
    near = torch.stack([ref] + [ref + 0.1 * torch.randn(32, generator=g) for _ in range(7)])
    far = torch.stack([ref] + [ref + 0.6 * torch.randn(32, generator=g) for _ in range(7)])
    assert cd_terms(far, t).D > cd_terms(near, t).D


def test_dataset_level_is_ratio_of_means():
    D = [1.0, 3.0]
    S = [10.0, 2.0]
    assert cd_dataset(D, S) == pytest.approx(2.0 / 6.0)
    assert cd_dataset(D, S) != pytest.approx((0.1 + 1.5) / 2)  # not the mean of per-sample ratios
    with pytest.raises(ValueError, match="as many"):
        cd_dataset([1.0], [1.0, 2.0])


def test_refusals():
    f = torch.randn(4, 768)
    with pytest.raises(ValueError, match=r"768-d.*1024-d"):
        cd_terms(f, torch.randn(1024))
    with pytest.raises(ValueError, match="at least 2 views"):
        cd_terms(f[:1], torch.randn(768))
    with pytest.raises(ValueError, match="out of range"):
        cd_terms(f, torch.randn(768), reference=4)
    with pytest.raises(ValueError, match="NaN"):
        cd_terms(f, torch.full((768,), float("nan")))
    with pytest.raises(ValueError, match="ONE text"):
        cd_terms(f, torch.randn(2, 768))
    # all views equally close to the text -> S_var = 0 -> infinite CD, explained in the report
    same = torch.randn(1, 8).expand(3, 8)
    r = cd_terms(same, torch.randn(8))
    assert r.S_var == 0.0 and math.isinf(r.cd) and "infinite" in r.report()


def test_prompt_official_cleanup():
    assert make_prompt("alarm_clock2") == "An image of alarm clock"
    assert make_prompt("grandfather_3_clock") == "An image of grandfather clock"
    assert make_prompt("R2D2", clean=False) == "An image of R2D2"
    assert make_prompt("cup", "a photo of a {name}.") == "a photo of a cup."
    with pytest.raises(ValueError, match="placeholder"):
        make_prompt("cup", "a photo")
    with pytest.raises(ValueError, match="empty"):
        make_prompt("_12_")


# --------------------------------------------------------------------------------- node glue
class _FakeVision:
    """Documented stand-in with core CLIP_VISION's interface: encode_image(IMAGE) ->
    {'image_embeds': [n, D]}."""

    def __init__(self, w):
        self.w = w  # [3, D]
        self.calls = 0

    def encode_image(self, images):
        self.calls += 1
        return {"image_embeds": images[..., :3].mean(dim=(1, 2)) @ self.w}


def test_node_refuses_bad_inputs_before_encoding():
    from orbitforge.nodes.cd_score import CDScore

    views = torch.rand(4, 8, 8, 3)
    fv = _FakeVision(torch.randn(3, 16))
    with pytest.raises(ValueError, match="at least 2 views"):
        CDScore().run(fv, object(), views[:1], "cup", -1, PROMPT_TEMPLATE, True)
    with pytest.raises(ValueError, match="reference_index=7"):
        CDScore().run(fv, object(), views, "cup", 7, PROMPT_TEMPLATE, True)
    with pytest.raises(ValueError, match="empty"):
        CDScore().run(fv, object(), views, "  ", -1, PROMPT_TEMPLATE, True)
    with pytest.raises(ValueError, match="not a core CLIP"):
        CDScore().run(fv, object(), views, "cup", -1, PROMPT_TEMPLATE, True)
    assert fv.calls == 0


# --------------------------------------------------------------------------------- ComfyUI
W = 32  # joint width of the tiny CLIP


def _init_(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # ComfyUI's ops skip weight init: initialise explicitly
        for n, p in module.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 0.05)
            elif "norm" in n and n.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02)


def _tiny_clip_vision(tmp_path, proj_dim):
    import comfy.clip_vision

    cfg = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32,
           "image_size": 32,
           "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64,
           "layer_norm_eps": 1e-5,
           "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3,
           "num_hidden_layers": 2,
           "patch_size": 16, "projection_dim": proj_dim, "torch_dtype": "float32"}
    p = os.path.join(tmp_path, f"tiny_clip_vision_{proj_dim}.json")
    with open(p, "w") as f:
        json.dump(cfg, f)
    cv = comfy.clip_vision.ClipVisionModel(p)
    _init_(cv.model, 1)
    return cv


def _tiny_clip_text():
    """A core CLIP (SD1 CLIP-L classes and tokenizer) with a tiny random text transformer, width
    W."""
    import comfy.sd
    import comfy.sd1_clip

    class Target:
        clip = comfy.sd1_clip.SD1ClipModel
        tokenizer = comfy.sd1_clip.SD1Tokenizer
        params = {}  # noqa: RUF012 - read-only, as core's model targets

    small = {"hidden_size": W, "intermediate_size": 64, "num_attention_heads": 2,
             "num_hidden_layers": 2,
             "projection_dim": W}
    clip = comfy.sd.CLIP(Target(), model_options={"clip_l_model_config": small})
    _init_(clip.cond_stage_model, 3)
    return clip


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from comfy_host import require_comfyui

    require_comfyui()
    from orbitforge.nodes.host.cd_score import image_embeddings, text_embedding

    d = tmp_path_factory.mktemp("cd")
    cv, clip = _tiny_clip_vision(d, W), _tiny_clip_text()
    # random towers: orient the image projection so the prompt's cosines to the views are mostly
    # positive, as with a real CLIP (otherwise max(cos, 0) clips them all to 0 and S_var = 0)
    img = image_embeddings(cv, _views())
    txt = text_embedding(clip, "An image of coffee mug")
    if float(torch.nn.functional.cosine_similarity(img, txt).mean()) < 0:
        with torch.no_grad():
            cv.model.visual_projection.weight.neg_()
    return {"cv": cv, "cv_wide": _tiny_clip_vision(d, 48), "clip": clip}


def _views(n=5):
    g = torch.Generator().manual_seed(4)
    v = torch.rand(n, 32, 32, 3, generator=g)
    v[:, 8:24, 8:24] = torch.rand(n, 1, 1, 3, generator=g)  # an "object" of varying colour per view
    return v


def test_comfy_text_embedding_is_the_projected_one(host):
    from orbitforge.nodes.host.cd_score import escape_prompt, text_embedding

    clip = host["clip"]
    txt = text_embedding(clip, "An image of cup")
    assert txt.shape == (1, W)
    # core's default pooled for SD1 CLIP-L is UNPROJECTED; ours is text_projection(unprojected)
    _, unproj = clip.encode_from_tokens(clip.tokenize("An image of cup"), return_pooled=True)
    proj = clip.cond_stage_model.clip_l.transformer.text_projection.weight
    torch.testing.assert_close(txt, unproj.float() @ proj.float().T, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(txt, unproj.float(), atol=1e-3)
    # options restored: core's default behaviour is unchanged afterwards
    _, again = clip.encode_from_tokens(clip.tokenize("An image of cup"), return_pooled=True)
    torch.testing.assert_close(again, unproj)
    # prompt-weight syntax is escaped: parentheses are literal text, not a weight
    assert not torch.allclose(text_embedding(clip, escape_prompt("An image of (cup)")), txt)


def test_comfy_node_matches_kernel_on_core_embeddings(host):
    from orbitforge.nodes.cd_score import CDScore
    from orbitforge.nodes.host.cd_score import text_embedding

    views = _views(5)
    cd, D, S, rep = CDScore().run(host["cv"], host["clip"], views,
                                  "coffee_mug2", -1, PROMPT_TEMPLATE, True)
    img = host["cv"].encode_image(views)["image_embeds"]
    txt = text_embedding(host["clip"], "An image of coffee mug")
    want = cd_terms(img, txt, reference=4)
    assert cd == pytest.approx(want.cd, rel=1e-6) and D == pytest.approx(want.D, rel=1e-6)
    assert S == pytest.approx(want.S_var, rel=1e-6) and math.isfinite(cd) and cd > 0
    assert "'An image of coffee mug'" in rep and "<- reference" in rep
    assert len(rep.splitlines()) == 3 + 5
    # reference first vs last: same numbers on the reversed batch
    cd0, *_ = CDScore().run(host["cv"], host["clip"], views.flip(0),
                            "coffee_mug2", 0, PROMPT_TEMPLATE, True)
    assert cd0 == pytest.approx(cd, rel=1e-5)


def test_comfy_node_refuses_mismatched_widths(host):
    from orbitforge.nodes.cd_score import CDScore

    with pytest.raises(ValueError, match=r"48-d.*32-d"):
        CDScore().run(host["cv_wide"], host["clip"], _views(3), "cup", -1, PROMPT_TEMPLATE, True)


def test_comfy_refuses_uninitialised_text_projection(host):
    from orbitforge.nodes.host.cd_score import text_embedding

    clip = host["clip"].clone()
    w = clip.cond_stage_model.clip_l.transformer.text_projection.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.zero_()  # as a checkpoint without text_projection leaves it (never loaded)
        with pytest.raises(ValueError, match="text_projection"):
            text_embedding(clip, "An image of cup")
    finally:
        with torch.no_grad():
            w.copy_(saved)
