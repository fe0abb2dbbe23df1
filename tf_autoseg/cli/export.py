"""`python -m tf_autoseg.export`: exports a trained model for TensorFlow Serving.

The library is `tf_autoseg.serving.export`; this module holds the flags and `main`.
"""

import sys
import time
from pathlib import Path

from absl import flags
from absl import logging

from tf_autoseg.cli import commands
from tf_autoseg.serving import classes as named_classes
from tf_autoseg.serving import paths
from tf_autoseg.serving.export import NAME_PATTERN
from tf_autoseg.serving.export import export_model
from tf_autoseg.serving.export import read_models_config


# ------------------------------------------------------------------ command line
# Flags are defined only when this module runs as the program, so importing it
# as a library (or beside the training program) never registers them.
def _define_flags():
    flags.DEFINE_string(
        "model",
        None,
        "Training run directory holding model.keras, or the path of a .keras file.",
    )
    flags.DEFINE_string(
        "name",
        None,
        "Model name for TensorFlow Serving: the folder under --output_dir and the name in "
        "/v1/models/<name>:predict (letters, digits, '_', '.', '-').",
    )
    flags.DEFINE_string(
        "output_dir",
        "saved_models",
        "Base directory: the export goes to <output_dir>/<name>/<next version>/ and "
        "<output_dir>/models.config lists the model.",
    )
    flags.DEFINE_string(
        "serving_root",
        "/models",
        "Where the TensorFlow Serving process sees --output_dir (the container mount point); "
        "models.config gets base_path <serving_root>/<name>. Empty: the absolute local path.",
    )
    flags.DEFINE_string(
        "classes_json",
        None,
        "Mapping of the model's clusters to named classes (name_clusters writes it), baked "
        "into the export: serving_default then returns class ids. Default: the model's "
        "classes.json if there is one (a run directory's); 'none': cluster ids.",
    )
    flags.mark_flags_as_required(["model", "name"])
    flags.register_validator("model", _validate_model_flag)
    flags.register_validator(
        "name",
        lambda value: value is None or bool(NAME_PATTERN.match(value)),
        message=f"--name must match {NAME_PATTERN.pattern} (letters, digits, '_', '.', '-')",
    )
    flags.register_validator(
        "output_dir",
        lambda value: not Path(value).exists() or Path(value).is_dir(),
        message="--output_dir names an existing file; expected a directory (or a new path)",
    )


def _validate_model_flag(value):
    if value is None:
        return True
    try:
        paths.resolve(value, saved_model=False)
    except (FileNotFoundError, ValueError) as error:
        raise flags.ValidationError(str(error)) from error
    return True


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    commands.check_writable("output_dir", values.output_dir)
    read_models_config(values.output_dir)  # a broken models.config is named before TensorFlow
    classes = named_classes.named_path(values.classes_json, values.model)
    if classes is not None:
        named_classes.read(classes)  # a broken mapping is named before TensorFlow
        logging.info("Baking the class names of %s into the export", classes)
    commands.start_tensorflow()
    start = time.perf_counter()
    target = export_model(
        values.model,
        values.name,
        values.output_dir,
        serving_root=values.serving_root or None,
        classes=classes,
    )
    logging.info("Exported %s in %.1f s", target, time.perf_counter() - start)
    print(target)


def run():
    """Defines the flags and runs `main` as the program."""
    _define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
