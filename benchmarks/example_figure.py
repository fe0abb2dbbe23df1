"""Draws input | segmentation | ground truth for one held-out Dubai crop (the README's picture).

Clusters are coloured by the class the run's holdout mapping gives them (metrics.json), so
colours compare with the ground truth; unlabelled pixels are black.

    python -m benchmarks.example_figure --run=runs/dubai --output=docs/dubai_example.png
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

FLAGS = flags.FLAGS
DUBAI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dubai-aerial"
flags.DEFINE_string("run", "runs/dubai", "A Dubai training run (model.keras, metrics.json).")
flags.DEFINE_string("data_dir", str(DUBAI), "The Dubai aerial folder.")
flags.DEFINE_integer("tile", 7, "Held-out tile to draw from.")
flags.DEFINE_integer("index", 3, "Which 512 px crop of that tile (in file order).")
flags.DEFINE_integer("scale", 2, "Downscaling of the drawn panels.")
flags.DEFINE_string("output", "docs/dubai_example.png", "The PNG to write.")


def main(argv):
    del argv
    import keras

    import tf_autoseg  # noqa: F401 - registers the model for loading
    from tf_autoseg import checkpoints
    from tf_autoseg import data
    from tf_autoseg import segment
    from tf_autoseg import visualize

    crops, _ = data.dubai(FLAGS.data_dir, tiles=[FLAGS.tile], tile=512, batch_size=1,
                          labels=True, shuffle=False)  # fmt: skip
    image, truth = (t[0].numpy() for t in next(iter(crops.skip(FLAGS.index))))
    model = keras.saving.load_model(Path(FLAGS.run) / "model.keras")
    metrics = json.loads((Path(FLAGS.run) / "metrics.json").read_text())
    mapping = np.array(metrics["evaluation"]["main"]["mapping"])
    probs = segment.segment_probabilities(lambda b: model(tf.constant(b)).numpy(), image, 512, 64)
    predicted = mapping[probs.argmax(-1)]
    panels = [
        image[..., :3],
        visualize.colorize(predicted).numpy(),
        visualize.colorize(truth).numpy(),
    ]
    panels = [p[:: FLAGS.scale, :: FLAGS.scale] for p in panels]
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    figure = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
    png = tf.io.encode_png(figure).numpy()
    checkpoints.atomic_write(FLAGS.output, lambda tmp: Path(tmp).write_bytes(png))
    print(json.dumps({"output": FLAGS.output, "shape": list(figure.shape)}))


if __name__ == "__main__":
    app.run(main)
