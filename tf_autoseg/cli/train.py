"""Trains, evaluates and exports a model: `python -m tf_autoseg.train --flagfile=experiments/X.cfg`.

Flags are validated before any work. The run directory (`--run_dir`) holds
`flags.json`, `checkpoints/`, TensorBoard `logs/`, the final `model.keras`
and `metrics.json`; the SavedModel goes to `<export_dir>/<export_name>/<n>`.
Run the same command again after a kill (SIGKILL included): training resumes
from the last checkpoint, and with `--deterministic` ends with the weights an
uninterrupted run would have. Running a finished run again changes nothing and says so;
raising `--steps` continues it. TensorFlow is imported only once the flags are checked.

Long (~300 lines) because half of it is the flag definitions, each with its help text.
"""

import json
import os
import re
import sys
from pathlib import Path

from absl import flags
from absl import logging

from tf_autoseg import arguments
from tf_autoseg import datasets
from tf_autoseg.cli import commands
from tf_autoseg.cli import data_flags
from tf_autoseg.training import runs

FLAGS = flags.FLAGS

# Data.
data_flags.define()
flags.adopt_module_key_flags(data_flags)
flags.DEFINE_string(
    "dataset", "synthetic",
    f"<{'|'.join(datasets.NAMES)}>: the embedded synthetic scenes, ISPRS Potsdam, COCO-Stuff, "
    "a folder of images (with optional masks), the Dubai aerial set, CamVid street scenes; "
    "or a dataset registered with tf_autoseg.datasets.register.",
)  # fmt: skip


def _known_dataset(name):
    # Checked when the flags are parsed, so that datasets registered after this module was
    # imported (tf_autoseg.datasets.register, entry points) are accepted.
    if name not in datasets.names():
        raise flags.ValidationError(f"--dataset must be one of {', '.join(datasets.names())}")
    return True


flags.register_validator("dataset", _known_dataset)
flags.DEFINE_integer(
    "classes", 3,
    "Classes K of the labels and the main head: Potsdam 6 or 3, COCO-Stuff 15 or 3, "
    "synthetic 2-6, Dubai 5, CamVid 3 or 11, folder: as many as its masks use.",
)  # fmt: skip
flags.DEFINE_integer("synthetic_images", 64, "synthetic: number of training images.")
flags.DEFINE_integer("synthetic_size", 64, "synthetic: image height and width.")
flags.DEFINE_enum(
    "pipeline", "auto", ["auto", "memory", "stream"],
    "Training input: decoded into memory; streamed from the files inside tf.data (the same "
    "batches; folder, dubai, camvid, Potsdam crops); auto: streamed past 1 GiB of decoded "
    "pixels or with --data_service.",
)  # fmt: skip
flags.DEFINE_enum(
    "file_check", "decode", ["decode", "header"],
    "Streamed input: decode every file once before training, with the in-memory reader, so "
    "that a file damaged in its middle is refused as in memory (decode), or read headers and "
    "file ends only (header: faster, for sets already checked).",
)  # fmt: skip
flags.DEFINE_string(
    "prepared_dir", "",
    "A folder written by `python -m tf_autoseg.prepare`: every part is read from its "
    "TFRecord shards (Potsdam TIFFs, COCO-Stuff; needed to stream those).",
)  # fmt: skip
flags.DEFINE_float(
    "data_service_timeout", 60.0, "Seconds to wait for the --data_service dispatcher to answer "
    "before giving up (with one line, exit 2).",
)  # fmt: skip
flags.DEFINE_string(
    "data_service", "",
    "grpc://host:port of a tf.data service dispatcher (`python -m tf_autoseg.data_service`) "
    "that runs the training input.",
)  # fmt: skip

# Model: F = h o g_ar o d.
flags.DEFINE_enum("variant", "F2", ["F1", "F2", "F3", "F4", "F5", "random"],
                  "Model variant of the slides' table (random: F2, never trained).")  # fmt: skip
flags.DEFINE_integer("width", 64, "Channels of the stem and of the autoregressive blocks.")
flags.DEFINE_integer("stride", 4, "Output stride of the stem (1, 2 or 4).")
flags.DEFINE_integer("ar_blocks", None, "Masked residual blocks (default: the variant's).")
flags.DEFINE_integer("front_blocks", None, "Residual blocks of the front (default: the variant's).")
flags.DEFINE_list("attention_blocks", [], "Insert masked attention after these blocks (1-based).")
flags.DEFINE_integer("attention_heads", 4, "Heads of each attention block.")
flags.DEFINE_float("dropout", 0.0, "Dropout p inside the masked blocks.")
flags.DEFINE_integer(
    "overclustering", None, "Clusters of the overclustering head (default: no such head)."
)

# Objective and views.
flags.DEFINE_enum("objective", "ac", ["ac", "arl"], "AC (mutual information) or ARL (InfoNCE).")
flags.DEFINE_float("entropy_weight", 1.0, "lambda of the AC loss (1 = mutual information).")
flags.DEFINE_float(
    "over_entropy_weight", None,
    "lambda of the overclustering head's term (default: the same as --entropy_weight).",
)  # fmt: skip
flags.DEFINE_float(
    "marginal_momentum", 0.0,
    "Moving average of the cluster marginals across steps in [0, 1) (0: each batch's own).",
)  # fmt: skip
flags.DEFINE_enum(
    "labels_from", "head", ["head", "features", "overclustering"],
    "What the K clusters of inference are: the main head's argmax (the paper's), or K centres "
    "fitted by k-means without labels after training, on the autoregressive features or the "
    "overclustering head's probabilities (not pushed toward equal sizes).",
)  # fmt: skip
flags.DEFINE_bool("sobel", False, "Sobel gradients of the grey level beside the input channels.")
flags.DEFINE_integer("displacement", 0, "Half side of the AC displacement window.")
flags.DEFINE_bool(
    "per_offset", False,
    "AC: one joint per offset of the displacement window, their mutual information averaged "
    "(IIC's uncollapsed loss), instead of one joint pooled over the window.",
)  # fmt: skip
flags.DEFINE_enum("ordering_types", "raster", ["raster", "zigzag", "both"],
                  "Which scans make up the set O of orderings.")  # fmt: skip
flags.DEFINE_integer("num_orderings", 8, "|O|: 2, 4, 8 or 16 (16 needs --ordering_types=both).")
flags.DEFINE_enum("sampling", "random", ["random", "no_repeat", "hard"], "How pairs are drawn.")
flags.DEFINE_bool("photometric", False, "Colour jitter per view.")
flags.DEFINE_enum("geometric", "none", ["none", "flip", "rotate", "flip_rotate"],
                  "Transform of the second view, inverted on its output.")  # fmt: skip
flags.DEFINE_float("temperature", 0.1, "ARL temperature.")
flags.DEFINE_integer("num_negatives", 255, "ARL negatives per positive.")

# Optimisation.
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("steps", 1000, "Training steps in all.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints (divides --steps).")
flags.DEFINE_float(
    "minutes", None, "Training budget in minutes of training time, summed over resumes: "
    "training stops after the step that spends it (--steps stays the cap and the length of "
    "the schedule). The run records the steps it reached.",
)  # fmt: skip
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "constant, or cosine decay to 0 over --steps.")  # fmt: skip
flags.DEFINE_float(
    "weight_ema", 0.0,
    "Momentum of an exponential moving average of the weights, used for evaluation and "
    "export (0: none).",
)  # fmt: skip
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16", "auto"],
    "Keras dtype policy; auto: time a few steps of this model in both on this machine and "
    "train in the faster.",
)  # fmt: skip
flags.DEFINE_integer("seed", 0, "Seeds initialisation, data order, orderings, augmentations.")
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism (slower, reproducible).")
flags.DEFINE_enum("distribution", "auto", ["auto", "none", "mirrored", "multiworker"],
                  "auto: multiworker when TF_CONFIG is set, mirrored on several GPUs.")  # fmt: skip

# Evaluation and outputs.
flags.DEFINE_string("run_dir", None, "Run directory: flags, checkpoints, logs, metrics.")
flags.DEFINE_enum("eval_mode", "same", ["same", "holdout"],
                  "same: mapping fitted and scored on the evaluation set (IIC); holdout: "
                  "fitted on labelled training data, scored on the held-out split.")  # fmt: skip
flags.DEFINE_integer("eval_batches", 0, "Batches to evaluate (0: the whole evaluation set).")
flags.DEFINE_integer("log_every", 10, "Steps between TensorBoard loss and MI points.")
flags.DEFINE_integer("summary_images", 4, "Images in each TensorBoard image summary.")
flags.DEFINE_bool("export", True, "Export a SavedModel after training.")
flags.DEFINE_string("export_dir", "saved_models", "Folder of exported models.")
flags.DEFINE_string("export_name", None, "Exported model name (default: the run folder's name).")


def run_config():
    """The training flags as a plain dict (what flags.json holds)."""
    modules = (data_flags.__name__, __name__)
    values = {flag.name: flag.value for m in modules for flag in FLAGS.get_flags_for_module(m)}
    return runs.unsentinel(values)


def validate(config):
    """Checks the flags before any work; raises ValueError naming the flag.

    What is checked here is about flags: the run directory and the outputs (writable), their
    formats, TF_CONFIG, and flags that only make sense together. Each model and data argument
    has one owner, its constructor or loader: `experiment.check_model` builds the model once,
    before any data is read, and `main` words their errors with the flags' names.
    """
    from tf_autoseg.layers import orderings

    def fail(flag, message):
        raise ValueError(f"--{flag}={config[flag]!r}: {message}")

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
    positive = ("batch_size", "log_every", "steps", "checkpoint_every", "crop", "downsample",
                "synthetic_images", "synthetic_size")  # fmt: skip
    for flag in positive:
        if config[flag] < 1:
            fail(flag, "must be a positive integer.")
    if config["downsample"] > 1 and not datasets.get(config["dataset"]).downsample:
        shrinks = [name for name in datasets.names() if datasets.get(name).downsample]
        fail("downsample", f"applies to {', '.join(shrinks)}, not {config['dataset']}.")
    # The model's own checks of these arguments, made here before TensorFlow loads (the
    # model makes them again when it is built).
    arguments.integer("num_classes", config["classes"], 2)
    arguments.integer("width", config["width"])
    arguments.integer("attention_heads", config["attention_heads"])
    arguments.choice("stride", config["stride"], (1, 2, 4))
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


def validate_data(config):
    """Checks the flags that choose the data and its evaluation (train and evaluate share them)."""

    def fail(flag, message):
        raise ValueError(f"--{flag}={config[flag]!r}: {message}")

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
    if counts is not None and config["classes"] not in counts:
        fail("classes", f"{config['dataset']} accepts {tuple(sorted(counts))}.")
    for flag in ("train_sequences", "eval_sequences"):
        if not set(config[flag]) <= set(camvid.SEQUENCES):
            fail(flag, f"CamVid's video sequences are {', '.join(camvid.SEQUENCES)}.")


# Library arguments whose flag has another name; the others share their flag's name.
_RENAMED = {"num_classes": "classes", "tile": "crop"}


def flag_names(message):
    """A library error worded with the flags that set its arguments (`num_classes` -> --classes).

    Names that are neither flags nor renamed arguments are left as they are.
    """
    names = {flag.name for flag in FLAGS.get_key_flags_for_module(__name__)}

    def flag(name):
        name = _RENAMED.get(name, name)
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
