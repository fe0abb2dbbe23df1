"""IIC's evaluation protocol: confusion matrices, Hungarian matching, accuracy and mIoU.

Pixel accuracy after a one-to-one matching of clusters to classes
(`scipy.optimize.linear_sum_assignment`), over labelled pixels only, and
mean IoU under the same matching. Two protocol modes (METHOD.md section 7):
the mapping fitted and scored on the same set (IIC's fully unsupervised
mode), or fitted on one split and scored on another. Overclustering heads
(more clusters than classes) are scored by many-to-one matching.

Everything here works on counts, so a dataset of any size streams through
`ConfusionMatrix.update` batch by batch; nothing loops over pixels in Python.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

MODES = ("same", "holdout")


class ConfusionMatrix:
    """A streaming (num_classes, num_clusters) matrix of pixel counts.

    `counts[c, k]` is the number of labelled pixels of class c assigned to
    cluster k. Pixels labelled `ignore_index` are left out.

    Example:

    >>> cm = ConfusionMatrix(2, 2)
    >>> cm.update([[0, 1, 255]], [[1, 0, 0]]).counts.tolist()  # update returns the matrix
    [[0, 1], [1, 0]]
    """

    def __init__(self, num_classes, num_clusters=None, ignore_index=255):
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be >= 1. Received: num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.num_clusters = int(num_clusters or num_classes)
        self.ignore_index = ignore_index
        self.counts = np.zeros((self.num_classes, self.num_clusters), np.int64)

    def update(self, labels, clusters):
        """Adds a batch: integer arrays of the same number of pixels."""
        self.counts += confusion_matrix(
            labels, clusters, self.num_classes, self.num_clusters, self.ignore_index
        )
        return self

    def merge(self, other):
        """Adds another matrix's counts (e.g. from another worker)."""
        self.counts += np.asarray(other.counts if isinstance(other, ConfusionMatrix) else other)
        return self


def confusion_matrix(labels, clusters, num_classes, num_clusters, ignore_index=255):
    """(num_classes, num_clusters) counts, vectorised; `ignore_index` pixels are left out.

    Labels outside [0, num_classes) other than `ignore_index` and clusters
    outside [0, num_clusters) raise a `ValueError`: a wrong class count is a
    configuration error, never a silent wrong result.
    """
    labels = np.asarray(labels).reshape(-1)
    clusters = np.asarray(clusters).reshape(-1)
    if labels.shape != clusters.shape:
        raise ValueError(
            "labels and clusters must have as many pixels. "
            f"Received {labels.size} and {clusters.size}"
        )
    keep = labels != ignore_index
    labels = labels[keep].astype(np.int64)
    clusters = clusters[keep].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}) or {ignore_index}. "
            f"Received values in [{labels.min()}, {labels.max()}]"
        )
    if clusters.size and (clusters.min() < 0 or clusters.max() >= num_clusters):
        raise ValueError(
            f"clusters must be in [0, {num_clusters}). "
            f"Received values in [{clusters.min()}, {clusters.max()}]"
        )
    counts = np.bincount(labels * num_clusters + clusters, minlength=num_classes * num_clusters)
    return counts.reshape(num_classes, num_clusters)


def _counts(confusion):
    return np.asarray(confusion.counts if isinstance(confusion, ConfusionMatrix) else confusion)


def hungarian_match(confusion):
    """The one-to-one cluster -> class mapping that maximises matched pixels.

    Returns an int array `mapping` with one entry per cluster: `mapping[k]` is
    the class of cluster k, or -1 for a cluster left unmatched (when there are
    more clusters than classes).
    """
    counts = _counts(confusion)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(counts.shape[1], -1, np.int64)
    mapping[cols] = rows
    return mapping


def many_to_one_match(confusion):
    """Each cluster to its majority class (for overclustering heads)."""
    return _counts(confusion).argmax(axis=0).astype(np.int64)


def scores(confusion, mapping):
    """Pixel accuracy, mean IoU and per-class IoU of clusters mapped to classes.

    Args:
        confusion: a `ConfusionMatrix` or (num_classes, num_clusters) counts.
        mapping: cluster -> class ids (-1 = unmatched: its pixels count as wrong).

    Returns:
        dict with `pixel_accuracy`, `mean_iou` (over classes with any labelled
        pixel) and `per_class_iou` (list; None for classes absent from the labels).
    """
    counts = _counts(confusion)
    mapping = np.asarray(mapping)
    num_classes = counts.shape[0]
    if mapping.shape != (counts.shape[1],):
        raise ValueError(
            f"`mapping` needs one class per cluster ({counts.shape[1]}). "
            f"Received shape {mapping.shape}"
        )
    total = counts.sum()
    if total == 0:
        raise ValueError("The confusion matrix is empty: no labelled pixel to score.")
    # classes x predicted classes; unmatched clusters go to an extra column.
    mapped = np.zeros((num_classes, num_classes + 1), np.int64)
    np.add.at(mapped.T, np.where(mapping < 0, num_classes, mapping), counts.T)
    correct = np.diag(mapped[:, :num_classes])
    labelled = mapped.sum(axis=1)
    predicted = mapped[:, :num_classes].sum(axis=0)
    union = labelled + predicted - correct
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(labelled > 0, correct / union, np.nan)
    return {
        "pixel_accuracy": float(correct.sum() / total),
        "mean_iou": float(np.nanmean(iou)),
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
    }


def hungarian_accuracy(confusion):
    """Pixel accuracy after the one-to-one Hungarian matching."""
    return scores(confusion, hungarian_match(confusion))["pixel_accuracy"]


def protocol(fit, score=None, many_to_one=False):
    """Scores clusters under one of the two protocol modes.

    Args:
        fit: confusion used to fit the cluster -> class mapping.
        score: confusion to score with it; None scores `fit` itself (IIC's
            fully unsupervised mode, "same"); otherwise the "holdout" mode.
        many_to_one: majority matching (overclustering) instead of Hungarian.

    Returns:
        `scores(...)` plus `mapping` (list) and `mode`.
    """
    mapping = (many_to_one_match if many_to_one else hungarian_match)(fit)
    result = scores(fit if score is None else score, mapping)
    return {**result, "mapping": mapping.tolist(), "mode": "same" if score is None else "holdout"}


def majority_baseline(confusion):
    """Scores of always answering the most frequent class."""
    counts = _counts(confusion)
    per_class = counts.sum(axis=1, keepdims=True)
    return scores(per_class, np.array([per_class.argmax()]))


def model_confusions(model, batches, num_classes, heads=("main",)):
    """{head: confusion} of a model's cluster ids (plain inference) over (images, labels) batches.

    One forward pass per batch serves every head.

    Args:
        model: an `AutoSegModel` (anything with `cluster_labels`, `num_classes`,
            `overclustering`).
        batches: iterable of (images, labels), labels with 255 = ignore.
        num_classes: classes in the labels.
        heads: "main" and/or "overclustering".
    """
    clusters = {"main": model.num_classes, "overclustering": model.overclustering}
    if "overclustering" in heads and clusters["overclustering"] is None:
        raise ValueError("`overclustering=True` needs a model with an overclustering head.")
    confusions = {head: ConfusionMatrix(num_classes, clusters[head]) for head in heads}
    for images, labels in batches:
        predicted = model.cluster_labels(images, heads=heads)
        for head in heads:
            confusions[head].update(np.asarray(labels), predicted[head].numpy())
    return confusions


def model_confusion(model, batches, num_classes, overclustering=False):
    """The confusion of one head (the overclustering one with `overclustering=True`)."""
    head = "overclustering" if overclustering else "main"
    return model_confusions(model, batches, num_classes, (head,))[head]
