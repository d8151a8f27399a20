"""Which model is this? One detector for every node that takes a core MODEL.

:func:`family` names the family of a MODEL (a ``ModelPatcher``) and never raises; :func:`require`
checks it against what a node needs and raises the ``ValueError`` that names the file to load.

Families: ``hi3d_stage2`` (the Hi3D refiner built by OrbitForgeLoadRefiner), ``sv3d_p``,
``sv3d_u``, ``svd`` (ComfyUI's ``model_base`` video classes), ``sd15``, ``sd15_inpaint``, ``sd2``,
``sdxl``, and ``other:<Class>`` for anything else. Detection order: a family declared by an
OrbitForge model class (``ORBITFORGE_FAMILY`` on the ``BaseModel`` subclass), the
``comfy.model_base`` class, the ``comfy.supported_models`` config class, then the UNet config
(``in_channels`` 9 = inpainting, ``context_dim``, ``adm_in_channels``), so stand-ins without
ComfyUI classes are named too. A 17-channel UNet that OrbitForge did not build (the Hi3D layout
loaded by another loader) is ``other:``: its conditioning would be wrong.

To add a family: detect it in :func:`_detect` and list the nodes that accept it in ``NEEDS``.
"""

from __future__ import annotations

from ...kernels.diffusion.depth_condition import STAGE2_IN_CHANNELS

SV3D = ("sv3d_p", "sv3d_u")
VIDEO = ("hi3d_stage2", "sv3d_p", "sv3d_u", "svd")
SV3D_FILES = "sv3d_p.safetensors (cameras/orbits) or sv3d_u.safetensors (fixed orbit)"


def family(model) -> str:
    """Family name of a core MODEL (see the module doc); ``other:<Class>`` for anything else."""
    try:
        return _detect(model)
    except Exception:  # noqa: BLE001 - odd objects, renamed core classes: never raise
        return f"other:{type(model).__name__}"


def _unet_config(model) -> dict:
    cfgobj = getattr(getattr(model, "model", None), "model_config", None)
    return getattr(cfgobj, "unet_config", {}) or {}


def _detect(model) -> str:
    base = getattr(model, "model", None)
    declared = getattr(type(base), "ORBITFORGE_FAMILY", None)
    if isinstance(declared, str):
        return declared
    cfgobj = getattr(base, "model_config", None)
    uc = _unet_config(model)
    name = type(cfgobj).__name__ if cfgobj is not None else type(model).__name__
    cin, ctx, adm = uc.get("in_channels"), uc.get("context_dim"), uc.get("adm_in_channels")
    if cin == STAGE2_IN_CHANNELS:
        return f"other:{name}"
    try:
        from comfy import model_base  # noqa: PLC0415
        from comfy import supported_models  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - ComfyUI absent: the unet config decides
        model_base = supported_models = None
    if model_base is not None:
        for cls, fam in ((model_base.SV3D_p, "sv3d_p"), (model_base.SV3D_u, "sv3d_u"),
                         (model_base.SVD_img2vid, "svd")):
            if isinstance(base, cls):
                return fam
    if cfgobj is None:
        return f"other:{name}"
    if supported_models is not None:
        for cls, fam in ((supported_models.SV3D_p, "sv3d_p"), (supported_models.SV3D_u, "sv3d_u"),
                         (supported_models.SVD_img2vid, "svd"),
                         ((supported_models.SDXL, supported_models.SDXLRefiner), "sdxl")):
            if isinstance(cfgobj, cls):
                return fam
    if uc.get("use_temporal_attention"):
        return {1280: "sv3d_p", 256: "sv3d_u", 768: "svd"}.get(adm, f"other:{name}")
    if ctx == 2048 or adm == 2816:
        return "sdxl"
    if ctx == 768 and adm is None:
        return "sd15_inpaint" if cin == 9 else ("sd15" if cin == 4 else f"other:{name}")
    if ctx == 1024 and adm is None:
        return "sd2"
    return f"other:{name}"


# ----------------------------------------------------------------------------------------------
# What each consumer needs, and the message when the MODEL is something else
# ----------------------------------------------------------------------------------------------


def _is_svd_unet(base) -> bool:
    try:
        from comfy import model_base  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        return False
    return isinstance(base, model_base.SVD_img2vid)


def _not_sv3d(model, fam: str) -> str:
    inner = getattr(model, "model", None)
    name = type(inner).__name__ if inner is not None else type(model).__name__
    hint = " (this is Stable Video Diffusion, not SV3D)" if _is_svd_unet(inner) else ""
    return (f"MODEL is {name}{hint}; OrbitForge SV3D nodes need {SV3D_FILES} "
            "loaded with 'Image Only Checkpoint Loader (img2vid model)'")


def _not_video(model, fam: str) -> str:
    base = getattr(model, "model", None)
    uc = _unet_config(model)
    cin, adm = uc.get("in_channels"), uc.get("adm_in_channels")
    if cin == STAGE2_IN_CHANNELS:
        return (f"this 17-channel MODEL (adm {adm}) was not loaded by OrbitForgeLoadRefiner; "
                "load the Hi3D checkpoint with that node")
    return (f"MODEL {type(base).__name__} (in_channels {cin}) is neither the Hi3D stage-2 "
            "refiner (17 channels: Hi3D's second_stage.pt or its safetensors conversion "
            "in models/orbitforge_refiner/, loaded with OrbitForgeLoadRefiner) nor an "
            "SVD/SV3D video model (sv3d_p.safetensors, sv3d_u.safetensors or "
            "svd_xt.safetensors in models/checkpoints/, loaded with Image Only Checkpoint "
            "Loader)")


def _not_ipsm_inpaint(model, fam: str) -> str:
    return (f"inpaint_model is a {fam} model; IPSM needs an SD-1.5 *inpainting* "
            "checkpoint (UNet with 9 input channels, e.g. sd-v1-5-inpainting)")


def _not_ipsm_sd(model, fam: str) -> str:
    if fam == "sd15_inpaint":
        return ("sd_model is an inpainting checkpoint; connect the plain SD-1.5 model "
                "there (the inpainting one goes into inpaint_model)")
    return f"sd_model is a {fam} model; IPSM needs an SD-1.5 checkpoint"


def _not_sv3d_sds(model, fam: str) -> str:
    return (f"sds_model is a {fam} model; SV3D SDS needs an SV3D_p or SV3D_u "
            "checkpoint (ImageOnlyCheckpointLoader)")


NEEDS = {
    "sv3d": (SV3D, _not_sv3d),  # the SV3D orbit / sampler / guider nodes
    "video": (VIDEO, _not_video),  # the refiner; Diffusion² before its per-input checks
    "ipsm_inpaint": (("sd15_inpaint",), _not_ipsm_inpaint),  # IPSM prior, inpaint_model
    "ipsm_sd": (("sd15",), _not_ipsm_sd),  # IPSM prior, sd_model
    "sv3d_sds": (SV3D, _not_sv3d_sds),  # SV3D SDS prior, sds_model
}


def require(model, allowed) -> str:
    """``family(model)`` when it is allowed, else a ``ValueError`` naming the files to load.

    ``allowed``: a key of ``NEEDS`` (its families and its tailored message) or a tuple of family
    names (generic message)."""
    if isinstance(allowed, str):
        if allowed not in NEEDS:
            raise ValueError(f"unknown model need {allowed!r}; one of {', '.join(NEEDS)}")
        families, message = NEEDS[allowed]
    else:
        families, message = tuple(allowed), None
    fam = family(model)
    if fam in families:
        return fam
    if message is None:
        raise ValueError(f"MODEL is a {fam} model; expected {' or '.join(families)}")
    raise ValueError(message(model, fam))
