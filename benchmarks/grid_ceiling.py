"""The best scores a labelling made on a coarser grid can reach: the output stride's ceiling.

The model labels a grid `--stride` times coarser than the image (stride 4 by default) and
resizes its probabilities back bilinearly. This benchmark gives that grid the truth itself:
each cell the fractions of its pixels' classes (void left out), resized back as the model does,
argmax per pixel; and the same with each cell's majority class, repeated (nearest). Scored
against the truth at full resolution with no matching (the ids are the truth's), so what is
lost is lost to the grid alone: thin classes (poles, signs, roads between buildings) show it.

    python -m benchmarks.grid_ceiling --task=camvid_0001TP --label_classes=11 --strides=2,4,8

Tasks are `benchmarks.quality`'s (the same scored images). Prints one JSON object.
"""

import json

import numpy as np
from absl import app
from absl import flags

from benchmarks import quality  # defines the training flags and --task, --data_root

FLAGS = flags.FLAGS
flags.DEFINE_list("strides", ["2", "4", "8"], "Grid strides to score.")
flags.DEFINE_integer("label_classes", None, "Classes of the labels (default: the task's).")

IGNORE = 255


def cell_fractions(labels, num_classes, stride):
    """(H/s, W/s, K) class fractions of each s x s cell of (H, W) ids (void not counted;
    a cell of void only is all zeros). H and W are cut to multiples of `stride`."""
    h, w = labels.shape[0] // stride, labels.shape[1] // stride
    cells = labels[: h * stride, : w * stride].reshape(h, stride, w, stride).transpose(0, 2, 1, 3)
    onehot = cells.reshape(h, w, stride * stride, 1) == np.arange(num_classes)
    counts = onehot.sum(axis=2).astype(np.float32)
    return counts / np.maximum(counts.sum(axis=-1, keepdims=True), 1)


def ceilings(labels, num_classes, stride):
    """(bilinear, nearest) full-size labellings from the truth's grid of `stride`."""
    import tensorflow as tf

    fractions = cell_fractions(labels, num_classes, stride)
    size = (fractions.shape[0] * stride, fractions.shape[1] * stride)
    resized = tf.image.resize(fractions[None], size, method="bilinear")[0].numpy()
    nearest = np.repeat(np.repeat(fractions.argmax(-1), stride, 0), stride, 1)
    return resized.argmax(-1), nearest


def main(argv):
    del argv
    from tf_autoseg.evaluation import metrics
    from tf_autoseg.training import inputs
    from tf_autoseg.training import sections

    recipe = quality.config().replace(seed=0)
    if FLAGS.label_classes:  # CamVid: 3 or 11
        recipe = recipe.replace(num_classes=FLAGS.label_classes)
    k = recipe.num_classes
    held = inputs.build(sections.data_config(recipe, "eval"), labels=True)
    strides = [int(s) for s in FLAGS.strides]
    confusions = {
        (s, how): metrics.ConfusionMatrix(k) for s in strides for how in ("bilinear", "nearest")
    }
    frames = 0
    for _, batch in held[0]:
        for labels in batch.numpy().astype(np.int64):
            frames += 1
            for s in strides:
                h, w = labels.shape[0] // s * s, labels.shape[1] // s * s
                truth = labels[:h, :w]
                for how, labelled in zip(("bilinear", "nearest"), ceilings(truth, k, s)):
                    confusions[(s, how)].update(truth, labelled)
    names = held[1].class_names
    result = {"task": FLAGS.task, "num_classes": k, "frames": frames, "strides": {}}
    for (s, how), confusion in confusions.items():
        scores = metrics.scores(confusion, np.arange(k))
        result["strides"].setdefault(str(s), {})[how] = {
            "pixel_accuracy": round(scores["pixel_accuracy"], 4),
            "mean_iou": round(scores["mean_iou"], 4),
            "per_class_iou": {
                name: None if v is None else round(v, 4)
                for name, v in zip(names, scores["per_class_iou"])
            },
        }
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
