"""IIC's evaluation protocol: a confusion matrix and a one-to-one Hungarian matching.

Pixel accuracy after matching clusters to classes with
`scipy.optimize.linear_sum_assignment`, over labelled pixels only.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment


def confusion_matrix(labels, clusters, num_classes, num_clusters, ignore_index=255):
    """(num_classes, num_clusters) counts, vectorised; `ignore_index` pixels are left out.

    Labels outside [0, num_classes) other than `ignore_index` and clusters
    outside [0, num_clusters) raise a `ValueError`.
    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    clusters = np.asarray(clusters).ravel().astype(np.int64)
    if labels.shape != clusters.shape:
        raise ValueError(
            f"labels and clusters must have as many pixels. Received {labels.size} and {clusters.size}"
        )
    keep = labels != ignore_index
    labels, clusters = labels[keep], clusters[keep]
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


def hungarian_match(confusion):
    """The one-to-one cluster -> class mapping maximising matched pixels.

    Returns an int array `mapping` of length num_clusters: `mapping[c]` is the
    class of cluster c, or -1 for clusters left unmatched.
    """
    confusion = np.asarray(confusion)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    mapping = np.full(confusion.shape[1], -1, np.int64)
    mapping[cols] = rows
    return mapping


def hungarian_accuracy(confusion):
    """Pixel accuracy after the one-to-one Hungarian matching."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    if total == 0:
        raise ValueError("The confusion matrix is empty: no labelled pixel to score.")
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum() / total)
