"""Trains a tiny AutoSegModel for a few steps under a strategy; saves weights and losses.

Run by tests/training/test_distributed.py in a fresh process (device layout and
TF_CONFIG must be set before TensorFlow starts):

    python tests/support/distributed_worker.py {single|mirrored|multiworker} OUT.npz STEPS
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_autoseg import AutoSegModel  # noqa: E402
from tf_autoseg.datasets import synthetic  # noqa: E402

GLOBAL_BATCH = 8


def strategy_for(mode):
    if mode == "single":
        return tf.distribute.get_strategy()
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SystemExit(f"unknown mode {mode!r}: expected single, mirrored or multiworker")


class LossHistory(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(np.asarray(logs["loss"]).ravel()[0]))


def main(mode, out, steps):
    strategy = strategy_for(mode)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = AutoSegModel(
            3,
            (16, 16, 3),
            front="residual",
            front_blocks=1,
            ar_blocks=2,
            width=8,
            stride=2,
            attention_blocks=(1,),
            attention_heads=2,
            overclustering=5,
            orderings=(0, 3, 9, 14),
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    initial = [w.copy() for w in model.get_weights()]
    images, _ = synthetic.scenes(GLOBAL_BATCH * steps, 16, 3, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(GLOBAL_BATCH)
    history = LossHistory()
    model.fit(
        dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[history], shuffle=False
    )
    weights = model.get_weights()
    np.savez(
        out,
        losses=np.array(history.losses),
        replicas=strategy.num_replicas_in_sync,
        moved=max(float(np.abs(w - i).max()) for w, i in zip(weights, initial)),
        **{f"w{i}": w for i, w in enumerate(weights)},
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
