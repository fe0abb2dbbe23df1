"""Segmentation quality on real data: a training recipe against the baselines, over seeds.

A recipe is the training flags (a flagfile such as experiments/dubai.cfg, plus any flag on the
command line); `--task` chooses the data and the split, overriding the recipe's data flags:

| task | trains on (labels unused) | scored on | cluster -> class mapping fitted on |
|---|---|---|---|
| dubai | tiles 1-4 | tiles 5-6 (validation) | tiles 1-4's labels (holdout) |
| dubai_report | tiles 1-6 | tiles 7-8 (report) | tiles 1-6's labels (holdout) |
| camvid3, camvid11 | `train-*` frames | `val-*` frames | the scored frames (IIC's "same") |
| camvid_0006R0 | sequences 0016E5 + 0001TP (train and val) | sequence 0006R0 (choosing) | the scored frames |
| camvid_0001TP | sequences 0016E5 + 0006R0 | sequence 0001TP (reporting) | the scored frames |
| camvid_0001TP_same | sequence 0001TP | the same frames (transductive) | the scored frames |
| cocostuff3 | cocostuff-mini train | its val images | the scored images (smoke check) |

For every seed it trains the recipe for the training program's `--minutes` (checked at each
evaluation point) or `--steps`, scoring the held-out part every `--eval_every` steps, and scores the baselines of
that seed: the majority class, k-means on RGB pixels, and the untrained network + k-means on its
features, all by the same code. At each point it also records what needs no label: the cluster
sizes and the mutual information of two orderings on the held-out images, the criterion
`--select=mi` picks a point by. Prints one JSON report (per seed, and the mean and spread over
seeds of each figure) and writes it to `--out` (default benchmarks/results/<task>-<recipe>-<time>.json).

    python -m benchmarks.quality --flagfile=experiments/dubai.cfg --task=dubai --seeds=0,1,2 \\
        --minutes=20 --eval_every=500
    python -m benchmarks.quality --flagfile=experiments/quickstart.cfg --task=cocostuff3 \\
        --steps=4 --eval_every=2 --width=8 --quick           # seconds: checks that it all works

The tasks, the baselines and the per-seed curve are scored by one piece of code, or AC and the
baselines would not be compared alike.
"""

import contextlib
import functools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_autoseg.cli import run_flags  # noqa: E402
from tf_autoseg.training import sections  # noqa: E402

FLAGS = flags.FLAGS
run_flags.define_training()  # the training flags describe the recipe
flags.DEFINE_enum(
    "task", "dubai",
    ["dubai", "dubai_report", "camvid3", "camvid11", "camvid_0006R0", "camvid_0001TP",
     "camvid_0001TP_same", "cocostuff3"],
    "Data and split (see the module's table).",
)  # fmt: skip
flags.DEFINE_string("data_root", "../shared/data", "Folder holding the datasets.")
flags.DEFINE_string("recipe", None, "Name of the recipe in the report (default: the flagfile's).")
flags.DEFINE_list("seeds", ["0", "1"], "Training seeds; baselines use the same seeds.")
flags.DEFINE_integer("eval_every", 500, "Steps between held-out evaluations (the curve).")
flags.DEFINE_bool("baselines", True, "Score the baselines (k-means RGB, untrained + k-means).")
flags.DEFINE_bool("feature_kmeans", True, "Also score k-means on the trained features.")
flags.DEFINE_bool("quick", False, "Two evaluation batches: checks that it all works.")
flags.DEFINE_string("save_models", None, "Folder to save each seed's final model in (.keras).")
flags.DEFINE_string("out", None, "Where to write the JSON report ('' = nowhere).")
flags.DEFINE_string(
    "from_models", None,
    "Score the models a run with --save_models saved in this folder (<task>-<recipe>-seed<N>"
    ".keras) instead of training: their network under this recipe's labelling flags.",
)  # fmt: skip

TASKS = {
    "dubai": dict(dataset="dubai", sub="dubai-aerial", num_classes=5, train_tiles=["1", "2", "3", "4"],
                  eval_tiles=["5", "6"], eval_mode="holdout"),
    "dubai_report": dict(dataset="dubai", sub="dubai-aerial", num_classes=5,
                         train_tiles=["1", "2", "3", "4", "5", "6"], eval_tiles=["7", "8"],
                         eval_mode="holdout"),
    "camvid3": dict(dataset="camvid", sub="camvid-trainval", num_classes=3, eval_mode="same"),
    "camvid11": dict(dataset="camvid", sub="camvid-trainval", num_classes=11, eval_mode="same"),
    # By video sequence: the scored sequence is never trained on (val-* is 0016E5's frames).
    "camvid_0006R0": dict(dataset="camvid", sub="camvid-trainval", num_classes=3, eval_mode="same",
                          train_sequences=["0016E5", "0001TP"], eval_sequences=["0006R0"]),
    "camvid_0001TP": dict(dataset="camvid", sub="camvid-trainval", num_classes=3, eval_mode="same",
                          train_sequences=["0016E5", "0006R0"], eval_sequences=["0001TP"]),
    # Transductive: trains on the unlabelled frames it is scored on (as the baselines fit them).
    "camvid_0001TP_same": dict(dataset="camvid", sub="camvid-trainval", num_classes=3,
                               eval_mode="same", train_sequences=["0001TP"],
                               eval_sequences=["0001TP"]),
    "cocostuff3": dict(dataset="cocostuff", sub="cocostuff-mini", num_classes=3, eval_mode="same",
                       min_target_share=0.0, min_side=300),
}  # fmt: skip
SAMPLE = 200_000  # pixels that fit each k-means
MI_BATCHES = 16  # held-out batches of the label-free mutual information
RESTARTS = 10  # k-means runs on features, the lowest inertia kept (as the baselines and centres)


def config():
    """The recipe's training flags (a `RunConfig`) with the task's data flags. Nothing is
    written to their run folder."""
    task = dict(TASKS[FLAGS.task])
    root = Path(FLAGS.data_root) / task.pop("sub")
    if not root.is_dir():
        raise app.UsageError(f"--data_root: {root} is not a folder (the {FLAGS.task} data)")
    recipe = run_flags.run_config()
    return recipe.replace(
        **task, data_dir=str(root), export=False, run_dir=recipe.run_dir or "runs/quality",
        eval_batches=2 if FLAGS.quick else recipe.eval_batches,
    )  # fmt: skip


def _mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def _scores(pair, mode):
    from tf_autoseg.evaluation import metrics

    fit, score = pair
    result = metrics.protocol(fit, score if mode == "holdout" else None)
    return {key: result[key] for key in ("pixel_accuracy", "mean_iou", "per_class_iou")}


def baselines(run, seed, fit, held_out, input_shape):
    """Majority, RGB k-means and untrained network + k-means, scored like the recipe."""
    from tf_autoseg.evaluation import baselines as lib
    from tf_autoseg.evaluation import metrics
    from tf_autoseg.training import experiment

    k, mode = run.eval_data.num_classes, run.evaluation.eval_mode
    fit = held_out if mode == "same" else fit
    sample = 20_000 if FLAGS.quick else SAMPLE
    majority = metrics.ConfusionMatrix(k)
    for _, labels in held_out:
        majority.update(labels.numpy(), np.zeros_like(labels.numpy()))
    result = {"majority_class": metrics.majority_baseline(majority)}
    result["majority_class"].pop("per_class_iou")
    rgb = lib.kmeans_baseline(fit, held_out, k, sample=sample, seed=seed)
    result["kmeans_rgb"] = _scores(rgb, mode)
    keras.utils.set_random_seed(seed)
    untrained = experiment.build_model(run.model, input_shape, run.optimisation)
    result["untrained_kmeans"] = _scores(feature_kmeans(untrained, fit, held_out, k, seed), mode)
    return result


def evaluate_point(model, run, train_set, fit, held_out, seed):
    """Scores of the trained model now, label-free figures beside.

    "labels" scores what the model serves (its export): the main head, or the centres of
    `--labels_from`, fitted here on training batches as the training program does at the
    end. "head" is the main head's argmax, "feature_kmeans" k-means on its features fitted on
    the fit set, both for comparison.
    """
    from tf_autoseg.evaluation import metrics
    from tf_autoseg.training import experiment

    k, mode = run.eval_data.num_classes, run.evaluation.eval_mode
    heads = ("main",) + (("overclustering",) if model.overclustering else ())

    def confusions():
        score = metrics.model_confusions(model, held_out, k, heads)
        fitted = score if mode == "same" else metrics.model_confusions(model, fit, k, heads)
        return fitted, score

    if model.labelling is not None:
        model.labelling.reset()  # unfitted: the head answers
    fitted, score = confusions()
    point = {"head": _scores((fitted["main"], score["main"]), mode)}
    if "overclustering" in heads:
        over = metrics.protocol(fitted["overclustering"], score["overclustering"],
                                   many_to_one=True)  # fmt: skip
        point["overclustering_many_to_one"] = over["pixel_accuracy"]
    sizes = score["main"].counts.sum(axis=0)
    point["cluster_sizes"] = (sizes / max(sizes.sum(), 1)).round(4).tolist()
    if model.labelling is not None:
        experiment.finish_training(model, train_set)  # fitted on training images: served
        served = confusions()
        point["labels"] = _scores((served[0]["main"], served[1]["main"]), mode)
        point["labels_from"] = experiment.labels_source(model)
        # Refitted where the mapping is fitted (the scored images, or the fit set's for
        # "holdout"), as evaluate does and the baselines' clusters are.
        refit = held_out if mode == "same" else fit
        model.fit_labelling(refit.take(experiment.LABELLING_BATCHES), seed=seed)
        adapted = confusions()
        point["labels_adapted"] = _scores((adapted[0]["main"], adapted[1]["main"]), mode)
    else:
        point["labels"] = point["head"]
    if FLAGS.feature_kmeans:
        point["feature_kmeans"] = _scores(feature_kmeans(model, fit, held_out, k, seed), mode)
        if model.overclustering:
            pair = feature_kmeans(model, fit, held_out, k, seed, source="overclustering")
            point["overclustering_kmeans"] = _scores(pair, mode)
    # Label-free: the two-ordering mutual information on held-out images (a subset).
    point["held_out_mi"] = held_out_mutual_information(model, held_out, limit=MI_BATCHES)
    return point


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block, the model holds its optimizer's weight average (`--weight_ema`).

    Without an average it is a no-op; the trained weights are restored on exit.
    """
    optimizer = model.optimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield model
        return
    variables = model.trainable_variables
    saved = [v.numpy() for v in variables]
    for variable, average in zip(variables, averages):
        if average is not None:
            variable.assign(average)
    try:
        yield model
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)


def held_out_mutual_information(model, batches, limit=0):
    """Mutual information of the main head under the model's first two orderings, on unlabelled
    images: the objective itself, measured where training never looked (a label-free criterion).
    """
    from tf_autoseg.modeling import losses

    counts = 0.0
    pair = model.config.views.orderings[:2]
    for batch in batches.take(limit) if limit else batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        p1 = model.network.forward(images, pair[0]).probabilities
        p2 = model.network.forward(images, pair[1]).probabilities
        counts += losses.joint_counts(p1, p2, model.config.objective.displacement).numpy()
    return float(losses.mutual_information_from_counts(np.asarray(counts, np.float32)))


def _grid_features(model, images, source="features"):
    features, _, over = model.network.forward(images)
    return tf.cast(features if source == "features" else over, tf.float32).numpy()


def feature_kmeans(model, fit, held_out, k, seed, source="features"):
    """(fit, score) confusions of k-means on the model's features, on its own grid.

    The centres are fitted on a seeded sample of the fit set's grid features (labels unused);
    each pixel takes the nearest centre after the grid's distance maps are upsampled to the
    image bilinearly, as the head's probabilities are. `source`: "features" (g_ar's output)
    or "overclustering" (that head's probabilities).
    """
    from tf_autoseg.evaluation import baselines as lib
    from tf_autoseg.evaluation import metrics
    from tf_autoseg.modeling.kmeans import sample_pool

    rng = np.random.default_rng(seed)
    fit = fit if fit is not None else held_out
    arrays = (_grid_features(model, images, source) for images, _ in fit)
    arrays = (f.reshape(-1, f.shape[-1]) for f in arrays)
    pool = sample_pool(arrays, SAMPLE // 4, 4096, rng)
    centres = lib.kmeans(pool, k, seed=seed, restarts=RESTARTS).astype(np.float32)

    def confusion(batches):
        matrix = metrics.ConfusionMatrix(k)
        for images, labels in batches:
            f = _grid_features(model, images, source)
            distance = (f**2).sum(-1, keepdims=True) - 2 * f @ centres.T + (centres**2).sum(1)
            distance = tf.image.resize(-distance, tf.shape(images)[1:3], method="bilinear")
            matrix.update(np.asarray(labels), tf.argmax(distance, -1).numpy())
        return matrix

    return confusion(fit), confusion(held_out)


def run_seed(run, seed, data):
    """Trains one seed (`run`: its sections), scoring along the way; returns its record."""
    from tf_autoseg.training import experiment

    train_set, held_out, fit = data
    input_shape = train_set.element_spec.shape[1:]
    record = {"seed": seed}
    if FLAGS.baselines:
        record["baselines"] = baselines(run, seed, fit, held_out, input_shape)
    keras.utils.set_random_seed(seed)
    model = experiment.build_model(run.model, input_shape, run.optimisation)
    if FLAGS.from_models:
        from tf_autoseg.modeling import saving  # loads the older layouts too

        saved = (
            Path(FLAGS.from_models)
            / f"{FLAGS.task}-{FLAGS.recipe or _flagfile_name()}-seed{seed}.keras"
        )
        model.network.set_weights(saving.load(saved, compile=False).network.get_weights())
        tick = time.time()
        point = evaluate_point(model, run, train_set, fit, held_out, seed)
        point.update(eval_seconds=round(time.time() - tick, 1), model=str(saved))
        print(json.dumps({"seed": seed, **{
            name: round(point[name]["mean_iou"], 4)
            for name in ("labels", "labels_adapted", "head", "feature_kmeans") if name in point
        }}), flush=True)  # fmt: skip
        record.update(curve=[point], final=point, selected_by_mi=point)
        return record
    minutes = run.optimisation.minutes
    curve, start = [], time.time()

    class Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            trained = time.time() - start - sum(p["eval_seconds"] for p in curve)
            tick = time.time()
            with averaged_weights(model):
                point = evaluate_point(model, run, train_set, fit, held_out, seed)
            point.update(
                steps=int(model.optimizer.iterations),
                train_minutes=round(trained / 60, 2),
                eval_seconds=round(time.time() - tick, 1),
                loss=float(model.loss_tracker.result()),
            )
            curve.append(point)
            progress = {"seed": seed, "steps": point["steps"], "minutes": point["train_minutes"]}
            for name in ("labels", "labels_adapted", "head", "feature_kmeans",
                         "overclustering_kmeans"):  # fmt: skip
                if name in point:
                    progress[name] = [round(point[name][key], 4)
                                      for key in ("pixel_accuracy", "mean_iou")]  # fmt: skip
            progress.update(sizes=point["cluster_sizes"], mi=round(point["held_out_mi"], 4))
            print(json.dumps(progress), flush=True)
            if minutes and trained > minutes * 60:
                self.model.stop_training = True

    epochs = max(1, run.optimisation.steps // FLAGS.eval_every)
    model.fit(
        train_set, steps_per_epoch=FLAGS.eval_every, epochs=epochs, verbose=0, callbacks=[Curve()]
    )
    record["curve"] = curve
    if FLAGS.save_models:
        folder = Path(FLAGS.save_models)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / f"{FLAGS.task}-{FLAGS.recipe or _flagfile_name()}-seed{seed}.keras")
    record["final"] = curve[-1]
    record["selected_by_mi"] = max(curve, key=lambda p: p["held_out_mi"])
    return record


def summary(records):
    """Mean and spread over seeds of each method's accuracy and mIoU."""
    methods = {
        "labels_final": lambda r: r["final"]["labels"],
        "labels_adapted_final": lambda r: r["final"].get("labels_adapted"),
        "head_final": lambda r: r["final"]["head"],
        "head_selected_by_mi": lambda r: r["selected_by_mi"]["head"],
        "feature_kmeans_final": lambda r: r["final"].get("feature_kmeans"),
        "overclustering_kmeans_final": lambda r: r["final"].get("overclustering_kmeans"),
    }
    if "baselines" in records[0]:
        for name in records[0]["baselines"]:
            methods[name] = lambda r, name=name: r["baselines"][name]
    table = {}
    for name, get in methods.items():
        entries = [get(r) for r in records]
        if any(e is None for e in entries):
            continue
        table[name] = {
            key: _mean_spread([e[key] for e in entries]) for key in ("pixel_accuracy", "mean_iou")
        }
    return table


def main(argv):
    del argv
    from tf_autoseg.training import experiment
    from tf_autoseg.training import inputs

    recipe = config()
    seeds = [int(s) for s in FLAGS.seeds]
    records = []
    for seed in seeds:
        run = sections.experiment_config(recipe.replace(seed=seed))
        held, fit = experiment.evaluation_sets(run.evaluation, run.eval_data, run.train_data)
        train_set, _ = inputs.build(run.train_data)
        if recipe.precision == "auto":  # timed once, on the recipe's own batch and crop
            shape = train_set.element_spec.shape[1:]
            choice, _ = experiment.choose_precision(
                run.optimisation, functools.partial(
                    experiment.build_model, run.model, shape, run.optimisation
                ), shape, run.train_data.batch_size,
            )  # fmt: skip
            recipe = recipe.replace(precision=choice)
            run = sections.experiment_config(recipe.replace(seed=seed))
        keras.mixed_precision.set_global_policy(recipe.precision)
        held_out, fit = held[0], fit and fit[0]
        if FLAGS.quick:
            held_out, fit = held_out.take(2), fit and fit.take(2)
        records.append(run_seed(run, seed, (train_set, held_out, fit)))
    name = FLAGS.recipe or _flagfile_name()
    report = {
        "task": FLAGS.task,
        "recipe": name,
        "cpu": _cpu(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "budget": {"minutes": recipe.minutes, "steps": recipe.steps},
        "config": {k: v for k, v in recipe.items() if k not in ("run_dir", "export_dir")},
        "summary": summary(records),
        "seeds": records,
    }
    text = json.dumps(report)
    print(text)
    out = FLAGS.out
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = f"benchmarks/results/{FLAGS.task}-{name}-{stamp}.json"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


def _flagfile_name():
    """The stem of the last --flagfile on the command line (absl consumes it), or "flags"."""
    import sys

    files = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--flagfile=")]
    return Path(files[-1]).stem if files else "flags"


def _cpu():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    app.run(main)
