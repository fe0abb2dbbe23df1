"""Evaluation protocol: matching, streaming counts, mIoU, modes, baselines and probes."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_autoseg import AutoSegModel
from tf_autoseg.datasets import synthetic
from tf_autoseg.evaluation import baselines
from tf_autoseg.evaluation import metrics
from tf_autoseg.evaluation import probes


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_hungarian_equals_best_permutation_by_brute_force(k):
    rng = np.random.default_rng(k)
    for _ in range(5):
        confusion = rng.integers(0, 100, size=(k, k))
        best = max(
            sum(confusion[c, perm[c]] for c in range(k))
            for perm in itertools.permutations(range(k))
        )
        assert metrics.hungarian_accuracy(confusion) == pytest.approx(best / confusion.sum())
        mapping = metrics.hungarian_match(confusion)
        assert sorted(mapping.tolist()) == list(range(k))


def test_streaming_matrix_equals_one_shot_and_ignores_255():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(6, 9, 11))
    labels[rng.uniform(size=labels.shape) < 0.2] = 255
    clusters = rng.integers(0, 5, size=labels.shape)
    streaming = metrics.ConfusionMatrix(4, 5)
    for i in range(0, 6, 2):
        streaming.update(labels[i : i + 2], clusters[i : i + 2])
    one_shot = metrics.confusion_matrix(labels, clusters, 4, 5)
    np.testing.assert_array_equal(streaming.counts, one_shot)
    assert one_shot.sum() == (labels != 255).sum()
    expected = np.zeros((4, 5), np.int64)
    for label, cluster in zip(labels.ravel(), clusters.ravel()):
        if label != 255:
            expected[label, cluster] += 1
    np.testing.assert_array_equal(one_shot, expected)


def test_out_of_range_labels_are_an_error():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\) or 255"):
        metrics.confusion_matrix([0, 3], [0, 1], 3, 3)
    with pytest.raises(ValueError, match=r"clusters must be in \[0, 3\)"):
        metrics.confusion_matrix([0, 1], [0, 7], 3, 3)


def test_scores_by_hand():
    # Classes (rows) x clusters (cols). Hungarian: cluster 1 -> class 0, cluster 0 -> class 1.
    confusion = np.array([[1, 8], [6, 2]])
    result = metrics.protocol(confusion)
    assert result["mapping"] == [1, 0]
    assert result["pixel_accuracy"] == pytest.approx(14 / 17)
    # class 0: correct 8, labelled 9, predicted 10 -> 8 / 11; class 1: 6 / (8 + 7 - 6) = 6 / 9.
    assert result["per_class_iou"] == pytest.approx([8 / 11, 6 / 9])
    assert result["mean_iou"] == pytest.approx((8 / 11 + 6 / 9) / 2)


def test_holdout_mode_uses_the_mapping_fitted_elsewhere():
    fit = np.array([[9, 1], [1, 9]])
    score = np.array([[1, 9], [9, 1]])
    assert metrics.protocol(fit, score)["pixel_accuracy"] == pytest.approx(0.1)
    assert metrics.protocol(score)["pixel_accuracy"] == pytest.approx(0.9)
    assert metrics.protocol(fit, score)["mode"] == "holdout"


def test_many_to_one_for_overclustering_and_majority_baseline():
    confusion = np.array([[5, 4, 0, 1], [0, 1, 7, 6]])
    result = metrics.protocol(confusion, many_to_one=True)
    assert result["mapping"] == [0, 0, 1, 1]
    assert result["pixel_accuracy"] == pytest.approx(22 / 24)
    assert metrics.majority_baseline(confusion)["pixel_accuracy"] == pytest.approx(14 / 24)


def test_kmeans_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 8.0]])
    labels = rng.integers(0, 3, 3000)
    points = centres[labels] + rng.normal(0, 0.3, (3000, 2))
    found = baselines.kmeans(points, 3, seed=1)
    confusion = metrics.confusion_matrix(labels, baselines.assign(points, found), 3, 3)
    assert metrics.hungarian_accuracy(confusion) > 0.99


def _synthetic_batches(seed, count=8, size=32):
    images, labels = synthetic.scenes(count, size, 3, seed=seed)
    return [(images[i : i + 4], labels[i : i + 4]) for i in range(0, count, 4)]


def test_pixel_and_random_network_baselines_run_through_the_same_code():
    batches = _synthetic_batches(0)
    held_out = _synthetic_batches(5)
    pixel = baselines.kmeans_baseline(batches, held_out, 3, sample=5000)
    assert pixel[0].counts.sum() == pixel[1].counts.sum() == 8 * 32 * 32
    model = AutoSegModel.variant("random", 3, (32, 32, 3), width=8, stride=2, ar_blocks=2)
    network = baselines.kmeans_baseline(
        batches, held_out, 3, features=baselines.network_features(model), sample=5000
    )
    for fit, score in (pixel, network):
        accuracy = metrics.protocol(fit, score)["pixel_accuracy"]
        assert 1 / 3 < accuracy <= 1.0


def test_model_confusion_scores_both_heads():
    model = AutoSegModel(3, (16, 16, 3), width=8, stride=2, ar_blocks=1, overclustering=6)
    batches = _synthetic_batches(1, size=16)
    main = metrics.model_confusion(model, batches, 3)
    over = metrics.model_confusion(model, batches, 3, overclustering=True)
    assert main.counts.shape == (3, 3) and over.counts.shape == (3, 6)
    assert main.counts.sum() == over.counts.sum() == 8 * 16 * 16
    with pytest.raises(ValueError, match="overclustering"):
        metrics.model_confusion(
            AutoSegModel(3, (16, 16, 3), width=8, ar_blocks=1), batches, 3, overclustering=True
        )


@pytest.mark.parametrize("kind", probes.KINDS)
def test_probes_learn_from_labels_on_frozen_features(kind):
    keras.utils.set_random_seed(0)
    model = AutoSegModel(3, (32, 32, 3), width=16, stride=2, ar_blocks=2)
    before = [w.copy() for w in model.get_weights()]
    images, labels = synthetic.scenes(16, 32, 3, seed=3)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    probe = probes.train_probe(model, train, 3, kind=kind, steps=60, learning_rate=1e-2)
    result = probes.probe_scores(model, probe, _synthetic_batches(4, size=32), 3)
    assert result["pixel_accuracy"] > 0.6
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_metric_equals_the_protocol_and_evaluate_reports_it():
    from tf_autoseg.evaluation.keras_metric import MatchedSegmentationScore

    train, _ = synthetic.load(8, 32, 3, batch_size=4, repeat=True, shuffle=True, seed=0)
    labelled, _ = synthetic.load(8, 32, 3, batch_size=4, labels=True, seed=1)
    keras.utils.set_random_seed(0)
    model = AutoSegModel.variant("F2", num_classes=3, input_shape=(32, 32, 3), width=8)
    scores = [MatchedSegmentationScore(3, score="pixel_accuracy"), MatchedSegmentationScore(3)]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=scores)
    model.fit(train, steps_per_epoch=2, epochs=1, verbose=0)
    reported = model.evaluate(labelled, return_dict=True, verbose=0)
    expected = metrics.protocol(metrics.model_confusion(model, labelled, 3))
    assert reported["matched_pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], 1e-6)
    assert reported["matched_mean_iou"] == pytest.approx(expected["mean_iou"], 1e-6)
    assert {"loss", "mi"} <= set(reported)
    # A second evaluate starts from zero counts (Keras resets the metrics).
    again = model.evaluate(labelled, return_dict=True, verbose=0)
    assert again["matched_pixel_accuracy"] == pytest.approx(reported["matched_pixel_accuracy"])


def test_keras_metric_matches_clusters_and_ignores_unlabelled_pixels():
    from tf_autoseg.evaluation.keras_metric import MatchedSegmentationScore

    labels = np.array([[[0, 0, 1, 1, 255, 2]]])
    swapped = np.array([[[2, 2, 0, 0, 1, 1]]])  # a relabelling of the truth (+1 ignored pixel)
    metric = MatchedSegmentationScore(3, score="pixel_accuracy")
    metric.update_state(labels, swapped)
    assert float(metric.result()) == 1.0
    probabilities = tf.one_hot([[[1, 1, 1, 1, 1, 0]]], 3)  # everything but one pixel in one cluster
    metric.reset_state()
    metric.update_state(labels, probabilities)
    assert float(metric.result()) == pytest.approx(3 / 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        metric.update_state([[[3]]], [[[0]]])
    config = MatchedSegmentationScore.from_config(metric.get_config()).get_config()
    assert config == metric.get_config()


def test_compile_refuses_a_loss():
    model = AutoSegModel.variant("F2", num_classes=3, input_shape=(32, 32, 3), width=8)
    with pytest.raises(ValueError, match="takes no `loss`. Received: loss='mse'"):
        model.compile(optimizer="adam", loss="mse")


def test_kmeans_restarts_keep_the_run_of_lowest_inertia():
    from tf_autoseg.modeling import kmeans

    rng = np.random.default_rng(0)
    # Five blobs of unequal size for k=3: single runs fall into different local minima.
    x = np.concatenate([rng.normal(c, 0.3, (n, 2)) for c, n in
                        zip([(0, 0), (4, 0), (0, 4), (4, 4), (9, 9)], [400, 300, 300, 200, 50])])  # fmt: skip

    def inertia(centres):
        return kmeans.nearest(x, centres)[1].sum()

    singles = [
        inertia(kmeans.kmeans(x, 3, seed=s)) for s in [5] + [5 * 1009 + r for r in range(1, 8)]
    ]
    best = inertia(kmeans.kmeans(x, 3, seed=5, restarts=8))
    assert best == pytest.approx(min(singles))
    assert np.array_equal(kmeans.kmeans(x, 3, seed=5), kmeans.kmeans(x, 3, seed=5, restarts=1))
