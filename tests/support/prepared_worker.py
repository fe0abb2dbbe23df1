"""Trains a tiny AutoSegModel for a few steps on a prepared folder, as one of two
MultiWorkerMirroredStrategy workers; saves the losses, the weights and the example ids
this worker's pipeline read.

Run by tests/training/test_prepare.py in a fresh process (TF_CONFIG must be set before TensorFlow
starts):

    python tests/support/prepared_worker.py PREPARED_DIR OUT.npz STEPS
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_autoseg import AutoSegModel  # noqa: E402
from tf_autoseg.datasets import DataConfig  # noqa: E402
from tf_autoseg.training import inputs  # noqa: E402


class LossHistory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(np.asarray(logs["loss"]).ravel()[0]))


def example_ids(images):
    """The id written into every pixel of an example: channel 0 + 256 x channel 1 (the batches
    come as float32 in [0, 1] under MultiWorkerMirroredStrategy)."""
    images = np.rint(np.asarray(images) * 255).astype(np.int64)
    return (images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1]).tolist()


def main(prepared, out, steps):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    data = DataConfig(dataset="folder", prepared_dir=prepared, tile=16, batch_size=8)
    dataset, info = inputs.build(data, workers=inputs.worker_split("multiworker"))
    ids = [example_ids(batch) for batch in dataset.take(steps)]
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = AutoSegModel(
            3, (16, 16, 3), front="residual", front_blocks=1, ar_blocks=2, width=8, stride=2,
            orderings=(0, 3, 9, 14),
        )  # fmt: skip
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    initial = [w.copy() for w in model.get_weights()]
    history = LossHistory()
    model.fit(
        dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[history], shuffle=False
    )
    weights = model.get_weights()
    np.savez(
        out,
        losses=np.array(history.losses),
        ids=np.array(ids),
        replicas=strategy.num_replicas_in_sync,
        examples=info.num_examples,
        moved=max(float(np.abs(w - i).max()) for w, i in zip(weights, initial)),
        **{f"w{i}": w for i, w in enumerate(weights)},
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
