"""Benchmarks of the workbench beside its peers (scikit-image's trainable segmentation, MONAI's
sliding-window inference): run them all with ``python -m benchmarks.run_all`` from the checkout.

Imports point one way: `run_all` runs the ``bench_*`` modules, which use `_tasks` (the shared
tasks and the one scikit-image reference) and `_common` (configuration, tables, timing). No
module imports `run_all`.
"""
