"""The objectives: AC (mutual information of cluster assignments) and ARL (InfoNCE).

Ouali et al., ECCV 2020, section 3.3; the AC objective is IIC's (Ji et al., ICCV
2019) with the two views given by two autoregressive orderings. Everything is
computed in float32, whatever the model's compute dtype, and the logarithms
are clamped, so one-hot assignments give finite gradients.

The joint distribution is built from unnormalised sums (`joint_counts`) so a
distributed step can all-reduce them before the non-linear part: the loss on
several replicas is then exactly the loss on the whole batch.
"""

import tensorflow as tf

from tf_autoseg import arguments

EPSILON = 1e-7


def all_reduce(value):
    """Sum over replicas (as is outside a replica context or with one replica): the joint
    counts are summed before the non-linear part, so the loss equals one device's."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _validate_pair(p1, p2, names=("p1", "p2")):
    if p1.shape.rank != 4 or p2.shape.rank != 4:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must be (batch, height, width, channels). "
            f"Received shapes {p1.shape} and {p2.shape}"
        )
    if not p1.shape.is_compatible_with(p2.shape):
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape. "
            f"Received shapes {p1.shape} and {p2.shape}"
        )


def joint_counts(p1, p2, displacement=0):
    """Unnormalised joint of two assignments: sum over batch, pixels and offsets.

    `J[k, l] = sum_{b, u, t} p1[b, u, k] * p2[b, u + t, l]` for every offset t
    in the `(2 * displacement + 1)^2` window (IIC's local spatial invariance);
    pixels whose partner falls outside the image are left out.

    Args:
        p1, p2: (batch, height, width, K) probabilities of the two views.
        displacement: non-negative int, the window's half side.

    Returns:
        A float32 (K, K) tensor.
    """
    displacement = arguments.integer("displacement", displacement, 0)
    p1 = tf.convert_to_tensor(p1)
    p2 = tf.convert_to_tensor(p2)
    _validate_pair(p1, p2)
    p1 = tf.cast(p1, tf.float32)
    p2 = tf.cast(p2, tf.float32)
    if displacement == 0:
        return tf.einsum("bhwk,bhwl->kl", p1, p2)
    # sum_t p2[u + t] over the window, zeros outside the image (so a partner outside is left
    # out), is a box filter: one depthwise convolution and one contraction, where a loop
    # over the (2d + 1)^2 offsets costs (2d + 1)^2 contractions and slices.
    channels = p2.shape[-1]
    if channels is None:
        raise ValueError("`p2` needs a known number of channels (clusters) for the window")
    side = 2 * displacement + 1
    window = tf.ones((side, side, channels, 1), tf.float32)
    p2_window = tf.nn.depthwise_conv2d(p2, window, strides=[1, 1, 1, 1], padding="SAME")
    return tf.einsum("bhwk,bhwl->kl", p1, p2_window)


def joint_counts_per_offset(p1, p2, displacement):
    """One unnormalised joint per offset of the window: (T, K, K), T = (2 * displacement + 1)^2.

    `J[t, k, l] = sum_{b, u} p1[b, u, k] * p2[b, u + t, l]`, partners outside the image left
    out. IIC's "uncollapsed" segmentation loss takes the mutual information of each offset's
    joint and averages them, so the clusters must agree at every offset of the window, where
    `joint_counts` pools the offsets into one joint first.

    Args:
        p1, p2: (batch, height, width, K) probabilities of the two views.
        displacement: non-negative int, the window's half side.

    Returns:
        A float32 (T, K, K) tensor; offsets in raster order, (-d, -d) first.
    """
    displacement = arguments.integer("displacement", displacement, 0)
    p1 = tf.cast(tf.convert_to_tensor(p1), tf.float32)
    p2 = tf.cast(tf.convert_to_tensor(p2), tf.float32)
    _validate_pair(p1, p2)
    channels = p2.shape[-1]
    if channels is None:
        raise ValueError("`p2` needs a known number of channels (clusters) for the window")
    side = 2 * displacement + 1
    # Each pixel's window of partners, zeros outside the image: (B, H, W, side * side * K),
    # laid out as (row offset, column offset, cluster).
    patches = tf.image.extract_patches(
        p2, sizes=[1, side, side, 1], strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="SAME"
    )
    patches = tf.reshape(patches, tf.concat([tf.shape(p2)[:3], [side * side, channels]], 0))
    return tf.einsum("bhwk,bhwtl->tkl", p1, patches)


def joint_from_counts(counts):
    """The symmetrised, normalised joint `(P + P^T) / 2` of unnormalised (..., K, K) counts."""
    total = tf.reduce_sum(counts, axis=(-2, -1), keepdims=True)
    joint = counts / tf.maximum(total, EPSILON)
    return (joint + tf.linalg.matrix_transpose(joint)) / 2.0


def marginal_from_counts(counts):
    """The (K,) cluster marginal of the symmetrised joint (both views' marginals agree).

    Per-offset counts (T, K, K) are pooled first.
    """
    if counts.shape.rank == 3:
        counts = tf.reduce_sum(counts, axis=0)
    return tf.reduce_sum(joint_from_counts(counts), axis=1)


def moving_marginal(batch_marginal, estimate, momentum):
    """The marginal the entropy term sees: a moving average across steps, or the batch's.

    `momentum * estimate + (1 - momentum) * batch_marginal`, with gradients through the batch
    part only; while `estimate` is all zeros (nothing recorded yet) it is the batch marginal.
    With momentum 0 it is always the batch marginal (IIC's estimate).

    Args:
        batch_marginal: (K,) marginal of this step's joint.
        estimate: (K,) previous value of the moving marginal (zeros before the first step).
        momentum: float in [0, 1).
    """
    estimate = tf.stop_gradient(tf.cast(estimate, tf.float32))
    mixed = momentum * estimate + (1.0 - momentum) * batch_marginal
    return tf.cond(tf.reduce_sum(estimate) > 0, lambda: mixed, lambda: batch_marginal)


def mutual_information_from_counts(counts, entropy_weight=1.0, marginal=None):
    """`sum P (log P - lambda log P_i - lambda log P_j)` of the symmetrised joint.

    With `entropy_weight` (lambda) 1 this is the mutual information, at most
    log K (reached by identical, balanced, confident assignments).

    Args:
        counts: (K, K) unnormalised joint (`joint_counts`), or (T, K, K) per-offset joints
            (`joint_counts_per_offset`), whose values are averaged.
        entropy_weight: lambda.
        marginal: optional (K,) marginal used for `P_i` and `P_j` instead of the joint's own
            (e.g. `moving_marginal`); None: the joint's.
    """
    joint = joint_from_counts(counts)
    if marginal is None:
        marginal_i = tf.reduce_sum(joint, axis=-1, keepdims=True)
        marginal_j = tf.reduce_sum(joint, axis=-2, keepdims=True)
    else:
        marginal_i = tf.reshape(marginal, (-1, 1))
        marginal_j = tf.reshape(marginal, (1, -1))
    log = lambda t: tf.math.log(tf.maximum(t, EPSILON))  # noqa: E731
    terms = joint * (
        log(joint) - entropy_weight * log(marginal_i) - entropy_weight * log(marginal_j)
    )
    # Per-offset joints (T, K, K): the mean over offsets of each one's value.
    return tf.reduce_sum(terms) / tf.cast(tf.reduce_prod(tf.shape(counts)[:-2]), tf.float32)


def mutual_information(p1, p2, displacement=0):
    """IIC's mutual information between two (B, H, W, K) assignment maps.

    Symmetric in its arguments; identical one-hot balanced assignments give
    log K, independent ones 0.

    Example:

    >>> p = tf.one_hot([[[0, 1], [2, 0]]], 3)
    >>> float(mutual_information(p, p))  # log 3 would need balanced clusters
    1.0397...
    """
    return mutual_information_from_counts(joint_counts(p1, p2, displacement))


def arl_loss(z1, z2, temperature=0.1, num_negatives=255, seed=None):
    """The ARL loss: InfoNCE between two views' representations, per location.

    A set of `num_negatives + 1` locations (over batch and pixels) is drawn;
    the positive of `z1` at a location is `z2` at the same location, and the
    other drawn locations of `z2` are its negatives (and symmetrically).
    Representations are L2-normalised; logits are cosine similarities over
    `temperature`. With fewer locations than requested, all are used.

    Args:
        z1, z2: (batch, height, width, D) representations of the two views.
        temperature: positive float.
        num_negatives: positive int.
        seed: optional stateless seed, a (2,) int tensor, for the draw.

    Returns:
        A float32 scalar, at least 0; log(num_negatives + 1) for random
        representations.
    """
    temperature = arguments.positive("temperature", temperature)
    num_negatives = arguments.integer("num_negatives", num_negatives, 1)
    z1 = tf.convert_to_tensor(z1)
    z2 = tf.convert_to_tensor(z2)
    _validate_pair(z1, z2, ("z1", "z2"))
    depth = z1.shape[-1]
    z1 = tf.math.l2_normalize(tf.reshape(tf.cast(z1, tf.float32), (-1, depth)), axis=-1)
    z2 = tf.math.l2_normalize(tf.reshape(tf.cast(z2, tf.float32), (-1, depth)), axis=-1)
    locations = tf.shape(z1)[0]
    count = tf.minimum(locations, num_negatives + 1)
    if seed is None:
        seed = tf.random.uniform((2,), maxval=2**31 - 1, dtype=tf.int32)
    picks = tf.random.experimental.stateless_shuffle(tf.range(locations), seed)[:count]
    a, b = tf.gather(z1, picks), tf.gather(z2, picks)
    logits = tf.matmul(a, b, transpose_b=True) / temperature
    labels = tf.range(count)
    forward = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    backward = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.transpose(logits))
    return tf.reduce_mean(forward + backward) / 2.0
