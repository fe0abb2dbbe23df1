"""The two views of a training step: which pair of orderings, and the transformed inputs.

Functions of an `AutoSegModel` (its orderings, sampling, transforms and seed), called by its
`train_step` and `test_step`. Every draw depends only on the model's seed and the optimizer's
step count, so every replica and worker draws the same, and a resumed run draws what the
uninterrupted run would have.
"""

import itertools

import tensorflow as tf

from tf_autoseg.modeling import losses
from tf_autoseg.modeling import transforms
from tf_autoseg.modeling.objective import all_reduce


def step_seed(model, salt):
    """A stateless seed of this step: (the model's seed and `salt`, the optimizer's step)."""
    iterations = model.optimizer.iterations if model.optimizer is not None else 0
    return tf.stack(
        [tf.constant(model.seed * 7919 + salt, tf.int64), tf.cast(iterations, tf.int64)]
    )


def candidate_pairs(orderings):
    """The unordered pairs of `orderings`, in a fixed order."""
    return list(itertools.combinations(orderings, 2))


def sample_pair(model, images=None):
    """The two ordering ids of this step, as a (2,) int32 tensor, by `model.sampling`:
    "random", "no_repeat" (every pair once per cycle) or "hard" (the pair the model agrees on
    least on `images`)."""
    seed = step_seed(model, 1)
    if model.sampling == "random":
        pick = tf.random.experimental.stateless_shuffle(tf.range(len(model.orderings)), seed)
        return tf.gather(tf.constant(model.orderings, tf.int32), pick[:2])
    pairs = tf.constant(candidate_pairs(model.orderings), tf.int32)
    count = len(candidate_pairs(model.orderings))
    if model.sampling == "no_repeat":
        step = tf.cast(model.optimizer.iterations, tf.int64)
        cycle_seed = tf.stack([seed[0], step // count])
        order = tf.random.experimental.stateless_shuffle(tf.range(count), cycle_seed)
        return pairs[order[step % count]]
    return pairs[tf.argmin(pair_agreement(model, images))]


def pair_agreement(model, images):
    """Mutual information of every candidate pair under the current weights."""
    outputs = {
        o: tf.stop_gradient(model.forward(images, o, training=False)[1]) for o in model.orderings
    }
    scores = []
    for a, b in candidate_pairs(model.orderings):
        counts = all_reduce(losses.joint_counts(outputs[a], outputs[b], model.displacement))
        scores.append(losses.mutual_information_from_counts(counts))
    return tf.stack(scores)


def two_views(model, images, pair, training, augment):
    """(view 1, view 2): `model.forward` of `images` under each ordering of `pair`.

    With `augment`, each view gets its own colour jitter (`model.photometric`) and view 2 a
    dihedral transform (`model.geometric`) that is inverted on its outputs, so that pixels
    still correspond.
    """
    images = transforms.to_float_images(images)
    view1, view2, transform = images, images, tf.constant(0, tf.int32)
    if augment and model.photometric:
        view1 = transforms.color_jitter(view1, step_seed(model, 11))
        view2 = transforms.color_jitter(view2, step_seed(model, 12))
    if augment and model.geometric != "none":
        transform = transforms.sample_dihedral(model.geometric, step_seed(model, 13))
        view2 = transforms.dihedral(view2, transform)
    out1 = model.forward(view1, pair[0], training)
    out2 = model.forward(view2, pair[1], training)
    out2 = tuple(
        None if t is None else transforms.dihedral(t, transform, inverse=True) for t in out2
    )
    return out1, out2
