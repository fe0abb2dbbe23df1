"""One training run from its sections (`tf_autoseg.training.sections.ExperimentConfig`): data,
model, strategy, fit, evaluate, export.

`tf_autoseg.train` parses and checks the flags; this module does the work, so it can be called
(and tested) without a command line. A run is one sequence, read in order: the strategy, the
resume, the inputs (`tf_autoseg.training.inputs`), the model from its section, the summaries,
the evaluation and the export.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

from tf_autoseg import atomic
from tf_autoseg.evaluation import metrics
from tf_autoseg.modeling.model import AutoSegModel
from tf_autoseg.training import callbacks
from tf_autoseg.training import checkpoints
from tf_autoseg.training import inputs
from tf_autoseg.training import runs


def make_strategy(kind):
    """The tf.distribute strategy: none, MirroredStrategy or MultiWorkerMirroredStrategy."""
    if kind == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        kind = (
            "multiworker" if "TF_CONFIG" in os.environ else "mirrored" if len(gpus) > 1 else "none"
        )
    if kind == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run's files (worker 0, or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def build_model(model_config, input_shape, optimisation):
    """The AutoSegModel of `model_config` (a `ModelConfig`), compiled with `optimizer`."""
    model = AutoSegModel(input_shape=tuple(input_shape), config=model_config)
    model.compile(optimizer=optimizer(optimisation))
    return model


def check_model(model_config, optimisation):
    """Builds the model once on 32 x 32 images and drops it: the model's own argument
    checks (stride, dropout, attention blocks, ...) refuse a bad flag before any data is read.

    32 x 32 passes the checks that depend on the input (a multiple of every grid stride, square,
    few attention positions); those are made again on the training crops by `run`.
    """
    build_model(model_config, (32, 32, 3), optimisation)
    keras.backend.clear_session()  # the run's layer names start afresh


def optimizer(optimisation):
    """Adam with the learning-rate schedule and optional weight averaging of `optimisation`."""
    rate = optimisation.learning_rate
    if optimisation.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=optimisation.steps)
    ema = optimisation.weight_ema
    return keras.optimizers.Adam(rate, use_ema=ema > 0, ema_momentum=ema or 0.99)


def evaluation_sets(evaluation, eval_data, train_data):
    """(held-out, fit): the (dataset, info) pairs `evaluate` scores, or None where missing.

    The held-out part is `eval_data` with labels (None for a folder without masks); the fit
    part, where the "holdout" mode fits its cluster -> class mapping, is the labelled
    training part (None in "same" mode).
    """
    held_out = inputs.build(eval_data, labels=True)
    fit = inputs.build(train_data, labels=True) if evaluation.eval_mode == "holdout" else None
    return held_out, fit


def _batches(dataset, limit):
    return dataset.take(limit) if limit else dataset


def evaluate(model, evaluation_set, fit_set, num_classes, batches=0, adapt=False, seed=0):
    """Hungarian accuracy and mIoU of the main head (and many-to-one of the overclustering one),
    on `batches` batches of each set (0: all); the mapping is fitted on `fit_set`, or on the
    scored set itself when it is None.

    With `adapt`, a model with a label-free stage (`labels_from` other than "head") first
    refits it (seeded by `seed`, labels unread) on the images the mapping is fitted on (the
    scored ones, or `fit_set`'s; their first `batches` batches, or `LABELLING_BATCHES`), as
    the k-means baselines fit their clusters; the results then say so under "labelling".
    """
    k, limit = num_classes, batches
    stage = getattr(model, "labelling", None)
    adapt = bool(adapt) and stage is not None
    if adapt:
        fitted_on = evaluation_set if fit_set is None else fit_set
        model.fit_labelling(_batches(fitted_on, limit or LABELLING_BATCHES), seed=seed)
    heads = ("main",) + (("overclustering",) if model.overclustering else ())
    score = metrics.model_confusions(model, _batches(evaluation_set, limit), k, heads)
    fit = (
        None
        if fit_set is None
        else metrics.model_confusions(model, _batches(fit_set, limit), k, heads)
    )
    results = {}
    for head in heads:
        over = head == "overclustering"
        if fit is None:
            results[head] = metrics.protocol(score[head], many_to_one=over)
        else:
            results[head] = metrics.protocol(fit[head], score[head], many_to_one=over)
    if stage is not None:
        results["labelling"] = {"labels_from": labels_source(model), "adapted": adapt}
    return results


def _log_files(part, info):
    """One log line for the files a pipeline skipped, one for those it converted, by name."""
    for kind, files in (("skipped", info.skipped), ("converted", info.adjusted)):
        if files:
            listed = "; ".join(f"{path} ({why})" for path, why in sorted(files.items()))
            logging.info("%s data: %s %d file(s): %s", part, kind, len(files), listed)


def run(config):
    """Trains (resuming if the run directory has checkpoints), evaluates, exports.

    `config` is the run's `ExperimentConfig`. Returns the metrics written to
    `<run_dir>/metrics.json`. A finished run (see `tf_autoseg.training.runs.finished`) is left
    as it is: its recorded metrics are returned. The run directory is held by this process (the
    chief) from before its first read to the end (`runs.held`): a second training into it is
    refused before it reads a checkpoint the first may be replacing.
    """
    with contextlib.ExitStack() as hold:
        try:
            return _run(config, hold)
        except tf.errors.DataLossError as error:  # outside fit too: summaries, evaluation
            found = checkpoints.checkpoints(config.output.run_dir)
            kept = (
                f"The last checkpoint, {found[-1][1]} (step {found[-1][0]}), is kept: the same "
                "command resumes from it." if found else "No checkpoint was written yet."
            )  # fmt: skip
            raise ValueError(
                f"reading the data failed: {_read_failure(error, config)}. {kept}"
            ) from None


def _read_failure(error, config):
    """What failed, on one line, from a TensorFlow error met reading the data: the damaged
    shard of prepared records by name (the error gives an offset, not a file)."""
    reason = callbacks.op_error_reason(error.message)
    prepared = config.train_data.prepared_dir or config.eval_data.prepared_dir
    if prepared and isinstance(error, tf.errors.DataLossError):
        from tf_autoseg.data import records

        found = records.damaged_shard(prepared)
        if found is not None:
            reason = (
                f"{found[0]}: {found[1]} (damaged since it was prepared: restore it, or "
                f"prepare {prepared} again with python -m tf_autoseg.prepare)"
            )
    return reason


def _run(config, hold):
    start = time.time()
    train_data, optimisation, output = config.train_data, config.optimisation, config.output
    run_dir = Path(output.run_dir)
    if runs.is_chief(optimisation.distribution):  # before anything in run_dir is read
        hold.enter_context(runs.held(run_dir, log=logging.info))
    note = runs.finished(output, optimisation, config.flags)
    if note is not None:
        logging.info(note)
        return json.loads((run_dir / "metrics.json").read_text())
    if train_data.data_service:  # a missing dispatcher is named before any work
        from tf_autoseg.data import service

        service.wait_for_dispatcher(
            train_data.data_service, train_data.data_service_timeout, log=logging.info
        )
    keras.utils.set_random_seed(optimisation.seed)
    if optimisation.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(optimisation.distribution)
    chief = is_chief(strategy)
    # Data and model come first: a bad file or configuration stops the run before
    # anything is written. (Workers of a multi-worker run must share run_dir.)
    found = checkpoints.checkpoints(run_dir)
    start_batch = found[-1][0] if found else 0  # the training data starts after it
    held_out, fit = evaluation_sets(config.evaluation, config.eval_data, train_data)
    train, train_info = inputs.build(
        train_data, start_batch=start_batch, workers=inputs.worker_split(optimisation.distribution),
        job_name=run_dir.resolve().name,
    )  # fmt: skip
    if train_info.num_examples < train_data.batch_size:  # a batch would repeat examples
        raise ValueError(
            f"--batch_size={train_data.batch_size} is more than the {train_info.num_examples} "
            "training examples: a batch would hold examples twice. Lower --batch_size to "
            f"{train_info.num_examples} or fewer, or train on more data."
        )
    _log_files("training", train_info)
    input_shape = train.element_spec.shape[1:]
    policy, timings = choose_precision(
        optimisation, lambda: build_model(config.model, input_shape, optimisation), input_shape,
        train_data.batch_size,
    )  # fmt: skip
    keras.mixed_precision.set_global_policy(policy)
    held_out_info = held_out[1] if held_out else None
    if held_out_info and (held_out_info.skipped, held_out_info.adjusted) != (
        train_info.skipped,
        train_info.adjusted,
    ):
        _log_files("evaluation", held_out_info)
    evaluation_set = held_out[0] if held_out else None
    with strategy.scope():
        if found:
            model = checkpoints.load_checkpoint(found[-1][1])
        else:
            model = build_model(config.model, input_shape, optimisation)
    done = int(model.optimizer.iterations)
    if done != start_batch:
        raise ValueError(f"{found[-1][1]} holds step {done}, its name says {start_batch}")
    runs.check_steps(run_dir, optimisation.steps, done)
    if chief:
        runs.record_flags(run_dir, config.flags)
        for path in checkpoints.remove_leftovers(run_dir):
            logging.info("Removed %s, left by an interrupted run.", path)
    if found and done < optimisation.steps:
        logging.info(
            "%s: resuming at step %d of %d from %s", run_dir, done, optimisation.steps,
            found[-1][1],
        )  # fmt: skip
    elif found:  # stopped after training, before metrics.json
        logging.info("%s: trained to step %d; evaluating and exporting", run_dir, done)
    interval = optimisation.checkpoint_every
    recorded = runs.progress(run_dir, done)
    budget = callbacks.TimeBudget(
        optimisation.minutes, recorded.get("train_seconds", 0.0), run_dir, chief
    )
    trained_nothing = not (done < optimisation.steps and optimisation.train)
    if not trained_nothing:
        watching = [checkpoints.CheckpointCallback(run_dir, is_chief=chief, every=interval)]
        ctrl_c = callbacks.StopOnCtrlC()
        stop = callbacks.StopOnNonFinite(run_dir, optimisation.learning_rate)
        watching += [budget, stop, ctrl_c]
        if chief:
            watching.append(
                callbacks.SummaryCallback(
                    run_dir / "logs",
                    train,
                    evaluation_set,
                    config.eval_data.num_classes,
                    images=output.summary_images,
                    log_every=output.log_every,
                    eval_batches=config.evaluation.eval_batches,
                )  # fmt: skip
            )
        try:
            model.fit(
                train,  # starts at step `done` (inputs.build's start_batch)
                epochs=optimisation.steps // interval,
                initial_epoch=done // interval,
                steps_per_epoch=interval,
                callbacks=watching,
                shuffle=False,  # the dataset shuffles itself (Keras would ignore True)
                verbose=1 if sys.stdout.isatty() else 2,  # a progress bar, or a line an epoch
            )
        except KeyboardInterrupt:
            raise callbacks.Interrupted(callbacks.resume_note(model, run_dir)) from None
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            # A file that fails while training (a shard truncated after the checks, an image
            # that decodes only in part): one line, where the run resumes.
            reason = _read_failure(error, config)
            raise ValueError(f"reading the training data failed: {reason}. "
                             + callbacks.resume_note(model, run_dir)) from None  # fmt: skip
        finally:
            ctrl_c.restore()
        if ctrl_c.requested:  # stopped at the end of a step: where the same command resumes
            raise callbacks.Interrupted(callbacks.resume_note(model, run_dir))
    finish_training(model, train)
    results = {
        "precision": policy,
        "precision_timings": timings,
        "labels_from": labels_source(model),
        "steps": int(model.optimizer.iterations),
        "train_seconds": round(budget.seconds(), 1),
        "minutes": optimisation.minutes,
        # A run resumed after its last step trained nothing here: its figures are those
        # recorded at that step, never the empty trackers' zeros.
        "loss": recorded.get("loss") if trained_nothing else float(model.loss_tracker.result()),
        "mutual_information": recorded.get("mutual_information")
        if trained_nothing
        else float(model.mi_tracker.result()),
        "eval_mode": config.evaluation.eval_mode,
        "dataset": {
            "train": _describe(train_info),
            "evaluation": _describe(held_out and held_out[1]),
        },
    }
    if evaluation_set is not None:
        results["evaluation"] = evaluate(
            model, evaluation_set, fit and fit[0], config.eval_data.num_classes,
            config.evaluation.eval_batches,
        )  # fmt: skip
    results["wall_seconds"] = round(time.time() - start, 1)
    if chief:
        checkpoints.save_model(model, run_dir / "model.keras")
        if output.export:
            from tf_autoseg.serving import export

            name = output.export_name or run_dir.resolve().name
            from tf_autoseg.serving import classes

            # A run whose clusters were named (name_clusters) exports class ids.
            results["export"] = str(
                export.export_model(
                    model,
                    name,
                    output_dir=output.export_dir,
                    classes=classes.named_path(None, run_dir),
                )
            )
        atomic.write_json(run_dir / "metrics.json", results)
    return results


def choose_precision(optimisation, build, input_shape, batch_size):
    """(policy, timings or None) of `optimisation.precision`; for "auto" the policy
    `precision.choose` takes from timing `build()`'s steps at the run's batch and crop."""
    if optimisation.precision != "auto":
        return optimisation.precision, None
    from tf_autoseg.training import precision

    keras.utils.set_random_seed(optimisation.seed)
    timings = precision.probe(build, input_shape, batch_size)
    choice = precision.choose(timings)
    logging.info(
        "--precision=auto: %s (median seconds per step of %d images, %d rounds: %s)",
        choice, batch_size, 3, ", ".join(f"{k} {v:.3f}" for k, v in timings.items()),
    )  # fmt: skip
    keras.utils.set_random_seed(optimisation.seed)  # the run starts as it would without a probe
    return choice, timings


LABELLING_BATCHES = 50  # training batches the label-free stage is fitted on at the end


def finish_training(model, train):
    """After the last step: the weight average takes its place, and the label-free stage of
    `labels_from` (if any) is fitted on training images.

    Idempotent, so a run stopped after its last checkpoint ends the same way when resumed.
    """
    if getattr(model.optimizer, "use_ema", False):
        model.optimizer.finalize_variable_values(model.trainable_variables)
    if model.labelling is not None:
        model.fit_labelling(train.take(LABELLING_BATCHES), seed=model.config.seed)


def labels_source(model):
    if model.labelling is None or not model.labelling.fitted:
        return "head"
    return model.config.labelling.labels_from


def _describe(info):
    """A JSON-ready summary of a DatasetInfo, with the files skipped or converted (and why)."""
    if info is None:
        return None
    return dataclasses.asdict(info)
