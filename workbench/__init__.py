"""Microscopy segmentation workbench: the engine (project store, training, tiling, instances, measurements).

Start from `workbench.store.Project` and `workbench.pipeline`; the command line is `workbench`.
"""

__version__ = "0.1.0"
