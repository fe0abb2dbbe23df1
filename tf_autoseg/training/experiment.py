"""One training run, from a validated flag dict: data, model, strategy, fit, evaluate, export.

`tf_autoseg.train` parses and validates the flags; this module does the work,
so it can be called (and tested) without a command line.

Long (~360 lines) because a run is one sequence: which dataset each flag chooses, the model
from the flags, the strategy, the resume, the summaries and the evaluation are read in order.
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
from tf_autoseg import datasets
from tf_autoseg.evaluation import metrics
from tf_autoseg.modeling.model import AutoSegModel
from tf_autoseg.training import callbacks
from tf_autoseg.training import checkpoints
from tf_autoseg.training import inputs
from tf_autoseg.training import runs
from tf_autoseg.training.config import model_config


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


def pipeline(config, part, labels, start_batch=0):
    """The (dataset, DatasetInfo) of one part ("train" or "eval") of the flags' dataset.

    Unlabelled training data repeats, shuffles and flips, and starts after `start_batch`
    batches (a resumed run); labelled data is read once, in order. Streamed or prepared
    (`tf_autoseg.training.inputs`), else in memory. A folder without `--masks_dir` has no labelled
    part (None).
    """
    chosen = inputs.pipeline_for(config, part, labels, start_batch)
    if chosen is not None:
        return chosen
    in_memory = _in_memory_pipeline(config, part, labels)
    if in_memory is None:
        return None
    dataset, info = in_memory
    if start_batch:
        dataset = dataset.skip(start_batch)
    return inputs.for_workers(config, dataset, part == "train" and not labels), info


def _in_memory_pipeline(config, part, labels):
    training = part == "train" and not labels
    # Only training images are shrunk: the model shrinks what it segments itself
    # (`input_downsample`), so labelled data is scored at its own resolution.
    downsample = config["downsample"] if training else 1
    # Evaluation sets keep their last, partial batch: every labelled pixel counts.
    common = dict(batch_size=config["batch_size"], seed=config["seed"], shuffle=training,
                  repeat=training, augment=training, drop_remainder=training)  # fmt: skip
    hooks = datasets.get(config["dataset"]).hooks()
    return hooks.training_part(config, part, labels, common, downsample)


def build_data(config, start_batch=0):
    """(train, evaluation, fit) pipelines, each a (dataset, DatasetInfo) pair or None.

    `train` never carries labels. `evaluation` is the held-out part with
    labels (a folder's own images). `fit` is where the holdout mode fits its
    cluster -> class mapping, the labelled training part; None in "same" mode.
    """
    # A dataset without an evaluation split of its own (a folder) is scored on its images.
    own_split = datasets.get(config["dataset"]).held_out
    held_out = pipeline(config, "eval" if own_split else "train", True)
    fit = pipeline(config, "train", True) if config["eval_mode"] == "holdout" else None
    return pipeline(config, "train", False, start_batch), held_out, fit


def build_model(config, input_shape):
    """The AutoSegModel the flags describe (`config.model_config`), compiled with Adam."""
    model = AutoSegModel(input_shape=tuple(input_shape), config=model_config(config))
    model.compile(optimizer=optimizer(config))
    return model


def check_model(config):
    """Builds the flags' model once on 32 x 32 images and drops it: the model's own argument
    checks (stride, dropout, attention blocks, ...) refuse a bad flag before any data is read.

    32 x 32 passes the checks that depend on the input (a multiple of every grid stride, square,
    few attention positions); those are made again on the training crops by `run`.
    """
    build_model(config, (32, 32, 3))
    keras.backend.clear_session()  # the run's layer names start afresh


def optimizer(config):
    """Adam with the flags' learning-rate schedule and optional weight averaging."""
    rate = config["learning_rate"]
    if config["lr_schedule"] == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=config["steps"])
    ema = config["weight_ema"]
    return keras.optimizers.Adam(rate, use_ema=ema > 0, ema_momentum=ema or 0.99)


def _batches(dataset, limit):
    return dataset.take(limit) if limit else dataset


def evaluate(model, config, evaluation_set, fit_set):
    """Hungarian accuracy and mIoU of the main head (and many-to-one of the overclustering one)."""
    k, limit = config["num_classes"], config["eval_batches"]
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
    return results


def _log_files(part, info):
    """One log line for the files a pipeline skipped, one for those it converted, by name."""
    for kind, files in (("skipped", info.skipped), ("converted", info.adjusted)):
        if files:
            listed = "; ".join(f"{path} ({why})" for path, why in sorted(files.items()))
            logging.info("%s data: %s %d file(s): %s", part, kind, len(files), listed)


def run(config):
    """Trains (resuming if the run directory has checkpoints), evaluates, exports.

    Returns the metrics written to `<run_dir>/metrics.json`. A finished run (see
    `tf_autoseg.training.runs.finished`) is left as it is: its recorded metrics are returned.
    The run directory is held by this process from its first write to the end
    (`runs.held`): a second training into it is refused.
    """
    with contextlib.ExitStack() as hold:
        return _run(config, hold)


def _run(config, hold):
    start = time.time()
    note = runs.finished(config)
    if note is not None:
        logging.info(note)
        return json.loads((Path(config["run_dir"]) / "metrics.json").read_text())
    if config.get("data_service"):  # a missing dispatcher is named before any work
        from tf_autoseg.data import service

        service.wait_for_dispatcher(
            config["data_service"], config["data_service_timeout"], log=logging.info
        )
    keras.utils.set_random_seed(config["seed"])
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config["distribution"])
    chief = is_chief(strategy)
    run_dir = Path(config["run_dir"])
    runs.check_run_dir(config)
    # Data and model come first: a bad file or configuration stops the run before
    # anything is written. (Workers of a multi-worker run must share run_dir.)
    found = checkpoints.checkpoints(run_dir)
    start_batch = found[-1][0] if found else 0  # the training data starts after it
    (train, train_info), held_out, fit = build_data(config, start_batch)
    if train_info.num_examples < config["batch_size"]:  # a batch would repeat examples
        raise ValueError(
            f"--batch_size={config['batch_size']} is more than the {train_info.num_examples} "
            "training examples: a batch would hold examples twice. Lower --batch_size to "
            f"{train_info.num_examples} or fewer, or train on more data."
        )
    _log_files("training", train_info)
    policy, timings = choose_precision(config, train.element_spec.shape[1:])
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
            model = build_model(config, train.element_spec.shape[1:])
    if chief:
        hold.enter_context(runs.held(run_dir, log=logging.info))
        runs.record_flags(config)
        for path in checkpoints.remove_leftovers(run_dir):
            logging.info("Removed %s, left by an interrupted run.", path)
    done = int(model.optimizer.iterations)
    if done != start_batch:
        raise ValueError(f"{found[-1][1]} holds step {done}, its name says {start_batch}")
    runs.check_steps(config, done)
    if found and done < config["steps"]:
        logging.info(
            "%s: resuming at step %d of %d from %s", run_dir, done, config["steps"], found[-1][1]
        )
    elif found:  # stopped after training, before metrics.json
        logging.info("%s: trained to step %d; evaluating and exporting", run_dir, done)
    interval = config["checkpoint_every"]
    recorded = runs.progress(run_dir, done)
    budget = callbacks.TimeBudget(
        config["minutes"], recorded.get("train_seconds", 0.0), run_dir, chief
    )
    # The "random" variant is the untrained baseline: it is evaluated, never fitted.
    trained_nothing = not (done < config["steps"] and config["variant"] != "random")
    if not trained_nothing:
        watching = [checkpoints.CheckpointCallback(run_dir, is_chief=chief, every=interval)]
        ctrl_c = callbacks.StopOnCtrlC()
        watching += [budget, callbacks.StopOnNonFinite(run_dir, config["learning_rate"]), ctrl_c]
        if chief:
            watching.append(
                callbacks.SummaryCallback(run_dir / "logs", train, evaluation_set, config)
            )
        try:
            model.fit(
                train,  # starts at step `done` (build_data)
                epochs=config["steps"] // interval,
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
            reason = callbacks.op_error_reason(error.message)
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
        "labels_from": _labels_source(model),
        "steps": int(model.optimizer.iterations),
        "train_seconds": round(budget.seconds(), 1),
        "minutes": config["minutes"],
        # A run resumed after its last step trained nothing here: its figures are those
        # recorded at that step, never the empty trackers' zeros.
        "loss": recorded.get("loss") if trained_nothing else float(model.loss_tracker.result()),
        "mutual_information": recorded.get("mutual_information")
        if trained_nothing
        else float(model.mi_tracker.result()),
        "eval_mode": config["eval_mode"],
        "dataset": {
            "train": _describe(train_info),
            "evaluation": _describe(held_out and held_out[1]),
        },
    }
    if evaluation_set is not None:
        results["evaluation"] = evaluate(model, config, evaluation_set, fit and fit[0])
    results["wall_seconds"] = round(time.time() - start, 1)
    if chief:
        checkpoints.save_model(model, run_dir / "model.keras")
        if config["export"]:
            from tf_autoseg.serving import export

            name = config["export_name"] or run_dir.resolve().name
            from tf_autoseg.serving import classes

            # A run whose clusters were named (name_clusters) exports class ids.
            results["export"] = str(
                export.export_model(
                    model,
                    name,
                    output_dir=config["export_dir"],
                    classes=classes.named_path(None, run_dir),
                )
            )
        atomic.write_json(run_dir / "metrics.json", results)
    return results


def choose_precision(config, input_shape):
    """(policy, timings or None) of `--precision`; for "auto" the policy `precision.choose`
    takes from timing this model's steps at the run's batch and crop."""
    if config["precision"] != "auto":
        return config["precision"], None
    from tf_autoseg.training import precision

    keras.utils.set_random_seed(config["seed"])
    batch = config["batch_size"]
    timings = precision.probe(lambda: build_model(config, input_shape), input_shape, batch)
    choice = precision.choose(timings)
    logging.info(
        "--precision=auto: %s (median seconds per step of %d images, %d rounds: %s)",
        choice, batch, 3, ", ".join(f"{k} {v:.3f}" for k, v in timings.items()),
    )  # fmt: skip
    keras.utils.set_random_seed(config["seed"])  # the run starts as it would without a probe
    return choice, timings


CENTRE_BATCHES = 50  # training batches whose outputs the label-free centres are fitted on


def finish_training(model, train):
    """After the last step: the weight average takes its place, and the centres are fitted.

    Idempotent, so a run stopped after its last checkpoint ends the same way when resumed.
    """
    if getattr(model.optimizer, "use_ema", False):
        model.optimizer.finalize_variable_values(model.trainable_variables)
    if model.centres is not None:
        model.fit_centres(train.take(CENTRE_BATCHES), seed=model.config.seed)


def _labels_source(model):
    if model.centres is None or not model.centres.fitted:
        return "head"
    return model.config.labelling.labels_from


def _describe(info):
    """A JSON-ready summary of a DatasetInfo, with the files skipped or converted (and why)."""
    if info is None:
        return None
    return dataclasses.asdict(info)
