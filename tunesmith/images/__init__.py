"""Image classification: sources, cleaning, GX suites, preprocessing, baseline, grids.

Nothing here imports torch at module level; the training-side transforms live in
`tunesmith.training.images` so the training core keeps its small dependency set.
"""
