"""Gaussian mixtures with full covariances, fitted by EM in NumPy: the labelling stage's model.

k-means assumes round clusters of one size, so it splits a large, spread-out class (a road
seen near and far) before it separates two compact ones; a mixture gives each component its
own covariance and weight. Used by `tf_autoseg.modeling.labelling`, which fits one on the
network's features and the pixels' colour, without labels.
"""

import dataclasses

import numpy as np

from tf_autoseg.modeling import kmeans


@dataclasses.dataclass(frozen=True)
class Mixture:
    """K components in D dimensions: means (K, D), covariances (K, D, D), weights (K,), and the
    mean log-likelihood per point of the data it was fitted on."""

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    log_likelihood: float

    def whitening(self):
        """(W (K, D, D), b (K,)): the log-density of component k at x is
        `b[k] - |W[k] (x - means[k])|^2 / 2` (with log weight), W[k] the inverse Cholesky
        factor of its covariance."""
        factors = np.linalg.cholesky(self.covariances)
        inverse = np.linalg.inv(factors)
        dims = self.means.shape[1]
        log_det = np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(1)
        bias = np.log(self.weights) - log_det - 0.5 * dims * np.log(2 * np.pi)
        return inverse, bias

    def log_joint(self, x):
        """(N, K): log p(x, component k) of the rows of `x` (N, D)."""
        inverse, bias = self.whitening()
        centred = x[:, None, :] - self.means[None]
        whitened = np.einsum("kij,nkj->nki", inverse, centred)
        return bias[None] - 0.5 * (whitened**2).sum(-1)

    def posterior(self, x):
        """(N, K) component probabilities of the rows of `x`."""
        joint = self.log_joint(x)
        joint -= joint.max(1, keepdims=True)
        p = np.exp(joint)
        return p / p.sum(1, keepdims=True)

    def permuted(self, order):
        """The same mixture with its components in `order`."""
        return Mixture(self.means[order], self.covariances[order], self.weights[order],
                       self.log_likelihood)  # fmt: skip


def fit(x, k, seed=0, restarts=3, iterations=100, tolerance=1e-5, regularisation=1e-3,
        select="likelihood"):  # fmt: skip
    """A mixture of `k` components on the rows of `x` (N, D), the best of `restarts` EM runs.

    Each run starts from a k-means++ seeded k-means (seeds from `seed`) and runs EM until the
    mean log-likelihood gains less than `tolerance`. Covariances get `regularisation` times
    their mean variance on the diagonal, so a component never collapses. `select` says which
    run is kept: "likelihood", the highest; "agreement", the one whose partition of `x` agrees
    most with the other runs' (mean adjusted Rand index; ties by likelihood): the partition the
    restarts keep finding, not the one that fits a lucky extra mode best.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 * k:
        raise ValueError(f"A mixture of {k} needs (N >= {2 * k}, D) points. Received {x.shape}")
    if select not in ("likelihood", "agreement"):
        raise ValueError(f"`select` must be 'likelihood' or 'agreement'. Received: {select!r}")
    seeds = [seed] + [seed * 1009 + r for r in range(1, restarts)]
    runs = [
        _em(x, kmeans.kmeans(x, k, seed=s), iterations, tolerance, regularisation) for s in seeds
    ]
    if select == "likelihood" or len(runs) < 3:
        return max(runs, key=lambda mixture: mixture.log_likelihood)
    return runs[most_agreeing([run.posterior(x).argmax(1) for run in runs], k, runs)]


def adjusted_rand_index(a, b, k):
    """Adjusted Rand index of two partitions of the same points into `k` parts (int arrays):
    1 for the same partition under any renaming, about 0 for independent ones."""
    counts = np.bincount(np.asarray(a) * k + np.asarray(b), minlength=k * k).reshape(k, k)
    pairs = lambda n: n * (n - 1) / 2.0  # noqa: E731
    both = pairs(counts.astype(np.float64)).sum()
    rows, columns = pairs(counts.sum(1).astype(np.float64)).sum(), pairs(counts.sum(0)).sum()
    expected = rows * columns / max(pairs(float(counts.sum())), 1.0)
    top = 0.5 * (rows + columns) - expected
    return 1.0 if top == 0 else float((both - expected) / top)


def most_agreeing(partitions, k, runs=None):
    """Index of the partition with the highest mean adjusted Rand index to the others (ties:
    the run of higher likelihood, when `runs` are given, else the first)."""
    n = len(partitions)
    pairwise = np.zeros((n, n))  # symmetric: each pair once
    for i in range(n):
        for j in range(i + 1, n):
            pairwise[i, j] = pairwise[j, i] = adjusted_rand_index(partitions[i], partitions[j], k)
    agreement = pairwise.sum(1) / max(n - 1, 1)
    likelihood = [run.log_likelihood for run in runs] if runs is not None else [0.0] * n
    return max(range(n), key=lambda i: (round(agreement[i], 9), likelihood[i], -i))


def _em(x, means, iterations, tolerance, regularisation):
    n, dims = x.shape
    k = len(means)
    labels = kmeans.nearest(x, means)[0]
    responsibility = np.eye(k)[labels]
    previous = -np.inf
    mixture = None
    for _ in range(iterations):
        mixture = _maximise(x, responsibility, regularisation)
        joint = mixture.log_joint(x)
        top = joint.max(1, keepdims=True)
        log_likelihood = float((top[:, 0] + np.log(np.exp(joint - top).sum(1))).mean())
        mixture = dataclasses.replace(mixture, log_likelihood=log_likelihood)
        responsibility = np.exp(joint - top)
        responsibility /= responsibility.sum(1, keepdims=True)
        if log_likelihood - previous < tolerance:
            break
        previous = log_likelihood
    return mixture


def _maximise(x, responsibility, regularisation):
    n, dims = x.shape
    counts = responsibility.sum(0) + 1e-9
    means = responsibility.T @ x / counts[:, None]
    covariances = np.empty((len(counts), dims, dims))
    for c in range(len(counts)):
        centred = x - means[c]
        covariance = (responsibility[:, c, None] * centred).T @ centred / counts[c]
        floor = regularisation * max(np.trace(covariance) / dims, 1e-12)
        covariances[c] = covariance + floor * np.eye(dims)
    return Mixture(means, covariances, counts / n, -np.inf)


def agreement_order(labels, reference, k):
    """The order of `labels`' k ids that best agrees with `reference` (Hungarian matching on
    their co-occurrence): `order[j]` is the new id to take reference id j's place."""
    from scipy.optimize import linear_sum_assignment

    counts = np.bincount(reference * k + labels, minlength=k * k).reshape(k, k)
    rows, cols = linear_sum_assignment(-counts)
    order = np.empty(k, np.int64)
    order[rows] = cols
    return order
