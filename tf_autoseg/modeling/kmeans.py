"""k-means: Lloyd's algorithm with k-means++ seeding, in NumPy.

Used by the baselines (k-means on pixels or on a network's features) and by the model's
label-free cluster centres (`AutoSegModel.fit_labelling`).
"""

import numpy as np


def kmeans(features, k, iterations=50, seed=0, tolerance=1e-6, restarts=1):
    """Centres of `k` clusters of the rows of `features` (N, D), as (k, D) float64.

    k-means++ seeding, then Lloyd iterations until the centres move less than
    `tolerance` (relative) or `iterations` is reached. Empty clusters are
    reseeded on the farthest points. With `restarts` > 1, that many seeded runs are made and
    the centres of the lowest inertia (sum of squared distances) are kept: no label is read,
    and one unlucky seeding no longer decides the partition.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < k:
        raise ValueError(f"k-means needs (N >= k={k}, D) features. Received shape {x.shape}")
    seeds = [seed] + [seed * 1009 + r for r in range(1, restarts)]  # the first is `seed`'s
    runs = [_lloyd(x, k, iterations, s, tolerance) for s in seeds]
    return min(runs, key=lambda centres: nearest(x, centres)[1].sum())


def _lloyd(x, k, iterations, seed, tolerance):
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    distance = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = distance.sum()
        index = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centres.append(x[index])
        distance = np.minimum(distance, ((x - x[index]) ** 2).sum(1))
    centres = np.stack(centres)
    for _ in range(iterations):
        labels, distance = nearest(x, centres)
        moved = centres.copy()
        for c in range(k):
            members = x[labels == c]
            moved[c] = members.mean(0) if len(members) else x[distance.argmax()]
        shift = np.abs(moved - centres).max()
        centres = moved
        if shift <= tolerance * (np.abs(centres).max() + 1e-12):
            break
    return centres


def nearest(x, centres):
    """(ids, squared distances) of the nearest centre of each row of `x`."""
    d = (x**2).sum(1, keepdims=True) - 2 * x @ centres.T + (centres**2).sum(1)
    return d.argmin(1), d.min(1)


def assign(features, centres, chunk=1 << 20):
    """Nearest-centre ids of the rows of `features`, computed in chunks."""
    x = np.asarray(features, np.float64)
    return np.concatenate(
        [nearest(x[i : i + chunk], centres)[0] for i in range(0, len(x), chunk)]
    ).astype(np.int64)


def sample_pool(arrays, samples, per_batch, rng):
    """A bounded, seeded sample of rows to fit k-means on: at most `per_batch` random rows of
    each (n, D) array of `arrays` (memory stays bounded on large sets), then `samples` of those.

    The one sampler of the label-free centres, the k-means baselines and the benchmarks.
    Raises a ValueError when `arrays` is empty.
    """
    pool = [a[rng.choice(len(a), min(per_batch, len(a)), replace=False)] for a in arrays]
    if not pool:
        raise ValueError("No batch to sample k-means points from")
    pool = np.concatenate(pool)
    return pool[rng.choice(len(pool), min(samples, len(pool)), replace=False)]
