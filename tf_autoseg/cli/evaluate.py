"""Evaluates a trained model on a dataset, in either protocol mode.

    python -m tf_autoseg.evaluate --model=runs/<name> [--eval_mode=holdout]
    python -m tf_autoseg.evaluate --flagfile=experiments/<name>.cfg \\
        --model=<run dir, .keras file or SavedModel> [--eval_mode=holdout]

The data flags are the training program's. A run directory (or a `.keras` file
inside one) brings its own: every flag its `flags.json` records is used unless
given on the command line (or in a flagfile). `tf_autoseg.serving.loading` loads the model. Prints
one JSON object: pixel accuracy, mIoU and per-class IoU after Hungarian matching (and
many-to-one for an overclustering head). A `.keras` model whose labels come from a label-free
stage (`--labels_from=mixture`, ...) first refits that stage on the images the mapping is
fitted on (labels unread; `--noadapt_labelling` to score it as trained).
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import flags

from tf_autoseg.cli import commands
from tf_autoseg.cli import run_flags
from tf_autoseg.serving import loading
from tf_autoseg.serving import paths
from tf_autoseg.training import sections
from tf_autoseg.training.config import EVALUATE
from tf_autoseg.training.config import upgrade

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", None,
    "A run directory (its flags.json gives the data flags not given here), a .keras file or a "
    "SavedModel folder.",
)  # fmt: skip
flags.DEFINE_bool(
    "adapt_labelling", True,
    "A .keras model with a label-free stage (labels_from other than head) refits it, without "
    "labels, on the images the mapping is fitted on (the scored ones; the training part's "
    "with --eval_mode=holdout), as the k-means baselines fit their clusters; "
    "--noadapt_labelling scores the stage as training fitted it (what its SavedModel serves). "
    "A SavedModel is scored as it serves.",
)  # fmt: skip
# Every training flag (a training flagfile is an evaluation flagfile); those this command reads
# (metadata of the table) are listed by --help.
run_flags.define_training()
for _name in EVALUATE:
    flags.declare_key_flag(_name)


def recorded_flags(model):
    """The flags.json of the run that `model` (a run directory or a file in one) belongs to."""
    path = Path(model)
    saved = (path if path.is_dir() else path.parent) / "flags.json"
    if not saved.is_file():
        return {}
    try:
        return upgrade(json.loads(saved.read_text()))  # older names, "not given" values
    except json.JSONDecodeError as error:
        raise ValueError(f"{saved} is not JSON ({error}).") from None


def evaluation_flags(recorded):
    """The flags to evaluate with: the command line's, else the run's (`recorded`), else the
    defaults."""
    given = run_flags.run_config()
    return given.replace(**{
        name: value for name, value in recorded.items() if name in given and not FLAGS[name].present
    })  # fmt: skip


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise ValueError("--model is required.")
    paths.resolve(FLAGS.model)  # a path that names no model stops before TensorFlow
    recorded = recorded_flags(FLAGS.model)
    chosen = evaluation_flags(recorded)
    # Only what is scored: the evaluation part, and the training part's labels for "holdout".
    evaluation = sections.evaluation_config(chosen)
    scored, fitted = sections.data_config(chosen, "eval"), sections.data_config(chosen, "train")
    trained = recorded.get("num_classes", chosen.num_classes)
    if trained != chosen.num_classes:
        raise ValueError(
            f"--num_classes={chosen.num_classes} but the model's run was trained with "
            f"--num_classes={trained}."
        )
    commands.start_tensorflow()
    from tf_autoseg.training import experiment

    model = loading.load(FLAGS.model)
    if model.num_classes != chosen.num_classes:
        raise ValueError(
            f"--num_classes={chosen.num_classes} but the model has {model.num_classes} clusters."
        )
    held_out, fit = experiment.evaluation_sets(evaluation, scored, fitted)
    if held_out is None:
        raise ValueError("--dataset=folder needs --masks_dir to evaluate.")
    results = experiment.evaluate(
        model, held_out[0], fit and fit[0], chosen.num_classes, evaluation.eval_batches,
        adapt=FLAGS.adapt_labelling, seed=chosen.seed,
    )  # fmt: skip
    print(json.dumps(results, default=lambda v: np.asarray(v).tolist()))


def run():
    """Runs `main` as the program (the flags are defined with this module)."""
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
