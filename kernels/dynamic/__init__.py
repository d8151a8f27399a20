"""4D: the Diffusion² sampler of a views x time matrix of latents, and the frame-by-frame fit of
a moving object to a sequence of Gaussians.
In: V·F frames (views x time) + orbit cameras. Out: sampled frame matrices, ``Gaussians`` per
time."""
