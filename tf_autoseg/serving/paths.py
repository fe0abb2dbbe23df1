"""Where a trained model lies: a run directory, a `.keras` file or a SavedModel, read from the
file system only (no TensorFlow), so that the programs check `--model` before TensorFlow starts
and the classes mapping finds its file beside the model.
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
