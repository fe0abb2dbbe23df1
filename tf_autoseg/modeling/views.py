"""The two views of a training step: which pair of orderings, and the transformed inputs.

`Views` (of a `ViewsConfig` and the model's seed) draws a step's ordering pair and makes its
two views with the network's forward pass. Every draw depends only on the seed and the step
(the optimizer's iteration count), so every replica and worker draws the same, and a resumed
run draws what the uninterrupted run would have.
"""

import itertools

import tensorflow as tf

from tf_autoseg.modeling import transforms


def step_seed(seed, step, salt):
    """A stateless seed of this step: (`seed` and `salt`, the step)."""
    return tf.stack([tf.constant(seed * 7919 + salt, tf.int64), tf.cast(step, tf.int64)])


class Views:
    """A step's ordering pair and its two views (the slides' "Training procedure").

    Args:
        config: a `tf_autoseg.modeling.config.ViewsConfig`.
        seed: the model's seed.
    """

    def __init__(self, config, seed):
        self.config = config
        self.seed = seed

    def candidate_pairs(self):
        """The unordered pairs of the orderings, in a fixed order."""
        return list(itertools.combinations(self.config.orderings, 2))

    def check_crop(self, height, width, grid_stride):
        """Refuses crops the geometric transforms cannot invert on the grid."""
        geometric = self.config.geometric
        if geometric != "none" and (height % grid_stride or width % grid_stride):
            raise ValueError(
                f"`geometric` transforms need `input_shape` divisible by the grid stride "
                f"{grid_stride} so that pixels still correspond. Received: crops of "
                f"{height}x{width}"
            )
        if "rotate" in geometric and height != width:
            raise ValueError(
                "`geometric` rotations need square crops. "
                f"Received: crops of {height}x{width}, geometric={geometric!r}"
            )

    def sample_pair(self, step, agreement=None):
        """The two ordering ids of this step, as a (2,) int32 tensor, by the sampling:
        "random", "no_repeat" (every pair once per cycle) or "hard" (the pair of lowest
        `agreement()`, a callable giving one score per `candidate_pairs()` entry)."""
        sampling, ids = self.config.sampling, self.config.orderings
        seed = step_seed(self.seed, step, 1)
        if sampling == "random":
            pick = tf.random.experimental.stateless_shuffle(tf.range(len(ids)), seed)
            return tf.gather(tf.constant(ids, tf.int32), pick[:2])
        pairs = tf.constant(self.candidate_pairs(), tf.int32)
        count = len(self.candidate_pairs())
        if sampling == "no_repeat":
            step = tf.cast(step, tf.int64)
            cycle_seed = tf.stack([seed[0], step // count])
            order = tf.random.experimental.stateless_shuffle(tf.range(count), cycle_seed)
            return pairs[order[step % count]]
        return pairs[tf.argmin(agreement())]

    def make(self, forward, images, pair, step, training, augment):
        """(view 1, view 2): `forward(images, ordering, training)` under each ordering of `pair`.

        With `augment`, each view gets its own colour jitter (`photometric`) and view 2 a
        dihedral transform (`geometric`) that is inverted on its outputs, so that pixels
        still correspond.
        """
        images = transforms.to_float_images(images)
        view1, view2, transform = images, images, tf.constant(0, tf.int32)
        if augment and self.config.photometric:
            view1 = transforms.color_jitter(view1, step_seed(self.seed, step, 11))
            view2 = transforms.color_jitter(view2, step_seed(self.seed, step, 12))
        if augment and self.config.geometric != "none":
            transform = transforms.sample_dihedral(
                self.config.geometric, step_seed(self.seed, step, 13)
            )
            view2 = transforms.dihedral(view2, transform)
        out1 = forward(view1, pair[0], training)
        out2 = forward(view2, pair[1], training)
        out2 = type(out2)(
            *(None if t is None else transforms.dihedral(t, transform, inverse=True) for t in out2)
        )
        return out1, out2
