"""One way to load a trained model: a run directory, a `.keras` file or a SavedModel.

`load(source)` gives what evaluate, segment, export and the benchmarks segment with:

- a training run directory (its `model.keras`) or a `.keras` file: the `AutoSegModel`;
- a SavedModel folder that `tf_autoseg.export` wrote (a version folder holding
  `saved_model.pb`), or the model's base folder `<output_dir>/<name>` holding version
  folders (the newest is taken): a `SavedModelSegmenter` over its signatures.

Both answer the same inference calls: `model(images)` gives (B, H, W, K) probabilities,
`cluster_labels(images, heads=("main",))` {head: (B, H, W) int32 cluster ids}, and
`num_classes`, `image_shape` (its last entry the channels), `overclustering`, `over_head`.
Probabilities become cluster ids in one place, `tf_autoseg.modeling.model.cluster_ids`.

TensorFlow is imported when a model is loaded, not with this module: the programs check
`--model` with `resolve` before TensorFlow starts.
"""

from pathlib import Path

MODEL_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
KERAS = "keras"
SAVED_MODEL = "saved_model"
EXPECTED = (
    "expected a training run directory, a .keras file, or a SavedModel folder "
    "(an export's version folder or the base folder holding its versions)"
)


def versions(model_dir):
    """The version numbers exported under `model_dir` (`<output_dir>/<name>`), sorted.

    Args:
        model_dir: the folder holding an exported model's version folders.

    Returns:
        A sorted list of ints: the all-digit folder names (others are ignored, as
        TensorFlow Serving ignores them).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def resolve(source, saved_model=True):
    """(kind, path) of the model `source` names, read from the file system only.

    Args:
        source: a training run directory holding `model.keras`; a `.keras` file; a
            SavedModel folder holding `saved_model.pb`; or a folder of numbered
            SavedModel versions (the newest is taken).
        saved_model: whether a SavedModel is accepted (export needs the Keras model).

    Returns:
        (`KERAS`, the `.keras` file) or (`SAVED_MODEL`, the SavedModel folder).

    Raises:
        FileNotFoundError: the path is missing, or a folder holds none of the above.
        ValueError: a file that does not end in `.keras`, or a SavedModel where
            `saved_model` is False.
    """
    kind, path = _resolve(Path(source))
    if kind == SAVED_MODEL and not saved_model:
        raise ValueError(
            f"`model`: {str(path)!r} is a SavedModel, already an export; give the training "
            "run directory or the .keras file it was exported from"
        )
    return kind, path


def _resolve(path):
    if path.is_dir():
        if (path / SAVED_MODEL_FILE).is_file():
            return SAVED_MODEL, path
        if (path / MODEL_FILE).is_file():
            return KERAS, path / MODEL_FILE
        numbers = versions(path)
        if numbers and (path / str(numbers[-1]) / SAVED_MODEL_FILE).is_file():
            return SAVED_MODEL, path / str(numbers[-1])
        raise FileNotFoundError(
            f"`model`: folder {str(path)!r} holds no {MODEL_FILE}, no {SAVED_MODEL_FILE} and "
            f"no version folder holding one ({EXPECTED})"
        )
    if not path.exists():
        raise FileNotFoundError(f"`model`: {str(path)!r} does not exist ({EXPECTED})")
    if path.suffix != ".keras":
        raise ValueError(f"`model`: {str(path)!r} is not a .keras file ({EXPECTED})")
    return KERAS, path


def load(source, saved_model=True):
    """The model `source` names, ready for inference.

    Args:
        source: an `AutoSegModel` (returned as is), or a path `resolve` accepts.
        saved_model: as in `resolve`.

    Returns:
        The `AutoSegModel`, or a `SavedModelSegmenter` for a SavedModel.

    Raises:
        FileNotFoundError, ValueError: as `resolve`; also a ValueError when the file cannot
            be loaded (naming it) or does not hold an `AutoSegModel`.
    """
    import keras

    from tf_autoseg.modeling.model import AutoSegModel  # registers the layers for loading

    if isinstance(source, keras.Model):
        model = source
    else:
        kind, path = resolve(source, saved_model)
        try:
            if kind == SAVED_MODEL:
                return SavedModelSegmenter(path)
            model = keras.saving.load_model(path, compile=False)
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
    "main": `overclustering` and `over_head` are None. `classes` is the export's mapping of
    clusters to named classes (`tf_autoseg.serving.classes.Classes`), or None.

    Args:
        path: the SavedModel folder (holding `saved_model.pb`).
    """

    overclustering = None
    over_head = None

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
