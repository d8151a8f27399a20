"""Small scenes shared by the tests."""

import torch


def sample_scene(n_views: int = 3, size: int = 32):
    """``n_views`` evenly spaced views of the bundled sample orbit at ``size``² (fast fits):
    images ``[V,H,W,3]``, masks ``[V,H,W]``, cameras."""
    from orbitforge.kernels.sample import load_sample_orbit

    images, masks, cams = load_sample_orbit()
    idx = [round(k * 21 / n_views) % 21 for k in range(n_views)]
    img = torch.nn.functional.interpolate(images[idx].movedim(-1, 1), size=(size, size),
                                          mode="area").movedim(1, -1).contiguous()
    msk = torch.nn.functional.interpolate(masks[idx][:, None], size=(size, size),
                                          mode="area")[:, 0].contiguous()
    return img, msk, cams[idx].resized(size, size)
