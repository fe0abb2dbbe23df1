"""Segmentation quality on real data: AC against k-means, random-network and majority baselines.

The Dubai aerial set (../shared/data/dubai-aerial, 5 classes, Unlabeled ignored):
AC trains on tiles 1-6 without labels; every method is scored on held-out
tiles 7-8 by the same code, with its cluster -> class mapping fitted on the
training tiles' labels (holdout mode), so no choice sees the held-out tiles.
Prints one JSON object (the table, and accuracy against training time) and
writes a PNG plot of that curve when matplotlib is installed.

    python -m benchmarks.quality --flagfile=experiments/dubai.cfg --minutes=30
    python -m benchmarks.quality --flagfile=experiments/dubai.cfg --steps=4 --eval_every=2 \\
        --width=8 --quick                              # seconds: checks that it works
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_autoseg import train  # noqa: E402 - the training flags describe the model and data

FLAGS = flags.FLAGS
flags.DEFINE_float("minutes", 30.0, "Training time budget in minutes.")
flags.DEFINE_integer("eval_every", 500, "Steps between held-out evaluations (the curve).")
flags.DEFINE_list(
    "kmeans_seeds", ["0", "1", "2"], "Seeds of the k-means baselines (mean reported)."
)
flags.DEFINE_bool("quick", False, "Two evaluation batches: checks that it all works.")
flags.DEFINE_string("plot", "docs/quality_curve.png", "Where to write the curve ('' = none).")
flags.DEFINE_string("from_json", None, "Only redraw the plot from a saved report.")


def config():
    """The training flags (e.g. --flagfile=experiments/dubai.cfg), in holdout mode."""
    cfg = {**train.run_config(), "eval_mode": "holdout"}
    if cfg["dataset"] != "dubai":
        raise app.UsageError("Pass the Dubai set: --flagfile=experiments/dubai.cfg")
    if FLAGS.quick:
        cfg["eval_batches"] = 2
    return cfg


def _mean_scores(results):
    return {
        key: float(np.mean([r[key] for r in results])) for key in ("pixel_accuracy", "mean_iou")
    }


def main(argv):
    del argv
    if FLAGS.from_json:
        _plot(json.loads(Path(FLAGS.from_json).read_text()), FLAGS.plot)
        return
    from tf_autoseg import baselines
    from tf_autoseg import evaluation
    from tf_autoseg import experiment

    cfg = config()
    keras.utils.set_random_seed(cfg["seed"])
    keras.mixed_precision.set_global_policy(cfg["precision"])
    train = experiment.pipeline(cfg, "train", labels=False)[0]
    held_out = experiment.pipeline(cfg, "eval", labels=True)[0]
    fit = experiment.pipeline(cfg, "train", labels=True)[0]
    if FLAGS.quick:
        held_out, fit = held_out.take(2), fit.take(2)
    k = cfg["classes"]

    table = {}
    majority = evaluation.ConfusionMatrix(k)
    for _, labels in held_out:
        majority.update(labels.numpy(), np.zeros_like(labels.numpy()))
    table["majority_class"] = evaluation.majority_baseline(majority)
    sample = 20_000 if FLAGS.quick else 200_000
    kmeans_runs, network_runs = [], []
    for seed in (int(s) for s in FLAGS.kmeans_seeds):
        kmeans_runs.append(baselines.kmeans_baseline(fit, held_out, k, sample=sample, seed=seed))
        keras.utils.set_random_seed(seed)
        untrained = experiment.build_model({**cfg, "seed": seed}, train.element_spec.shape[1:])
        features = baselines.network_features(untrained)
        network_runs.append(
            baselines.kmeans_baseline(fit, held_out, k, features=features, sample=sample, seed=seed)
        )
    # The baselines' clusters are mapped like AC's: on the training tiles' labels.
    table["kmeans_rgb"] = _mean_scores([evaluation.protocol(*pair) for pair in kmeans_runs])
    table["random_network_kmeans"] = _mean_scores(
        [evaluation.protocol(*pair) for pair in network_runs]
    )

    keras.utils.set_random_seed(cfg["seed"])
    model = experiment.build_model(cfg, train.element_spec.shape[1:])
    curve, start = [], time.time()

    class Curve(keras.callbacks.Callback):
        """Scores the held-out tiles every `--eval_every` steps; stops at the budget."""

        def on_epoch_end(self, epoch, logs=None):
            results = experiment.evaluate(model, cfg, held_out, fit)
            scores = results["main"]
            over = results.get("overclustering", {}).get("pixel_accuracy")
            curve.append(
                {
                    "steps": int(model.optimizer.iterations),
                    "minutes": round((time.time() - start) / 60, 2),
                    "pixel_accuracy": scores["pixel_accuracy"],
                    "mean_iou": scores["mean_iou"],
                    "overclustering_many_to_one_accuracy": over,
                }
            )
            if time.time() - start > FLAGS.minutes * 60:
                self.model.stop_training = True

    epochs = max(1, cfg["steps"] // FLAGS.eval_every)
    model.fit(
        train, steps_per_epoch=FLAGS.eval_every, epochs=epochs, verbose=0, callbacks=[Curve()]
    )
    done = int(model.optimizer.iterations)
    table["ac"] = {key: curve[-1][key] for key in ("pixel_accuracy", "mean_iou")}
    report = {
        "data": cfg["data_dir"],
        "train_tiles": cfg["train_tiles"],
        "held_out_tiles": cfg["eval_tiles"],
        "budget_minutes": FLAGS.minutes,
        "steps": done,
        "config": {k_: cfg[k_] for k_ in ("width", "ar_blocks", "overclustering", "displacement",
                                          "entropy_weight", "learning_rate", "crop", "precision")},
        "table": table,
        "curve": curve,
    }  # fmt: skip
    print(json.dumps(report))
    if FLAGS.plot:
        _plot(report, FLAGS.plot)


def _plot(report, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    minutes = [p["minutes"] for p in report["curve"]]
    axis.plot(minutes, [p["pixel_accuracy"] for p in report["curve"]], "o-", label="AC")
    styles = {"kmeans_rgb": ":", "random_network_kmeans": "--", "majority_class": "-."}
    for name, style in styles.items():
        value = report["table"][name]["pixel_accuracy"]
        axis.axhline(value, linestyle=style, color="gray", label=name.replace("_", " "))
    axis.set_xlabel("training time (minutes, 2 CPU cores)")
    axis.set_ylabel("held-out pixel accuracy")
    axis.set_title("Dubai-5, tiles 7-8 held out")
    axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


if __name__ == "__main__":
    app.run(main)
