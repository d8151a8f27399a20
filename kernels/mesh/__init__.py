"""Stage 3, meshes: depth sources (multi-view stereo, Gaussians' depth), TSDF + hull fusion,
marching cubes and finishing, neural SDF polish, vertex / texture colours, GLB/OBJ/PLY files,
ComfyUI ``MESH`` fields and the CPU reference mesh renderer.
In: views + masks + ``Cameras`` (+ ``Gaussians``). Out: ``ColoredMesh``, mesh files, renders."""
