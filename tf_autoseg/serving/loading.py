"""One way to load a trained model: a run directory, a `.keras` file or a SavedModel.

`load(source)` gives what evaluate, segment, export and the benchmarks segment with:

- a training run directory (its `model.keras`) or a `.keras` file: the `AutoSegModel`;
- a SavedModel folder that `tf_autoseg.export` wrote (a version folder holding
  `saved_model.pb`), or the model's base folder `<output_dir>/<name>` holding version
  folders (the newest is taken): a `SavedModelSegmenter` over its signatures.

Both answer the same inference calls: `model(images)` gives (B, H, W, K) probabilities,
`cluster_labels(images, heads=("main",))` {head: (B, H, W) int32 cluster ids}, and
`num_classes`, `image_shape` (its last entry the channels), `overclustering`. `probabilities`
is the one predictor the programs segment with (a head of either). Probabilities become
cluster ids in one place, `tf_autoseg.modeling.model.cluster_ids`.

TensorFlow is imported when a model is loaded, not with this module: the programs check
`--model` with `tf_autoseg.serving.paths.resolve` before TensorFlow starts.
"""

from pathlib import Path

from tf_autoseg.serving import paths


def load(source, saved_model=True):
    """The model `source` names, ready for inference.

    Loading a SavedModel turns Grappler's remapper off for the process (`without_remapper`).

    Args:
        source: an `AutoSegModel` (returned as is), or a path `paths.resolve` accepts.
        saved_model: as in `paths.resolve`.

    Returns:
        The `AutoSegModel`, or a `SavedModelSegmenter` for a SavedModel.

    Raises:
        FileNotFoundError, ValueError: as `paths.resolve`; also a ValueError when the file cannot
            be loaded (naming it) or does not hold an `AutoSegModel`.
    """
    import keras

    from tf_autoseg.modeling import saving
    from tf_autoseg.modeling.model import AutoSegModel

    if isinstance(source, keras.Model):
        model = source
    else:
        kind, path = paths.resolve(source, saved_model)
        try:
            if kind == paths.SAVED_MODEL:
                without_remapper()
                return SavedModelSegmenter(path)
            model = saving.load(path, compile=False)
        except Exception as error:  # noqa: BLE001 - any failure to load is reported the same way
            raise ValueError(
                f"`model`: {str(path)!r} cannot be loaded ({type(error).__name__}: {error})"
            ) from error
    if not isinstance(model, AutoSegModel):
        raise ValueError(
            f"`model` must be an AutoSegModel. Received: {type(model).__name__} from {source!r}"
        )
    return model


class SavedModelSegmenter:
    """An export of `tf_autoseg.export` with the inference calls of an `AutoSegModel`.

    uint8 images go to the `serving_default` signature, float images (in [0, 1]) to
    `serving_float`, so the probabilities are the Keras model's. One head is exported (the
    main head, or the head of its mapping to named classes: `exported_head`), answered as
    "main": `overclustering` is None. `classes` is the export's mapping of
    clusters to named classes (`tf_autoseg.serving.classes.Classes`), or None.

    Args:
        path: the SavedModel folder (holding `saved_model.pb`).
    """

    overclustering = None

    def __init__(self, path):
        import tensorflow as tf

        self.path = Path(path)
        self._signatures = tf.saved_model.load(str(path)).signatures
        default = self._signatures["serving_default"]
        self.num_classes = int(default.structured_outputs["probabilities"].shape[-1])
        channels = int(default.structured_input_signature[1]["images"].shape[-1])
        self.image_shape = (None, None, channels)  # any height and width
        self.classes = None
        from tf_autoseg.serving import classes

        metadata = self.path / classes.IN_EXPORT
        if metadata.is_file():
            self.classes = classes.read(metadata, num_clusters=self.num_classes)
        self.exported_head = self.classes.head if self.classes else "main"

    def __call__(self, images):
        """(B, H, W, K) float32 probabilities of uint8 images or float images in [0, 1]."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        if images.dtype == tf.uint8:
            return self._signatures["serving_default"](images=images)["probabilities"]
        images = tf.cast(images, tf.float32)
        return self._signatures["serving_float"](images=images)["probabilities"]

    def cluster_labels(self, images, batch_size=8, heads=("main",)):
        """{"main": (B, H, W) int32 cluster ids}, as `AutoSegModel.cluster_labels`."""
        import tensorflow as tf

        from tf_autoseg.modeling.model import cluster_ids

        if tuple(heads) != ("main",):
            raise ValueError(
                f"An export holds only the main head. Received: heads={heads!r} ({self.path})"
            )
        images = tf.convert_to_tensor(images)
        parts = [
            cluster_ids(self(images[i : i + batch_size]))
            for i in range(0, int(images.shape[0]), batch_size)
        ]
        return {"main": tf.concat(parts, axis=0)}


def probabilities(model, head="main"):
    """batch -> (B, H, W, K) probabilities of `model`'s `head`: the one predictor that segment
    and the naming page label with (an export answers its one head)."""
    import tensorflow as tf

    if isinstance(model, SavedModelSegmenter) or head == "main":
        return lambda batch: model(tf.constant(batch))
    return lambda batch: model.inference(tf.constant(batch), heads=(head,))[head]


def without_remapper():
    """Turns off Grappler's remapper for this process: on graphs loaded from a SavedModel it
    fails on every call ("E0000 ... remapper failed: INVALID_ARGUMENT: Mutation::Apply error:
    fanout ... for missing node ...") and leaves the graph as it was, so the result is right
    and only the error line is printed. Measured on the quickstart's export (8x256x256, AMD
    EPYC Zen 4): 0.170-0.180 s a call with it, 0.169-0.202 s without."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"remapping": False})
