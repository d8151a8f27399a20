"""Stage 1, orbit geometry: cameras (the ``CAMERAS`` type, orbit generators, projection), orbit
self-calibration from silhouettes, the visual hull of the masks, camera-path previews.
In: orbit parameters, views' masks. Out: ``Cameras``, voxel grids and hull fields for the later
stages."""
