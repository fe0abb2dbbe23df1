"""Draws input | segmentation | ground truth for one held-out Dubai crop or CamVid street frame.

The README's picture. The model is loaded by `tf_autoseg.serving.loading` (a run directory, a `.keras`
file or a SavedModel) and sees the frame at full resolution: a model trained on shrunk images
shrinks its input itself (`input_downsample`). Clusters are coloured by the class the run's
mapping gives them (`metrics.json` beside the model), so colours compare with the ground truth;
without one, by the Hungarian mapping fitted on the drawn frame itself. Unlabelled pixels and
unmatched clusters are black.

    python -m benchmarks.example_figure --run=runs/dubai --output=docs/dubai_example.png
    python -m benchmarks.example_figure --dataset=camvid --run=runs/camvid \\
        --output=docs/camvid_example.png

Prints one JSON object: the output path, the figure's shape and where the mapping came from.
"""

import json
from pathlib import Path

import numpy as np
from absl import app
from absl import flags

FLAGS = flags.FLAGS
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_DIRS = {"dubai": SHARED / "dubai-aerial", "camvid": SHARED / "camvid-trainval"}
GAP = 6  # white pixels between panels
flags.DEFINE_enum("dataset", "dubai", sorted(DATA_DIRS), "Where the drawn frame comes from.")
flags.DEFINE_string("run", "runs/dubai", "A run directory (model.keras, metrics.json), a .keras "
                    "file or a SavedModel.")  # fmt: skip
flags.DEFINE_string("data_dir", None, "The dataset folder (default: ../shared/data/<dataset>).")
flags.DEFINE_integer("tile", 7, "Dubai: the held-out tile-N folder to draw from.")
flags.DEFINE_integer("crop", 512, "Dubai: side of the crops the tile's images are cut into.")
flags.DEFINE_integer("classes", None, "CamVid: 3 or 11 classes (default: the model's K).")
flags.DEFINE_integer("index", 3, "Which crop (Dubai) or val-* frame (CamVid), in file order.")
flags.DEFINE_integer("scale", 2, "Downscaling of the drawn panels.")
flags.DEFINE_string("output", "docs/dubai_example.png", "The PNG to write.")
flags.DEFINE_string("sequence", None, "CamVid: draw from this video sequence's frames (every "
                    "split) instead of the val-* frames.")  # fmt: skip
flags.DEFINE_bool("adapt", False, "A .keras model with a label-free stage: refit it (labels "
                  "unread) on the frames the drawn one comes from first, as evaluate does.")  # fmt: skip
flags.DEFINE_bool("with_head", False, "Add a panel: the main head's clusters (the paper's "
                  "labels), mapped on the drawn frame.")  # fmt: skip


def frames_of(dataset, data_dir, classes, tile=7, crop=512, sequence=None):
    """(dataset of (image, truth) batches of one, classes): the held-out frames drawn from.

    Dubai: `tile-<tile>` cut into `crop` px pieces; CamVid: the `val-*` frames whole, or
    every frame of `sequence`, with `classes` (3 or 11) classes.
    """
    from tf_autoseg.datasets import camvid
    from tf_autoseg.datasets import dubai

    if dataset == "dubai":
        frames, info = dubai.load(data_dir, tiles=[tile], tile=crop, batch_size=1, labels=True,
                                  shuffle=False)  # fmt: skip
    else:
        sequences = [sequence] if sequence else None
        frames, info = camvid.load(data_dir, "val", classes, batch_size=1, labels=True,
                                   shuffle=False, sequences=sequences)  # fmt: skip
    return frames, info.num_classes


def read_frame(dataset, data_dir, index, classes, tile=7, crop=512, sequence=None):
    """(image uint8 (H, W, C), truth uint8 (H, W), classes) of one held-out frame, full size:
    the `index`-th of `frames_of`."""
    frames, classes = frames_of(dataset, data_dir, classes, tile, crop, sequence)
    for image, truth in frames.skip(index).take(1):
        return image[0].numpy(), truth[0].numpy(), classes
    raise ValueError(f"--index={index}: {data_dir} has no frame of that number")


def class_mapping(run, clusters, truth, num_classes, num_clusters):
    """(cluster -> class array, source): the run's recorded mapping, else one fitted here.

    The run's is `metrics.main.mapping` of `metrics.json` beside the model; without it the
    Hungarian mapping of `clusters` to `truth` on this frame. Unmatched clusters map to 255.
    """
    from tf_autoseg.evaluation import metrics

    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    recorded_file = folder / "metrics.json"
    if recorded_file.is_file():
        recorded = json.loads(recorded_file.read_text())["evaluation"]["main"]
        mapping, source = np.array(recorded["mapping"]), f"{recorded_file} ({recorded['mode']})"
    else:
        confusion = metrics.confusion_matrix(truth, clusters, num_classes, num_clusters)
        mapping, source = metrics.hungarian_match(confusion), "hungarian on the drawn frame"
    return np.where(mapping < 0, 255, mapping), source


def figure(image, *labels, scale):
    """input | each of `labels` (class maps: the predicted ones, then the ground truth), side by
    side, each shrunk `scale` times."""
    from tf_autoseg import visualize

    panels = [image[..., :3]] + [visualize.colorize(classes).numpy() for classes in labels]
    panels = [p[::scale, ::scale] for p in panels]
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    joined = [panels[0]]
    for panel in panels[1:]:
        joined += [gap, panel]
    return np.concatenate(joined, axis=1)


def main(argv):
    del argv
    import tensorflow as tf

    from tf_autoseg import atomic
    from tf_autoseg.evaluation import metrics
    from tf_autoseg.modeling.model import cluster_ids
    from tf_autoseg.serving import loading
    from tf_autoseg.serving import segment

    model = loading.load(FLAGS.run)
    data_dir = FLAGS.data_dir or str(DATA_DIRS[FLAGS.dataset])
    classes = FLAGS.classes or model.num_classes
    where = (FLAGS.dataset, data_dir, classes, FLAGS.tile, FLAGS.crop, FLAGS.sequence)
    image, truth, classes = read_frame(*where[:2], FLAGS.index, *where[2:])
    if FLAGS.adapt:
        if getattr(model, "labelling", None) is None:
            raise app.UsageError("--adapt needs a .keras model with a label-free stage")
        model.fit_labelling(frames_of(*where)[0], seed=0)

    def clusters_of(predict):
        probabilities = segment.segment_probabilities(
            lambda batch: predict(tf.constant(batch)), image, tile=512, overlap=64
        )
        return cluster_ids(probabilities).numpy()

    clusters = clusters_of(model)
    if FLAGS.adapt:  # the run's recorded mapping was fitted before the refit
        confusion = metrics.confusion_matrix(truth, clusters, classes, model.num_classes)
        mapping, source = metrics.hungarian_match(confusion), "hungarian on the drawn frame"
        mapping = np.where(mapping < 0, 255, mapping)
    else:
        mapping, source = class_mapping(FLAGS.run, clusters, truth, classes, model.num_classes)
    panels = [mapping[clusters]]
    if FLAGS.with_head:  # before the stage's panel
        head = clusters_of(lambda batch: _head_probabilities(model, batch))
        confusion = metrics.confusion_matrix(truth, head, classes, model.num_classes)
        head_mapping = metrics.hungarian_match(confusion)
        panels.insert(0, np.where(head_mapping < 0, 255, head_mapping)[head])
    drawn = figure(image, *panels, truth, scale=FLAGS.scale)
    Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
    png = tf.io.encode_png(drawn).numpy()
    atomic.write(FLAGS.output, lambda tmp: Path(tmp).write_bytes(png))
    scores = {"labels": clusters} | ({"head": head} if FLAGS.with_head else {})
    for name, ids in scores.items():
        confusion = metrics.confusion_matrix(truth, ids, classes, model.num_classes)
        scores[name] = round(float(metrics.protocol(confusion)["mean_iou"]), 4)
    print(json.dumps({"output": FLAGS.output, "shape": list(drawn.shape), "mapping": source,
                      "frame_miou_mapped_here": scores}))  # fmt: skip


def _head_probabilities(model, batch):
    """The main head's probabilities, the label-free stage set aside for one call."""
    stage = getattr(model, "labelling", None)
    if stage is None:
        return model.inference(batch)["main"]
    fitted = stage.get_weights()
    stage.reset()  # unfitted: the head answers
    try:
        return model.inference(batch)["main"]
    finally:
        stage.set_weights(fitted)


if __name__ == "__main__":
    app.run(main)
