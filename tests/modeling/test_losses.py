"""AC and ARL objectives against values known by hand."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_autoseg.modeling import losses
from tf_autoseg.modeling.config import ObjectiveConfig
from tf_autoseg.modeling.network import Outputs
from tf_autoseg.modeling.objective import Objective


def one_hot_map(labels, k):
    return tf.one_hot(np.asarray(labels), k, dtype=tf.float32)


def ac_loss(p1, p2, displacement=0, entropy_weight=1.0):
    """The AC loss of the objective that trains, on the main head's probabilities alone."""
    config = ObjectiveConfig(displacement=displacement, entropy_weight=entropy_weight)
    objective = Objective(config, num_classes=p1.shape[-1], overclustering=None, seed=0)
    return objective.compute(Outputs(None, p1, None), Outputs(None, p2, None), step=0)[0]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_identical_balanced_one_hot_gives_log_k(k):
    labels = np.arange(4 * 6 * k).reshape(4, 6, k) % k
    p = one_hot_map(labels, k)
    assert float(losses.mutual_information(p, p)) == pytest.approx(np.log(k), rel=1e-5)
    assert float(ac_loss(p, p)) == pytest.approx(-np.log(k), rel=1e-5)


def test_independent_assignments_give_zero():
    rows, cols = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    # Row parity and column parity: every pair of values equally often.
    a = one_hot_map((rows % 2)[None], 2)
    b = one_hot_map((cols % 2)[None], 2)
    assert abs(float(losses.mutual_information(a, b))) < 1e-6
    # A view that ignores the image and answers the other's marginal: the
    # joint is a product of equal marginals, symmetric already.
    confident = one_hot_map(np.random.default_rng(0).integers(0, 4, (2, 5, 5)), 4)
    marginal = tf.reduce_mean(confident, axis=(0, 1, 2))
    blind = tf.broadcast_to(marginal, confident.shape)
    assert abs(float(losses.mutual_information(confident, blind))) < 1e-6


@pytest.mark.parametrize("displacement", [0, 1, 2])
def test_symmetric_in_its_arguments(displacement):
    rng = np.random.default_rng(1)
    p1 = tf.nn.softmax(rng.normal(size=(2, 7, 6, 4)).astype(np.float32))
    p2 = tf.nn.softmax(rng.normal(size=(2, 7, 6, 4)).astype(np.float32) * 3)
    forward = float(losses.mutual_information(p1, p2, displacement))
    backward = float(losses.mutual_information(p2, p1, displacement))
    assert forward == pytest.approx(backward, abs=1e-6)
    assert 0 <= forward <= np.log(4)


@pytest.mark.parametrize("displacement", [1, 2, 4])  # 4: the window is wider than the image
def test_displacement_window_equals_brute_force(displacement):
    rng = np.random.default_rng(2)
    p1 = rng.dirichlet(np.ones(3), size=(2, 5, 6)).astype(np.float32)
    p2 = rng.dirichlet(np.ones(3), size=(2, 5, 6)).astype(np.float32)
    expected = np.zeros((3, 3))
    offsets = range(-displacement, displacement + 1)
    for b, r, c, dr, dc in itertools.product(range(2), range(5), range(6), offsets, offsets):
        if 0 <= r + dr < 5 and 0 <= c + dc < 6:
            expected += np.outer(p1[b, r, c], p2[b, r + dr, c + dc])
    counts = losses.joint_counts(p1, p2, displacement).numpy()
    np.testing.assert_allclose(counts, expected, rtol=1e-5)


def test_finite_gradients_at_zero_and_one():
    labels = np.array([[[0, 0, 1], [1, 0, 0]]])
    for p2 in (one_hot_map(labels, 3), one_hot_map(np.zeros_like(labels), 3)):
        p1 = tf.Variable(one_hot_map(labels, 3))
        with tf.GradientTape() as tape:
            loss = ac_loss(p1, p2, displacement=1, entropy_weight=2.0)
        grad = tape.gradient(loss, p1)
        assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()


def test_bfloat16_inputs_are_computed_in_float32():
    rng = np.random.default_rng(3)
    p = tf.nn.softmax(rng.normal(size=(2, 4, 4, 3)).astype(np.float32) * 5)
    mi32 = losses.mutual_information(p, p)
    mi16 = losses.mutual_information(tf.cast(p, tf.bfloat16), tf.cast(p, tf.bfloat16))
    assert mi16.dtype == tf.float32
    assert float(mi16) == pytest.approx(float(mi32), abs=0.02)


def test_entropy_weight_changes_the_loss_as_defined():
    rng = np.random.default_rng(4)
    p1 = tf.nn.softmax(rng.normal(size=(1, 6, 6, 3)).astype(np.float32))
    p2 = tf.nn.softmax(rng.normal(size=(1, 6, 6, 3)).astype(np.float32))
    joint = losses.joint_counts(p1, p2).numpy().astype(np.float64)
    joint /= joint.sum()
    joint = (joint + joint.T) / 2
    pi, pj = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    expected = -(joint * (np.log(joint) - 2 * np.log(pi) - 2 * np.log(pj))).sum()
    assert float(ac_loss(p1, p2, entropy_weight=2.0)) == pytest.approx(expected, rel=1e-5)


def test_arl_is_low_for_matching_views_and_log_n_for_random_ones():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
    seed = tf.constant([1, 2])
    matched = float(losses.arl_loss(z, z, temperature=0.05, num_negatives=63, seed=seed))
    other = rng.normal(size=z.shape).astype(np.float32)
    unrelated = float(losses.arl_loss(z, other, temperature=1e3, num_negatives=63, seed=seed))
    assert matched < 0.1
    assert unrelated == pytest.approx(np.log(64), rel=0.01)
    # Fewer locations than requested negatives: all 8 are used, no error.
    small = losses.arl_loss(z[:1, :2, :4], z[:1, :2, :4], num_negatives=255, seed=seed)
    assert np.isfinite(float(small))


@pytest.mark.parametrize("displacement", [0, 1, 3])  # 3: the window is wider than the image
def test_per_offset_joints_equal_a_brute_force_sum_per_offset(displacement):
    rng = np.random.default_rng(6)
    p1 = rng.dirichlet(np.ones(3), size=(2, 5, 6)).astype(np.float32)
    p2 = rng.dirichlet(np.ones(3), size=(2, 5, 6)).astype(np.float32)
    offsets = list(itertools.product(range(-displacement, displacement + 1), repeat=2))
    expected = np.zeros((len(offsets), 3, 3))
    for t, (dr, dc) in enumerate(offsets):
        for b, r, c in itertools.product(range(2), range(5), range(6)):
            if 0 <= r + dr < 5 and 0 <= c + dc < 6:
                expected[t] += np.outer(p1[b, r, c], p2[b, r + dr, c + dc])
    per_offset = losses.joint_counts_per_offset(p1, p2, displacement).numpy()
    np.testing.assert_allclose(per_offset, expected, rtol=1e-5, atol=1e-6)
    pooled = losses.joint_counts(p1, p2, displacement).numpy()
    np.testing.assert_allclose(per_offset.sum(0), pooled, rtol=1e-5)


def test_per_offset_value_is_the_mean_of_each_offsets_mutual_information():
    rng = np.random.default_rng(7)
    p1 = tf.nn.softmax(rng.normal(size=(2, 6, 6, 3)).astype(np.float32) * 3)
    p2 = tf.nn.softmax(rng.normal(size=(2, 6, 6, 3)).astype(np.float32) * 3)
    counts = losses.joint_counts_per_offset(p1, p2, 1)
    each = [float(losses.mutual_information_from_counts(c, 1.5)) for c in counts]
    mean = float(losses.mutual_information_from_counts(counts, 1.5))
    assert mean == pytest.approx(np.mean(each), rel=1e-5)
    pooled = float(losses.mutual_information_from_counts(tf.reduce_sum(counts, 0), 1.5))
    assert abs(mean - pooled) > 1e-4, "pooling the offsets first is a different objective"
    # Identical maps at displacement 0: one offset, the plain mutual information.
    single = losses.joint_counts_per_offset(p1, p1, 0)
    assert single.shape == (1, 3, 3)
    assert float(losses.mutual_information_from_counts(single)) == pytest.approx(
        float(losses.mutual_information(p1, p1)), rel=1e-5
    )


def test_moving_marginal_is_the_batch_marginal_at_its_first_step():
    batch = tf.constant([0.7, 0.2, 0.1])
    first = losses.moving_marginal(batch, tf.zeros(3), momentum=0.9)
    np.testing.assert_allclose(first.numpy(), batch.numpy())
    later = losses.moving_marginal(batch, tf.constant([0.2, 0.4, 0.4]), momentum=0.9)
    np.testing.assert_allclose(later.numpy(), [0.25, 0.38, 0.37], rtol=1e-5)
    # Gradients reach the batch part only, scaled by 1 - momentum.
    estimate = tf.Variable([0.2, 0.4, 0.4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(batch)
        value = tf.reduce_sum(losses.moving_marginal(batch, estimate, momentum=0.9) * [1, 2, 3])
    np.testing.assert_allclose(tape.gradient(value, batch).numpy(), [0.1, 0.2, 0.3], rtol=1e-5)
    assert tape.gradient(value, estimate) is None


def test_a_given_marginal_replaces_the_joints_own():
    rng = np.random.default_rng(8)
    p1 = tf.nn.softmax(rng.normal(size=(1, 6, 6, 3)).astype(np.float32))
    counts = losses.joint_counts(p1, p1)
    own = losses.marginal_from_counts(counts)
    same = losses.mutual_information_from_counts(counts, 1.0, marginal=own)
    assert float(same) == pytest.approx(float(losses.mutual_information_from_counts(counts)))
    joint = losses.joint_from_counts(counts).numpy().astype(np.float64)
    prior = np.array([0.5, 0.3, 0.2])
    expected = (joint * (np.log(joint) - np.log(prior)[:, None] - np.log(prior)[None])).sum()
    given = losses.mutual_information_from_counts(counts, 1.0, marginal=prior.astype(np.float32))
    assert float(given) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p: losses.joint_counts(p, p, displacement=-1), "`displacement`"),
        (lambda p: losses.joint_counts_per_offset(p, p, displacement=1.5), "`displacement`"),
        (lambda p: losses.joint_counts(p, p[:, :2]), "same shape"),
        (lambda p: losses.joint_counts(p[0], p[0]), r"\(batch, height, width"),
        (lambda p: losses.arl_loss(p, p, temperature=0), "`temperature`"),
        (lambda p: losses.arl_loss(p, p, num_negatives=0), "`num_negatives`"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(tf.fill((1, 3, 3, 2), 0.5))
