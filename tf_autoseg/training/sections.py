"""A run's configuration as nested, typed sections, in the manner of Model Garden's
`ExperimentConfig(task=(model, train_data, validation_data), trainer)`; no TensorFlow.

`ExperimentConfig` holds the data of training and of evaluation (two
`tf_autoseg.datasets.DataConfig`), the model (`tf_autoseg.modeling.config.ModelConfig`),
optimisation, evaluation and output. Each library takes its own section: the input builder
a DataConfig, `build_model` the model and optimisation, the run directory the output. Each
section checks its values when made, so a bad flag stops the program before TensorFlow loads.

The flags (`tf_autoseg.training.config.RunConfig`, the table) become sections here, once:
`experiment_config(flags)`, or `data_config` and `evaluation_config` for a program that needs
only those (`python -m tf_autoseg.evaluate`); the model's through `config.model_config`.
"""

import dataclasses
from collections.abc import Mapping

from tf_autoseg import arguments
from tf_autoseg import datasets
from tf_autoseg.datasets.config import DataConfig
from tf_autoseg.modeling.config import ModelConfig
from tf_autoseg.training.config import model_config

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "auto")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multiworker")
EVAL_MODES = ("same", "holdout")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimisationConfig:
    """How the weights are fitted: the schedule, its length, precision and devices.

    Attributes:
        steps: training steps in all (and the length of the cosine schedule).
        checkpoint_every: steps between checkpoints; divides `steps`.
        minutes: a budget of training time, summed over resumes (None: `steps` only).
        learning_rate, lr_schedule: Adam's rate, constant or cosine decay to 0 over `steps`.
        weight_ema: momentum of a moving average of the weights used after training (0: none).
        precision: the Keras dtype policy, or "auto" (timed on this machine).
        seed: seeds initialisation and the run's random draws.
        deterministic: TensorFlow op determinism.
        distribution: "auto", "none", "mirrored" or "multiworker".
        train: False for a model that is evaluated and exported, never fitted (the untrained
            baseline, `--variant=random`).
    """

    steps: int = 1000
    checkpoint_every: int = 100
    minutes: float | None = None
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    weight_ema: float = 0.0
    precision: str = "float32"
    seed: int = 0
    deterministic: bool = False
    distribution: str = "auto"
    train: bool = True

    def __post_init__(self):
        arguments.integer("steps", self.steps)
        arguments.integer("checkpoint_every", self.checkpoint_every)
        if self.steps % self.checkpoint_every:
            raise ValueError(
                "`checkpoint_every` must divide `steps`. Received: "
                f"checkpoint_every={self.checkpoint_every}, steps={self.steps}"
            )
        if self.minutes is not None:
            arguments.positive("minutes", self.minutes)
        arguments.positive("learning_rate", self.learning_rate)
        arguments.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        arguments.rate("weight_ema", self.weight_ema)
        arguments.choice("precision", self.precision, PRECISIONS)
        arguments.integer("seed", self.seed, 0)
        arguments.choice("distribution", self.distribution, DISTRIBUTIONS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """How the trained model is scored.

    Attributes:
        eval_mode: "same" (the cluster -> class mapping fitted and scored on the evaluation
            data, as IIC) or "holdout" (fitted on the labelled training part).
        eval_batches: batches scored (0: the whole evaluation data).
    """

    eval_mode: str = "same"
    eval_batches: int = 0

    def __post_init__(self):
        arguments.choice("eval_mode", self.eval_mode, EVAL_MODES)
        arguments.integer("eval_batches", self.eval_batches, 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """What a run writes, and where.

    Attributes:
        run_dir: flags, checkpoints, logs and metrics.
        log_every, summary_images: TensorBoard's loss points and images.
        export, export_dir, export_name: a SavedModel after training, in
            `<export_dir>/<export_name>/<n>` (default name: the run folder's).
    """

    run_dir: str
    log_every: int = 10
    summary_images: int = 4
    export: bool = True
    export_dir: str = "saved_models"
    export_name: str | None = None

    def __post_init__(self):
        if self.run_dir is None:
            raise ValueError(
                "`run_dir` is required: the folder for checkpoints, logs and metrics. "
                "Received: run_dir=None"
            )
        arguments.integer("log_every", self.log_every)
        arguments.integer("summary_images", self.summary_images)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One training run, section by section; `flags` is what its flags.json records."""

    train_data: DataConfig
    eval_data: DataConfig
    model: ModelConfig
    optimisation: OptimisationConfig
    evaluation: EvaluationConfig
    output: OutputConfig
    flags: Mapping


def data_config(flags, part):
    """The `DataConfig` of one part ("train" or "eval") of the flags' dataset, checked by
    the dataset (`Dataset.check`). A dataset without an evaluation part of its own is
    scored on its training part."""
    dataset = datasets.get(flags.dataset)
    tiles, sequences = (
        ("train_tiles", "train_sequences") if part == "train" else ("eval_tiles", "eval_sequences")
    )
    if not all(str(t).isdigit() for t in flags[tiles]):
        raise ValueError(f"--{tiles}={list(flags[tiles])}: a comma-separated list of tile numbers.")
    data = DataConfig(
        **_named(
            DataConfig,
            flags,
            but={"part", "tiles", "sequences", "scale", "prepared_dir", "data_service"},
        ),
        part=part if part == "train" or dataset.held_out else "train",
        tiles=tuple(int(t) for t in flags[tiles]),
        sequences=tuple(flags[sequences]),
        prepared_dir=flags.prepared_dir or None,
        data_service=(flags.data_service or None) if part == "train" else None,
    )
    dataset.check(data)
    return data


def evaluation_config(flags):
    """The `EvaluationConfig` of the flags; "holdout" needs a dataset with a held-out part."""
    evaluation = EvaluationConfig(eval_mode=flags.eval_mode, eval_batches=flags.eval_batches)
    if evaluation.eval_mode == "holdout" and not datasets.get(flags.dataset).held_out:
        raise ValueError(
            f"`eval_mode='holdout'`: dataset={flags.dataset!r} has no held-out split; use "
            "eval_mode='same'."
        )
    return evaluation


def experiment_config(flags):
    """The `ExperimentConfig` of training flags (a `RunConfig`), every section checked."""
    return ExperimentConfig(
        train_data=data_config(flags, "train"),
        eval_data=data_config(flags, "eval"),
        model=model_config(flags),
        optimisation=OptimisationConfig(
            **_named(OptimisationConfig, flags, but={"train"}),
            train=flags.variant != "random",  # the untrained baseline is never fitted
        ),
        evaluation=evaluation_config(flags),
        output=OutputConfig(**_named(OutputConfig, flags)),
        flags=flags,
    )


def _named(section, flags, but=()):
    """The flags named as the fields of `section` (but those of `but`), by name."""
    return {field.name: flags[field.name] for field in dataclasses.fields(section)
            if field.name not in but}  # fmt: skip
