"""`python -m tf_autoseg.segment`: label maps and colour overlays for images of any size.

    python -m tf_autoseg.segment --model <SavedModel, run dir or .keras> \\
        --input <image, folder or glob> --output <dir>

The library is `tf_autoseg.serving.segment`; this module holds the flags and `main`.
"""

import sys
import time
from pathlib import Path

from absl import flags

from tf_autoseg.cli import commands
from tf_autoseg.data import images
from tf_autoseg.serving import classes as named_classes
from tf_autoseg.serving import loading
from tf_autoseg.serving import paths
from tf_autoseg.serving.segment import ALIGN
from tf_autoseg.serving.segment import check_inputs
from tf_autoseg.serving.segment import check_tiling
from tf_autoseg.serving.segment import list_inputs
from tf_autoseg.serving.segment import mapping
from tf_autoseg.serving.segment import output_stems
from tf_autoseg.serving.segment import segment_probabilities
from tf_autoseg.serving.segment import write_legend
from tf_autoseg.serving.segment import write_outputs

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program (importing stays free)."""
    flags.DEFINE_string("model", None, "A SavedModel folder, a run directory or a .keras file.")
    flags.DEFINE_string("input", None, "An image, a folder of images, or a glob pattern.")
    flags.DEFINE_string("output", None, "Folder for <stem>_labels.png and <stem>_overlay.png.")
    flags.DEFINE_integer("tile", 512, "Largest tile side processed at once (a multiple of 16).")
    flags.DEFINE_integer("overlap", 64, "Pixels discarded at inner tile borders (a multiple of 8).")
    flags.DEFINE_bool(
        "adapt_labelling", False,
        "A .keras model (or run directory) with a label-free stage (labels_from other than "
        "head) first refits it, without labels, on tiles of the input images, so its classes "
        "follow these images' light and colours (a refit keeps the cluster ids it can). A "
        "SavedModel serves its stage as trained.",
    )  # fmt: skip
    flags.DEFINE_string(
        "classes_json",
        None,
        "Mapping of clusters to named classes (name_clusters writes it): label maps hold class "
        "ids, overlays the classes' colours, and legend.png names them. Default: the export's "
        "own mapping, else the model's classes.json if there is one; 'none': cluster ids.",
    )


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    for flag in ("model", "input", "output"):
        if not FLAGS[flag].value:
            raise ValueError(f"--{flag} is required.")
    # Everything is checked before the first file is written: inputs, output names, the
    # output folder, the model, then every image as the model will read it.
    files = list_inputs(FLAGS.input)
    output = Path(FLAGS.output)
    stems = output_stems(files, output)
    paths.resolve(FLAGS.model)  # a path that names no model stops before TensorFlow
    try:
        check_tiling(FLAGS.tile, FLAGS.overlap)
    except ValueError:
        raise ValueError(
            f"--tile={FLAGS.tile}, --overlap={FLAGS.overlap}: --tile must be a multiple of "
            f"{ALIGN} larger than 2 * --overlap, and --overlap a multiple of 8."
        ) from None
    commands.check_writable("output", output)
    named = FLAGS.classes_json and named_classes.named_path(FLAGS.classes_json, FLAGS.model)
    if named:
        named_classes.read(named)  # a broken mapping is named before TensorFlow
    commands.start_tensorflow()
    from tf_autoseg.modeling.model import cluster_ids

    model = loading.load(FLAGS.model)
    mapped = mapping(model, FLAGS.model, FLAGS.classes_json)
    channels = model.image_shape[-1]
    check_inputs(files, channels)
    if FLAGS.adapt_labelling:
        adapt(model, files, channels, FLAGS.tile)
    head = mapped.head if mapped is not None else "main"
    predict = loading.probabilities(model, head)
    output.mkdir(parents=True, exist_ok=True)
    if mapped is not None:
        print(
            f"classes: {', '.join(c.name for c in mapped.classes)} -> {write_legend(output, mapped)}"
        )
    for path, stem in zip(files, stems):
        image = images.read_image(path, channels)[0]
        probs = segment_probabilities(
            predict, image, FLAGS.tile, FLAGS.overlap, progress=Progress(path)
        )
        labels = cluster_ids(probs).numpy()
        if mapped is None:
            write_outputs(stem, image, labels)
        else:
            write_outputs(stem, image, mapped.lookup()[labels], mapped.palette())
        print(f"{path} -> {stem}_labels.png")


def adapt(model, files, channels, tile, per_image=4):
    """Refits `model`'s label-free stage on up to `per_image` tiles (at most `tile` pixels a
    side, spread over the image) of each input image; refused for a model without one."""
    import numpy as np

    if getattr(model, "labelling", None) is None:
        raise ValueError(
            "--adapt_labelling needs a .keras model (or run directory) trained with "
            "--labels_from other than head."
        )

    def tiles():
        for path in files:
            image = images.read_image(path, channels)[0]
            height, width = image.shape[:2]
            h, w = min(tile, height), min(tile, width)
            grid = max(1, int(np.ceil(np.sqrt(per_image))))
            starts = {(y, x) for y in np.linspace(0, height - h, grid).astype(int)
                      for x in np.linspace(0, width - w, grid).astype(int)}  # fmt: skip
            for y, x in sorted(starts)[:per_image]:
                yield image[None, y : y + h, x : x + w]

    model.fit_labelling(tiles(), seed=0)
    print(f"labelling refitted on {len(files)} image(s)")


class Progress:
    """Prints how far the tiles of a large image are, every `every` seconds: an 8000 x 8000
    image takes minutes, and said nothing until its files were written."""

    def __init__(self, path, every=10.0, clock=time.monotonic, out=print):
        self.path, self.every, self.clock, self.out = path, every, clock, out
        self.start = self.last = clock()

    def __call__(self, done, total):
        now = self.clock()
        if now - self.last >= self.every and done < total:
            self.last = now
            self.out(
                f"{self.path}: {done} of {total} tiles ({100 * done // total}%, "
                f"{now - self.start:.0f} s)",
                flush=True,
            )


def run():
    """Defines the flags and runs `main` as the program."""
    define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
