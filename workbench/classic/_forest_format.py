"""A Random Forest saved as its trees' arrays: a data-only file that cannot run code when loaded.

A pickle (``joblib.dump``) rebuilds arbitrary objects and so runs whatever a crafted file asks
for. This format stores only numbers: per tree the node arrays scikit-learn itself keeps
(children, split feature, threshold, leaf values...) in one ``.npz`` read with
``allow_pickle=False``, plus the forest's few scalars in the model card. Loading checks every
array (types, shapes, child indices pointing forward, features in range) before scikit-learn's
compiled tree walker sees it, since out-of-range indices there would read outside memory.

The rebuilt `RandomForestClassifier` is a real one (``predict_proba`` works), and its trees are
node-for-node the saved ones, so predictions are bit-identical.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

from workbench.errors import WorkbenchError

__all__ = ["FOREST_ARRAYS_NAME", "LEGACY_PICKLE_NAME", "save_forest_arrays", "load_forest_arrays"]

FOREST_ARRAYS_NAME = "forest.npz"
LEGACY_PICKLE_NAME = "forest.joblib"
FORMAT_VERSION = 1
_TREE_LEAF = -1  # scikit-learn's marker for "no child" (sklearn.tree._tree.TREE_LEAF)
_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold", "impurity", "n_node_samples",
                "weighted_n_node_samples", "missing_go_to_left")
# Fields scikit-learn needs from us; the rest default to 0 when an older file lacks them.
_REQUIRED_FIELDS = ("left_child", "right_child", "feature", "threshold")
_MAX_BYTES = 2 * 1024**3  # a forest of the sizes we train is a few MB; refuse zip bombs


def _node_dtype() -> np.dtype:
    """The node record type of the installed scikit-learn (it gained fields across versions)."""
    probe = DecisionTreeClassifier(max_depth=1).fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    return probe.tree_.__getstate__()["nodes"].dtype


def save_forest_arrays(forest: RandomForestClassifier, path: str | os.PathLike) -> dict[str, Any]:
    """Write the trees of a fitted forest to ``path`` (an ``.npz``); return the scalars for the card.

    Parameters
    ----------
    forest : RandomForestClassifier
        Fitted, single output.
    path : path-like
        The file to write (the caller makes it atomic).

    Returns
    -------
    dict
        ``format_version``, ``n_trees``, ``n_features``, ``classes`` (JSON values).
    """
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(forest.classes_)}
    for index, estimator in enumerate(forest.estimators_):
        state = estimator.tree_.__getstate__()
        nodes = state["nodes"]
        for field in nodes.dtype.names:
            arrays[f"tree{index}/{field}"] = np.ascontiguousarray(nodes[field])
        arrays[f"tree{index}/values"] = np.ascontiguousarray(state["values"])
        arrays[f"tree{index}/max_depth"] = np.asarray(state["max_depth"], np.int64)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return {
        "format_version": FORMAT_VERSION,
        "n_trees": len(forest.estimators_),
        "n_features": int(forest.n_features_in_),
        "classes": [int(c) for c in forest.classes_],
    }


def load_forest_arrays(path: str | os.PathLike, header: dict[str, Any], settings: dict[str, Any]) -> RandomForestClassifier:
    """Rebuild a forest written by `save_forest_arrays`, refusing anything that is not plain, consistent data.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    header : dict
        What `save_forest_arrays` returned (kept in the model card).
    settings : dict
        Constructor arguments for the `RandomForestClassifier` (hyper-parameters only).

    Raises
    ------
    WorkbenchError
        When the file is missing, not an ``.npz`` of plain arrays, or its trees are inconsistent.
    """
    path = Path(path)
    damaged = f"the Random Forest file {path} is damaged or was not written by the workbench"
    fix = "train the model again (`workbench train PROJECT --method forest`)"
    try:
        n_trees = _int(header["n_trees"], "n_trees")
        n_features = _int(header["n_features"], "n_features")
        classes = np.asarray([_int(c, "classes") for c in header["classes"]], np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkbenchError(f"{damaged} (its card lacks {exc}); {fix}") from exc
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise WorkbenchError(f"{path} was saved by a newer workbench (forest format {header.get('format_version')}); "
                             "upgrade the workbench to use it")
    if n_trees < 1 or n_features < 1 or classes.size < 1 or np.any(np.diff(classes) <= 0) or classes.min() < 0:
        raise WorkbenchError(f"{damaged} (n_trees {n_trees}, n_features {n_features}, classes {classes.tolist()}); {fix}")
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise WorkbenchError(f"{path} is larger than any forest the workbench writes; {fix}")
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > _MAX_BYTES:
                raise WorkbenchError(f"{path} unpacks to more than any forest the workbench writes; {fix}")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except WorkbenchError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise WorkbenchError(f"{damaged} ({exc}); {fix}") from exc

    node_dtype = _node_dtype()
    estimators = []
    for index in range(n_trees):
        estimators.append(_rebuild_tree(arrays, index, n_features, classes, node_dtype, damaged, fix, settings))
    forest = RandomForestClassifier(**settings)
    forest.estimators_ = estimators
    forest.estimator_ = DecisionTreeClassifier()
    forest.classes_ = classes
    forest.n_classes_ = int(classes.size)
    forest.n_outputs_ = 1
    forest.n_features_in_ = n_features
    return forest


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} is not an integer")
    return int(value)


def _rebuild_tree(arrays, index, n_features, classes, node_dtype, damaged, fix, settings) -> DecisionTreeClassifier:
    prefix = f"tree{index}/"

    def bad(problem: str) -> WorkbenchError:
        return WorkbenchError(f"{damaged} (tree {index}: {problem}); {fix}")

    if prefix + "values" not in arrays or any(prefix + f not in arrays for f in _REQUIRED_FIELDS):
        raise bad("arrays missing")
    values = arrays[prefix + "values"]
    n_nodes = int(values.shape[0]) if values.ndim == 3 else -1
    if values.dtype != np.float64 or values.ndim != 3 or values.shape[1:] != (1, classes.size) or n_nodes < 1:
        raise bad(f"leaf values of type {values.dtype} and shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise bad("leaf values not finite and non-negative")
    nodes = np.zeros(n_nodes, dtype=node_dtype)
    for field in node_dtype.names:
        key = prefix + field
        if key not in arrays:
            continue
        column = arrays[key]
        if column.shape != (n_nodes,) or column.dtype.kind not in "iuf" or column.dtype.kind != nodes[field].dtype.kind:
            raise bad(f"{field} of type {column.dtype} and shape {column.shape}")
        nodes[field] = column
    left, right, feature = nodes["left_child"], nodes["right_child"], nodes["feature"]
    leaf = left == _TREE_LEAF
    ids = np.arange(n_nodes)
    # Children come after their parent (scikit-learn's builders add them so), which also rules out cycles.
    split_ok = (left > ids) & (left < n_nodes) & (right > ids) & (right < n_nodes) & (feature >= 0) & (feature < n_features)
    if not np.all(np.where(leaf, right == _TREE_LEAF, split_ok)):
        raise bad("child or feature indices out of range")
    if not np.all(np.isfinite(nodes["threshold"][~leaf])):
        raise bad("split thresholds not finite")
    max_depth = arrays.get(prefix + "max_depth")
    depth = int(max_depth) if max_depth is not None and max_depth.shape == () and max_depth.dtype.kind == "i" else 0
    tree = Tree(n_features, np.asarray([classes.size], dtype=np.intp), 1)
    tree.__setstate__({"max_depth": depth, "node_count": n_nodes, "nodes": nodes, "values": values})
    estimator = DecisionTreeClassifier(
        max_depth=settings.get("max_depth"), min_samples_leaf=settings.get("min_samples_leaf", 1),
        max_features=settings.get("max_features"), class_weight=settings.get("class_weight"),
    )
    estimator.tree_ = tree
    estimator.classes_ = classes
    estimator.n_classes_ = int(classes.size)
    estimator.n_outputs_ = 1
    estimator.n_features_in_ = n_features
    estimator.max_features_ = n_features
    return estimator
