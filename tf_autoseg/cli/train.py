"""Trains, evaluates and exports a model: `python -m tf_autoseg.train --flagfile=experiments/X.cfg`.

Flags are validated before any work. The run directory (`--run_dir`) holds
`flags.json`, `checkpoints/`, TensorBoard `logs/`, the final `model.keras`
and `metrics.json`; the SavedModel goes to `<export_dir>/<export_name>/<n>`.
Run the same command again after a kill (SIGKILL included): training resumes
from the last checkpoint, and with `--deterministic` ends with the weights an
uninterrupted run would have. Running a finished run again changes nothing and says so;
raising `--steps` continues it. TensorFlow is imported only once the flags are checked.

The flags are defined from their table, `tf_autoseg.training.config.RunConfig`, and become the
run's sections (`tf_autoseg.training.sections`) once, before TensorFlow loads.
"""

import contextlib
import json
import os
import sys
from pathlib import Path

from absl import flags
from absl import logging

from tf_autoseg.cli import commands
from tf_autoseg.cli import run_flags
from tf_autoseg.training import runs
from tf_autoseg.training import sections

run_flags.define_training()
flags.adopt_module_key_flags(run_flags)


def check_outputs(output):
    """Checks what stops a run for its place rather than its flags, before any work: the
    folders it writes (`output`, an `OutputConfig`) and the export's name and models.config,
    and TF_CONFIG. The flags' values are checked by their sections
    (`tf_autoseg.training.sections`), each model argument by `ModelConfig`."""
    if "TF_CONFIG" in os.environ:
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise ValueError(f"The TF_CONFIG environment variable is not JSON: {error}") from None
    folders = {"run_dir": output.run_dir}
    if output.export:
        folders["export_dir"] = output.export_dir
    for flag, folder in folders.items():
        commands.check_writable(flag, folder)  # creates and removes a file: no trace left
    if output.export:  # what would stop the export, found before training rather than after
        from tf_autoseg.serving import export

        name = output.export_name or Path(output.run_dir).resolve().name
        if not export.NAME_PATTERN.match(name):
            raise ValueError(
                f"--export_name={name!r} (the run folder's name unless given): a model name "
                "is letters, digits, '_', '.' and '-', not starting with '.', '_' or '-'."
            )
        export.read_models_config(output.export_dir)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = sections.experiment_config(run_flags.run_config())  # every value, before TensorFlow
    check_outputs(config.output)
    with contextlib.ExitStack() as hold:
        # Held before anything in the run directory is read: a second training into it is
        # refused with one line, never told that a checkpoint the first replaced is corrupt.
        if runs.is_chief(config.optimisation.distribution):
            hold.enter_context(runs.held(config.output.run_dir, log=logging.info))
        commands.start_tensorflow()
        from tf_autoseg.training import experiment

        note = runs.finished(config.output, config.optimisation, config.flags)
        if note:
            logging.info(note)
            return
        experiment.check_model(config.model, config.optimisation)
        metrics = experiment.run(config)  # holds it again: a no-op in this process
    print(summary(metrics, config.output.run_dir), flush=True)


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
