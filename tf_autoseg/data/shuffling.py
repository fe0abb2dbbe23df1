"""The seeded reading order and per-example random draws that every input pipeline shares.

The in-memory pipeline (`tf_autoseg.data.core.in_memory_dataset`) and the streaming one
(`tf_autoseg.data.stream`) and the prepared records (`tf_autoseg.data.records`) read examples in
the order `example_stream` gives and crop and flip each with `example_step`, from its
`example_draws`, so the same seed gives them the same batches. Every draw is stateless:

- the order of epoch e is the argsort of uniform keys drawn from (seed, -1 - e);
- the crop and flips of example i in epoch e come from (seed, e * N + i).

So any iterator, on any machine, sees the same batches, a repeated epoch is reshuffled, and a
run resumed at example k starts exactly where an uninterrupted one would be, without reading
the k examples before it (`start`).
"""

import tensorflow as tf

# The epochs of a repeated stream: a finite range (not `Dataset.counter`), because tf.data
# service can split a range between its workers (`ShardingPolicy.DYNAMIC`), one epoch each.
_MANY_EPOCHS = 2**62


def epoch_order(n, seed, epoch, shuffle):
    """int64 (n,): the example indices of epoch `epoch`, shuffled from (seed, -1 - epoch)."""
    if not shuffle:
        return tf.range(n, dtype=tf.int64)
    keys = tf.random.stateless_uniform([n], tf.stack([seed, -1 - epoch]))
    return tf.cast(tf.argsort(keys, stable=True), tf.int64)


def example_stream(n, seed, shuffle, repeat, start=0, num_workers=1, worker=0):
    """The (epoch, index) int64 pairs of every example read, in reading order.

    Args:
        n: examples in one epoch.
        seed: an int64 scalar tensor (or int).
        shuffle: a new order every epoch (`epoch_order`); else 0..n-1.
        repeat: epochs without end; else one epoch.
        start: leave out the first `start` pairs (of the whole stream, before `num_workers`
            splits it). Costs nothing: the epoch and the offset in it are computed.
        num_workers, worker: keep pairs worker, worker + num_workers, ... only: with each
            of `num_workers` trainers reading batch_size / num_workers examples a step, step s
            of all of them together reads the examples of step s of a single trainer.
    """
    seed = tf.cast(seed, tf.int64)
    first_epoch, offset = divmod(int(start), n)
    if not repeat and first_epoch:
        return tf.data.Dataset.from_tensor_slices(
            (tf.zeros([0], tf.int64), tf.zeros([0], tf.int64))
        )
    last_epoch = _MANY_EPOCHS if repeat else 1
    epochs = tf.data.Dataset.range(first_epoch, last_epoch)

    def pairs(epoch):
        order = epoch_order(n, seed, epoch, shuffle)
        order = order[tf.where(epoch == first_epoch, offset, 0) :]
        return tf.data.Dataset.from_tensor_slices((tf.fill(tf.shape(order), epoch), order))

    stream = epochs.flat_map(pairs)
    return stream.shard(num_workers, worker) if num_workers > 1 else stream


def example_draws(seed, n, epoch, index):
    """The three stateless seeds of one example: its crop's top, its crop's left, its flips."""
    seed = tf.cast(seed, tf.int64)
    return tf.random.experimental.stateless_split(tf.stack([seed, epoch * n + index]), 3)


def random_window(draws, size, crop):
    """(top, left) int32 of a crop x crop window drawn inside a (height, width) `size`."""
    return tuple(
        tf.random.stateless_uniform([], draws[k], maxval=size[k] - crop + 1, dtype=tf.int32)
        for k in (0, 1)
    )


def random_flips(x, draws, vertical_flip=False):
    """`x` (H, W, ...) flipped left-right, and up-down with `vertical_flip`, each with p = 1/2."""
    flips = tf.random.stateless_uniform([2], draws[2]) < 0.5
    x = tf.cond(flips[0], lambda: tf.reverse(x, [1]), lambda: x)
    if vertical_flip:
        x = tf.cond(flips[1], lambda: tf.reverse(x, [0]), lambda: x)
    return x


def example_step(x, draws, shape, *, crop=None, size=None, centred=False, augment=False,
                 vertical_flip=False, channels=None):  # fmt: skip
    """The step every pipeline applies to one example: its window, its flips, its shape.

    Args:
        x: (H, W, C) uint8, the label band last when `channels` is given.
        draws: the example's `example_draws`.
        shape: its static (height, width, bands) after the window.
        crop: the side of a square window to cut (None: the whole of `x`): drawn inside the
            top-left `size` region of `x` (default: all of it), or its centre with `centred`.
        augment: flip left-right, and up-down with `vertical_flip`, each with p = 1/2.
        channels: the image's bands when `x` carries a label band after them: then
            (image, int32 labels) is returned.
    """
    if crop:
        size = tf.shape(x)[:2] if size is None else size
        if centred:
            top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
        else:
            top, left = random_window(draws, size, crop)
        x = x[top : top + crop, left : left + crop]
    if augment:
        x = random_flips(x, draws, vertical_flip)
    x = tf.ensure_shape(x, shape)
    if channels is None:
        return x
    return x[..., :channels], tf.cast(x[..., channels], tf.int32)


def batched(dataset, n, batch_size, drop_remainder, repeat, start=0, num_workers=1):
    """Batches `dataset` (of n examples an epoch) and states its number of batches.

    flat_map hides the length; stating it gives Keras its steps per epoch. `start` examples
    were left out by `example_stream`; each of `num_workers` keeps its share.
    """
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if repeat:
        length = tf.data.INFINITE_CARDINALITY
    else:
        left = max(n - int(start), 0) // num_workers
        length = left // batch_size if drop_remainder else -(-left // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(length)).prefetch(tf.data.AUTOTUNE)
