"""Trains, evaluates and exports a model: `python -m tf_autoseg.train --flagfile=experiments/X.cfg`.

Flags are validated before any work. The run directory (`--run_dir`) holds
`flags.json`, `checkpoints/`, TensorBoard `logs/`, the final `model.keras`
and `metrics.json`; the SavedModel goes to `<export_dir>/<export_name>/<n>`.
Run the same command again after a kill (SIGKILL included): training resumes
from the last checkpoint, and with `--deterministic` ends with the weights an
uninterrupted run would have. Running a finished run again changes nothing and says so;
raising `--steps` continues it. TensorFlow is imported only once the flags are checked.

The flags are defined from their table, `tf_autoseg.training.config.RunConfig`.
"""

import json
import os
import re
import sys
from pathlib import Path

from absl import flags
from absl import logging

from tf_autoseg import datasets
from tf_autoseg.cli import commands
from tf_autoseg.cli import run_flags
from tf_autoseg.training import runs
from tf_autoseg.training.config import FIELDS
from tf_autoseg.training.config import RunConfig
from tf_autoseg.training.config import model_config

FLAGS = flags.FLAGS

run_flags.define(
    helps={"dataset": f"<{'|'.join(datasets.NAMES)}>: {FIELDS['dataset'].metadata['help']}"}
)
flags.adopt_module_key_flags(run_flags)


def _known_dataset(name):
    # Checked when the flags are parsed, so that datasets registered after this module was
    # imported (tf_autoseg.datasets.register, entry points) are accepted.
    if name not in datasets.names():
        raise flags.ValidationError(f"--dataset must be one of {', '.join(datasets.names())}")
    return True


flags.register_validator("dataset", _known_dataset)


def run_config():
    """The parsed training flags, a frozen `RunConfig` (what `runs.record_flags` writes)."""
    return RunConfig.from_mapping(run_flags.values())


def validate(config):
    """Checks the flags before any work; raises ValueError naming the flag.

    What is checked here is about flags: the run directory and the outputs (writable), their
    formats, TF_CONFIG, and flags that only make sense together. Each model and data argument
    has one owner: the model's, `ModelConfig`, checks them here, before TensorFlow loads;
    `experiment.check_model` builds the model once, before any data is read, for the checks
    that depend on the input; a loader checks its own; `main` words their errors with the
    flags' names.
    """
    from tf_autoseg.layers import orderings

    def fail(flag, message):
        raise _flag_error(config, flag, message)

    if config["run_dir"] is None:
        raise ValueError("--run_dir is required: the folder for checkpoints, logs and metrics.")
    if config["data_service"]:
        from tf_autoseg.data import service  # the library's own check of the address

        service.check_address(config["data_service"])
    if not config["data_service_timeout"] > 0:
        fail("data_service_timeout", "must be a positive number of seconds.")
    if config["data_service"] and config["pipeline"] == "memory" and not config["prepared_dir"]:
        fail("pipeline", "--data_service needs --pipeline=stream or auto, or --prepared_dir.")
    if config["prepared_dir"] and not (Path(config["prepared_dir"]) / "manifest.json").is_file():
        fail("prepared_dir", "no manifest.json: write one with python -m tf_autoseg.prepare.")
    validate_data(config)
    positive = ("batch_size", "log_every", "steps", "checkpoint_every", "tile", "downsample",
                "synthetic_images", "synthetic_size")  # fmt: skip
    for flag in positive:
        if config[flag] < 1:
            fail(flag, "must be a positive integer.")
    if config["downsample"] > 1 and not datasets.get(config["dataset"]).downsample:
        shrinks = [name for name in datasets.names() if datasets.get(name).downsample]
        fail("downsample", f"applies to {', '.join(shrinks)}, not {config['dataset']}.")
    if config["steps"] % config["checkpoint_every"]:
        fail("checkpoint_every", f"must divide --steps={config['steps']}.")
    if not config["learning_rate"] > 0:
        fail("learning_rate", "must be positive.")
    if config["minutes"] is not None and not config["minutes"] > 0:
        fail("minutes", "must be a positive number of minutes (or not given: --steps only).")
    if config["labels_from"] == "overclustering" and not config["overclustering"]:
        fail("labels_from", "needs an overclustering head (--overclustering).")
    if config["num_orderings"] not in (2, 4, 8, 16):
        fail("num_orderings", "accepted values are 2, 4, 8 and 16 (16 with --ordering_types=both).")
    try:
        orderings.default_set(config["ordering_types"], config["num_orderings"])
    except ValueError:
        fail("num_orderings", f"--ordering_types={config['ordering_types']} has 8 orderings; "
                              "16 needs --ordering_types=both.")  # fmt: skip
    for flag in ("ar_blocks", "front_blocks"):
        if config[flag] is not None and config[flag] < 0:
            fail(flag, "must be a number of blocks >= 0 (or not given: the variant's).")
    if not all(str(value).isdigit() for value in config["attention_blocks"]):
        fail("attention_blocks", "a comma-separated list of block numbers (1-based).")
    model_config(config)  # every model argument's own check (ModelConfig), before TensorFlow
    for flag in ("train_tiles", "eval_tiles"):
        if not all(str(t).isdigit() for t in config[flag]):
            fail(flag, "a comma-separated list of tile numbers.")
    if "TF_CONFIG" in os.environ:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"The TF_CONFIG environment variable is not JSON: {error}") from None
    for flag in ("run_dir", "export_dir") if config["export"] else ("run_dir",):
        commands.check_writable(flag, config[flag])  # creates and removes a file: no trace left
    if config["export"]:  # what would stop the export, found before training rather than after
        from tf_autoseg.serving import export

        name = config["export_name"] or Path(config["run_dir"]).resolve().name
        if not export.NAME_PATTERN.match(name):
            raise ValueError(
                f"--export_name={name!r} (the run folder's name unless given): a model name "
                "is letters, digits, '_', '.' and '-', not starting with '.', '_' or '-'."
            )
        export.read_models_config(config["export_dir"])


def _flag_error(config, flag, message):
    value = config[flag]
    return ValueError(f"--{flag}={list(value) if isinstance(value, tuple) else value!r}: {message}")


def validate_data(config):
    """Checks the flags that choose the data and its evaluation (train and evaluate share them)."""

    def fail(flag, message):
        raise _flag_error(config, flag, message)

    dataset = datasets.get(config["dataset"])
    if dataset.files:
        # Prepared records hold everything training reads: then --data_dir is optional.
        if not config["data_dir"] and not config.get("prepared_dir"):
            raise ValueError(
                f"--data_dir is required for --dataset={config['dataset']} (or --prepared_dir)."
            )
        if config["data_dir"] and not Path(config["data_dir"]).is_dir():
            fail("data_dir", "no such directory.")
    if not dataset.held_out and config["eval_mode"] == "holdout":
        fail(
            "eval_mode",
            f"--dataset={config['dataset']} has no held-out split; use --eval_mode=same.",
        )
    # The dataset modules load without TensorFlow (see tf_autoseg.data.core).
    from tf_autoseg.datasets import camvid

    counts = dataset.classes()
    if counts is not None and config["num_classes"] not in counts:
        fail("num_classes", f"{config['dataset']} accepts {tuple(sorted(counts))}.")
    for flag in ("train_sequences", "eval_sequences"):
        if not set(config[flag]) <= set(camvid.SEQUENCES):
            fail(flag, f"CamVid's video sequences are {', '.join(camvid.SEQUENCES)}.")


def flag_names(message):
    """A library error worded with the flags that set its arguments (`tile` -> --tile): a flag
    has the name of the argument it feeds. Names that are not flags are left as they are."""
    names = {flag.name for flag in FLAGS.get_key_flags_for_module(__name__)}

    def flag(name):
        return f"--{name}" if name in names else None

    message = re.sub(r"`(\w+)`", lambda m: flag(m.group(1)) or m.group(0), message)
    message = re.sub(r"(?<![\w-])(\w+)=", lambda m: f"{flag(m.group(1)) or m.group(1)}=", message)
    return message.replace(
        "use mask_format='colour'", "give --colours, a JSON table of mask colours to class ids"
    )


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = run_config()
    try:
        validate(config)
    except ValueError as error:  # a library's wording, in flag names
        raise ValueError(flag_names(str(error))) from None
    commands.start_tensorflow()
    from tf_autoseg.training import experiment

    note = runs.finished(config)
    if note:
        logging.info(note)
        return
    try:
        experiment.check_model(config)
        metrics = experiment.run(config)
    except ValueError as error:  # a bad model flag, bad data, a corrupt checkpoint: named
        raise ValueError(flag_names(str(error))) from error
    print(summary(metrics, config["run_dir"]), flush=True)


def summary(metrics, run_dir):
    """A few lines for a person: steps, time, loss and MI, scores, where things are.

    Everything else (and these figures, exactly) is in `<run_dir>/metrics.json`.
    """
    lines = [
        f"Trained to step {metrics['steps']} ({metrics.get('train_seconds', 0):.0f} s of "
        f"training in all; this process {metrics['wall_seconds']:.0f} s); loss "
        f"{_figure(metrics.get('loss'))}, mutual information "
        f"{_figure(metrics.get('mutual_information'))}."
    ]
    main_scores = (metrics.get("evaluation") or {}).get("main")
    if main_scores:
        fitted = "the scored images" if metrics["eval_mode"] == "same" else "the training split"
        lines.append(
            f"Scores (clusters matched to classes on {fitted}, --eval_mode="
            f"{metrics['eval_mode']}): pixel accuracy {main_scores['pixel_accuracy']:.3f}, "
            f"mIoU {main_scores['mean_iou']:.3f}."
        )
    lines.append(
        f"Model: {Path(run_dir) / 'model.keras'}; export: {metrics.get('export') or 'none'}."
    )
    lines.append(f"All figures: {Path(run_dir) / 'metrics.json'}.")
    return "\n".join(lines)


def _figure(value):
    return "not measured" if value is None else f"{value:.4f}"


def run():
    """Runs `main` as the program (the flags are defined with this module)."""
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
