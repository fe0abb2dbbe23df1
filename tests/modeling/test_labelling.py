"""The label-free labelling stage: mixtures, the mixture layer, the edge-aware refinement."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

from tf_autoseg import AutoSegModel
from tf_autoseg.datasets.synthetic import scenes as synthetic_scenes
from tf_autoseg.modeling import kmeans
from tf_autoseg.modeling import mixture
from tf_autoseg.modeling import refinement
from tf_autoseg.modeling.labelling import MixtureLabelling


def _elongated_and_compact(seed=0):
    """A large class spread along one axis beside a small, round one: k-means splits the first."""
    rng = np.random.default_rng(seed)
    large = rng.normal(size=(4000, 2)) * [6.0, 0.4]
    small = rng.normal(size=(800, 2)) * 0.4 + [0.0, 3.0]
    return np.concatenate([large, small]), np.repeat([0, 1], [4000, 800])


def _accuracy(truth, labels):
    agree = np.mean(truth == labels)
    return max(agree, 1 - agree)


def test_a_mixture_keeps_a_spread_out_class_whole_where_k_means_splits_it():
    x, truth = _elongated_and_compact()
    fitted = mixture.fit(x, 2, seed=0, restarts=3)
    assert _accuracy(truth, fitted.posterior(x).argmax(1)) > 0.99
    assert _accuracy(truth, kmeans.nearest(x, kmeans.kmeans(x, 2, restarts=3))[0]) < 0.9


def test_mixture_densities_are_the_gaussians_they_hold():
    x, _ = _elongated_and_compact(1)
    fitted = mixture.fit(x, 2, seed=1, restarts=1)
    expected = np.stack(
        [
            np.log(w) + multivariate_normal(m, c).logpdf(x)
            for m, c, w in zip(fitted.means, fitted.covariances, fitted.weights)
        ],
        1,
    )
    np.testing.assert_allclose(fitted.log_joint(x), expected, rtol=1e-6)
    np.testing.assert_allclose(fitted.posterior(x).sum(1), 1.0, rtol=1e-9)
    assert fitted.weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs"):
        mixture.fit(x[:3], 2)


def test_agreement_order_maps_a_relabelling_back():
    reference = np.random.default_rng(2).integers(0, 4, 500)
    relabelled = np.array([2, 0, 3, 1])[reference]
    order = mixture.agreement_order(relabelled, reference, 4)
    np.testing.assert_array_equal(order[reference], relabelled)


def _points(shift=0.0, seed=3):
    """Grid points (features of depth 5, then RGB) of three kinds of cell."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, 3000)
    features = rng.normal(size=(3000, 5)) * 0.3 + np.eye(3, 5)[kinds] * 3
    colour = np.clip(0.2 + 0.3 * kinds[:, None] + rng.normal(size=(3000, 3)) * 0.05, 0, 1)
    return np.concatenate([features, colour + shift], 1), kinds


def test_adjusted_rand_index_is_one_under_renaming_and_near_zero_for_independent_partitions():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 5000)
    assert mixture.adjusted_rand_index(a, (a + 1) % 3, 3) == pytest.approx(1.0)
    assert abs(mixture.adjusted_rand_index(a, rng.integers(0, 3, 5000), 3)) < 0.01
    half = np.where(rng.uniform(size=5000) < 0.5, a, rng.integers(0, 3, 5000))
    assert 0.1 < mixture.adjusted_rand_index(a, half, 3) < 0.9


def test_agreement_keeps_the_partition_the_restarts_keep_finding():
    rng = np.random.default_rng(1)
    common = rng.integers(0, 3, 2000)
    partitions = [(common + shift) % 3 for shift in (0, 1, 2, 0)]
    partitions.insert(1, rng.integers(0, 3, 2000))  # the odd one out
    assert mixture.most_agreeing(partitions, 3) in (0, 2, 3, 4)
    assert mixture.most_agreeing(partitions, 3) != 1


def test_agreement_selection_can_overrule_the_likelihood():
    """Three blobs and a far, tight streak of 20 points: of 9 EM runs, 5 find one partition and
    3 a slightly likelier other; "likelihood" keeps the rarer, "agreement" the common one."""
    rng = np.random.default_rng(1)
    blobs = np.concatenate([rng.normal(c, 0.5, (400, 2)) for c in ((0, 0), (4, 0), (2, 3))])
    x = np.concatenate([blobs, rng.normal((30, 30), 0.01, (20, 2))])
    runs = [mixture.fit(x, 3, seed=s, restarts=1) for s in range(9)]  # fit's own seeds for 0
    partitions = [run.posterior(x).argmax(1) for run in runs]
    by_likelihood = mixture.fit(x, 3, seed=0, restarts=9)
    by_agreement = mixture.fit(x, 3, seed=0, restarts=9, select="agreement")
    kept = partitions[mixture.most_agreeing(partitions, 3, runs)]
    chosen = by_agreement.posterior(x).argmax(1)
    assert mixture.adjusted_rand_index(chosen, kept, 3) == pytest.approx(1.0)
    finding = [mixture.adjusted_rand_index(chosen, p, 3) > 0.999 for p in partitions]
    assert sum(finding) == 5
    rare = by_likelihood.posterior(x).argmax(1)
    assert mixture.adjusted_rand_index(rare, chosen, 3) < 0.99
    assert by_likelihood.log_likelihood > by_agreement.log_likelihood
    with pytest.raises(ValueError, match="`select`"):
        mixture.fit(x, 3, select="votes")


def test_mixture_layer_labels_as_its_mixture_and_answers_the_fallback_until_fitted():
    points, kinds = _points()
    layer = MixtureLabelling(3, feature_depth=5, channels=3, dims=2, colour=True)
    fallback = tf.fill((1, 1, len(points), 3), 1 / 3)
    grid = tf.constant(points[None, None], tf.float32)
    np.testing.assert_array_equal(layer(grid, fallback).numpy(), fallback.numpy())
    fitted = layer.fit(points, seed=0)
    assert layer.fitted
    projected = points @ layer.projection.numpy() + layer.offset.numpy()
    np.testing.assert_allclose(
        layer(grid, fallback).numpy()[0, 0], fitted.posterior(projected), atol=1e-4
    )
    assert _accuracy(kinds == 0, layer.labels(points) == layer.labels(points)[kinds == 0][0]) > 0.99
    layer.reset()
    np.testing.assert_array_equal(layer(grid, fallback).numpy(), fallback.numpy())


def test_a_refit_on_darker_images_keeps_the_component_ids():
    points, _ = _points()
    layer = MixtureLabelling(3, feature_depth=5, channels=3, dims=2, colour=True)
    layer.fit(points, seed=0)
    before = layer.labels(points)
    darker, _ = _points(shift=-0.15)  # the same cells, every colour darker
    layer.fit(darker, seed=5)
    assert np.mean(layer.labels(darker) == before) > 0.99


def test_without_colour_the_features_alone_label():
    points, _ = _points()
    layer = MixtureLabelling(3, feature_depth=5, channels=3, dims=3, colour=False)
    layer.fit(points, seed=0)
    assert not np.any(layer.projection.numpy()[5:])
    repainted = points.copy()
    repainted[:, 5:] = np.random.default_rng(9).uniform(size=(len(points), 3))
    np.testing.assert_array_equal(layer.labels(repainted), layer.labels(points))


def _two_colour_image(noise, seed=0):
    """A 40x40 image, left half dark, right half light; label probabilities with `noise` of the
    pixels flipped to the other side's label."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((40, 40), int)
    truth[:, 20:] = 1
    image = np.where(truth[..., None] == 1, 0.8, 0.2) * np.ones(3)
    flipped = np.where(rng.uniform(size=truth.shape) < noise, 1 - truth, truth)
    probabilities = np.where(np.eye(2)[flipped] == 1, 0.7, 0.3)
    return image[None].astype(np.float32), probabilities[None].astype(np.float32), truth


def test_refinement_follows_colour_edges_and_cleans_noise():
    image, probabilities, truth = _two_colour_image(noise=0.2)
    refined = refinement.refine(probabilities, image).numpy()  # the default 3 steps
    assert refined.shape == probabilities.shape
    np.testing.assert_allclose(refined.sum(-1), 1.0, rtol=1e-5)
    assert np.mean(probabilities[0].argmax(-1) == truth) < 0.85
    assert np.mean(refined[0].argmax(-1) == truth) > 0.95  # 0.9675 with 8 neighbours 8 apart
    np.testing.assert_array_equal(refinement.refine(probabilities, image, 0), probabilities)


def test_refinement_does_not_carry_labels_across_a_strong_edge():
    image, _, truth = _two_colour_image(noise=0.0)
    # Confident left, undecided right: the right half must stay undecided, not turn "left".
    probabilities = np.where(truth[..., None] == 0, [0.9, 0.1], [0.5, 0.5])[None]
    refined = refinement.refine(probabilities.astype(np.float32), image, iterations=5).numpy()
    np.testing.assert_allclose(refined[0, :, 24:], 0.5, atol=1e-3)
    assert refined.shape == (1, 40, 40, 2)
    odd = refinement.refine(tf.fill((2, 7, 5, 3), 1 / 3), tf.zeros((2, 7, 5, 3)), iterations=2)
    assert odd.shape == (2, 7, 5, 3)


def _mixture_model(**options):
    arguments = dict(num_classes=3, input_shape=(32, 32, 3), width=8, ar_blocks=2, stride=2)
    model = AutoSegModel(labels_from="mixture", **{**arguments, **options})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_a_model_labels_by_its_fitted_mixture_and_keeps_it_through_saving(tmp_path):
    model = _mixture_model(refine_iterations=5)
    images = tf.constant(synthetic_scenes(6, 32, 3, seed=1)[0])
    head = model.network.forward(images).probabilities
    np.testing.assert_allclose(  # unfitted: the head answers, unrefined
        model(images).numpy(), tf.image.resize(head, (32, 32)).numpy(), atol=1e-6
    )
    model.fit_labelling([images[:3], (images[3:], None)], seed=1)
    assert model.mixture.fitted
    outputs = model.network.forward(images)
    points = model.labelling_points(outputs, images)
    grid = model.mixture(points, outputs.probabilities)
    expected = refinement.refine(tf.image.resize(grid, (32, 32)), images, 5)
    np.testing.assert_allclose(model(images).numpy(), expected.numpy(), atol=1e-5)
    labels = model.predict_labels(images).numpy()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict_labels(images).numpy(), labels)
    with pytest.raises(ValueError, match="fit_labelling got no batch"):
        model.fit_labelling([])


def test_the_mixture_space_is_whitened_feature_axes_beside_standardised_colour():
    points, _ = _points()
    layer = MixtureLabelling(3, feature_depth=5, channels=3, dims=2, colour=True)
    layer.fit(points, seed=0)
    projected = points @ layer.projection.numpy() + layer.offset.numpy()
    assert projected.shape[1] == 2 + 3
    np.testing.assert_allclose(projected.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(projected.std(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(np.corrcoef(projected[:, :2].T)[0, 1], 0.0, atol=1e-3)
    colour = (points[:, 5:] - points[:, 5:].mean(0)) / points[:, 5:].std(0)
    np.testing.assert_allclose(projected[:, 2:], colour, atol=1e-3)
