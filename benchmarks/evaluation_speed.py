"""Time to evaluate 10^8 pixels: streaming confusion matrix plus Hungarian matching.

Labels (with 10% ignored) and cluster ids are generated once as uint8 batches
of `--batch_pixels`; the timed part is `ConfusionMatrix.update` over all
batches and `metrics.protocol`. Prints one JSON object (median of
`--repeats`).

    python -m benchmarks.evaluation_speed                    # 10^8 pixels, K=6
    python -m benchmarks.evaluation_speed --pixels 1e7 --repeats 1
"""

import json
import time

import numpy as np
from absl import app
from absl import flags

from tf_autoseg.evaluation import metrics

FLAGS = flags.FLAGS
flags.DEFINE_float("pixels", 1e8, "Pixels to evaluate.")
flags.DEFINE_integer("batch_pixels", 8 * 512 * 512, "Pixels per streamed batch.")
flags.DEFINE_integer("classes", 6, "Classes (= clusters).")
flags.DEFINE_integer("repeats", 3, "Timed runs; the median is reported.")


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    batches = int(np.ceil(FLAGS.pixels / FLAGS.batch_pixels))
    labels = rng.integers(0, FLAGS.classes, FLAGS.batch_pixels).astype(np.uint8)
    labels[rng.uniform(size=labels.size) < 0.1] = 255
    clusters = rng.integers(0, FLAGS.classes, FLAGS.batch_pixels).astype(np.uint8)
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        confusion = metrics.ConfusionMatrix(FLAGS.classes)
        for _ in range(batches):
            confusion.update(labels, clusters)
        result = metrics.protocol(confusion)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    print(
        json.dumps(
            {
                "pixels": batches * FLAGS.batch_pixels,
                "classes": FLAGS.classes,
                "seconds_median": round(seconds, 3),
                "megapixels_per_s": round(batches * FLAGS.batch_pixels / seconds / 1e6, 1),
                "pixel_accuracy": round(result["pixel_accuracy"], 4),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
