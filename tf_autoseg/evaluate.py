"""Evaluates a trained model on a dataset, in either protocol mode.

    python -m tf_autoseg.evaluate --flagfile=experiments/<name>.cfg \\
        --model=<run dir, .keras file or SavedModel> [--eval_mode=holdout]

The data flags are the training program's (a run's flagfile describes its
data). Prints one JSON object: pixel accuracy, mIoU and per-class IoU after
Hungarian matching (and many-to-one for an overclustering head).
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import app
from absl import flags

from tf_autoseg import train  # noqa: F401 - defines the data and evaluation flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A run directory, a .keras file or a SavedModel folder.")


class SavedModelClusters:
    """A SavedModel's `serving_default` seen through `cluster_labels` (main head), for evaluation."""

    overclustering = None
    over_head = None

    def __init__(self, path):
        import tensorflow as tf

        self._signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        self.num_classes = int(self._signature.structured_outputs["probabilities"].shape[-1])

    def cluster_labels(self, images, heads=("main",)):
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            images = tf.cast(tf.clip_by_value(images, 0.0, 1.0) * 255.0 + 0.5, tf.uint8)
        return {"main": self._signature(images=images)["labels"]}


def load(path):
    """The model at `path`: a run directory, a `.keras` file or a SavedModel folder."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return SavedModelClusters(path)
    keras_file = path / "model.keras" if path.is_dir() else path
    if keras_file.suffix != ".keras" or not keras_file.exists():
        raise ValueError(
            f"--model={str(path)!r}: expected a run directory holding model.keras, a .keras "
            "file, or a SavedModel folder."
        )
    from tf_autoseg import checkpoints

    return checkpoints.load_checkpoint(keras_file)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = train.run_config()
    try:
        if not FLAGS.model:
            raise ValueError("--model is required.")
        if config["dataset"] != "synthetic" and not Path(config["data_dir"] or "").is_dir():
            raise ValueError(f"--data_dir={config['data_dir']!r}: no such directory.")
        from tf_autoseg import experiment

        model = load(FLAGS.model)
        if model.num_classes != config["classes"]:
            raise ValueError(
                f"--classes={config['classes']} but the model has {model.num_classes} clusters."
            )
        _, held_out, fit = experiment.build_data(config)
        if held_out is None:
            raise ValueError("--dataset=folder needs --masks_dir to evaluate.")
        results = experiment.evaluate(model, config, held_out[0], fit and fit[0])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(results, default=lambda v: np.asarray(v).tolist()))


if __name__ == "__main__":
    app.run(main)
