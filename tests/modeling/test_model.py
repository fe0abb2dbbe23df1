"""AutoSegModel: variants, configuration errors, ordering sampling, transforms, learning, saving."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_autoseg import AutoSegModel
from tf_autoseg.datasets.synthetic import scenes as synthetic_scenes
from tf_autoseg.evaluation.metrics import confusion_matrix
from tf_autoseg.evaluation.metrics import hungarian_accuracy
from tf_autoseg.modeling import losses
from tf_autoseg.modeling import transforms
from tf_autoseg.modeling import views
from tf_autoseg.modeling.config import VARIANTS
from tf_autoseg.modeling.config import ObjectiveConfig
from tf_autoseg.modeling.objective import Objective

TINY = dict(width=8, attention_heads=2)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_one_call_and_outputs_probabilities(name):
    model = AutoSegModel.variant(name, num_classes=3, input_shape=(16, 16, 4), **TINY)
    images = np.random.default_rng(0).uniform(size=(2, 19, 13, 4)).astype(np.float32)
    probs = model(images).numpy()
    assert probs.shape == (2, 19, 13, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    labels = model.predict_labels(images)
    assert labels.dtype == tf.int32 and labels.shape == (2, 19, 13)
    np.testing.assert_array_equal(labels.numpy(), probs.argmax(-1))


def test_overclustering_head_and_attention_blocks_are_built():
    model = AutoSegModel(
        4, (16, 16, 3), ar_blocks=3, attention_blocks=(1, 3), overclustering=9, **TINY
    )
    names = [layer.name for layer in model.network.ar_layers]
    assert names == ["ar_block1", "ar_attention1", "ar_block2", "ar_block3", "ar_attention3"]
    _, probs, over = model.network.forward(tf.zeros((1, 16, 16, 3)), ordering=5)
    assert probs.shape[-1] == 4 and over.shape[-1] == 9


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=1), "`num_classes` must be an int >= 2"),
        (dict(overclustering=3), "`overclustering` must exceed `num_classes`"),
        (dict(front="vgg"), "`front` must be one of"),
        (dict(objective="mse"), "`objective` must be one of"),
        (dict(sampling="best"), "`sampling` must be one of"),
        (dict(orderings=(0,)), "`orderings` must hold at least 2"),
        (dict(orderings=(0, 16)), r"`orderings` must be an ordering id in \[0, 15\]"),
        (dict(attention_blocks=(6,)), r"`attention_blocks` must be an int in \[1, 5\]"),
        (
            dict(input_shape=(256, 256, 3), stride=1, attention_blocks=(1,)),
            "max_attention_positions",
        ),
        (dict(input_shape=(16, 24, 3), geometric="rotate"), "square"),
        (dict(geometric="shear"), "`geometric` must be one of"),
        (dict(input_shape=(16, 16)), "`input_shape` must be"),
        (dict(dropout=1.0), "`dropout`"),
        (dict(marginal_momentum=1.0), "`marginal_momentum`"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs, match):
    arguments = dict(num_classes=3, input_shape=(16, 16, 3), **TINY)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        AutoSegModel(**arguments)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match=r"`variant` must be one of \('F1'"):
        AutoSegModel.variant("F9", 3, (16, 16, 3))


def _compiled(**kwargs):
    arguments = dict(num_classes=3, input_shape=(16, 16, 3), ar_blocks=2, stride=2, **TINY)
    arguments.update(kwargs)
    model = AutoSegModel(**arguments)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_no_repeat_covers_every_pair_before_repeating():
    model = _compiled(orderings=(0, 5, 9, 12), sampling="no_repeat")
    expected = set(itertools.combinations((0, 5, 9, 12), 2))
    for cycle in range(3):
        seen = []
        for step in range(6):
            model.optimizer.iterations.assign(cycle * 6 + step)
            seen.append(tuple(model.views.sample_pair(model.optimizer.iterations).numpy()))
        assert set(seen) == expected and len(seen) == len(expected)


def test_random_sampling_draws_two_distinct_orderings_from_the_set():
    model = _compiled(orderings=(1, 2, 8), sampling="random")
    pairs = set()
    for step in range(40):
        model.optimizer.iterations.assign(step)
        a, b = model.views.sample_pair(model.optimizer.iterations).numpy()
        assert a != b and {a, b} <= {1, 2, 8}
        pairs.add(frozenset((a, b)))
    assert len(pairs) == 3


def test_hard_sampling_picks_the_pair_of_least_agreement():
    model = _compiled(orderings=(0, 3, 8, 13), sampling="hard", ar_blocks=3)
    images = tf.constant(synthetic_scenes(4, 16, seed=3)[0])
    step = model.optimizer.iterations
    chosen = tuple(model.views.sample_pair(step, lambda: model._agreement(images)).numpy())
    orderings = model.config.views.orderings
    views = {o: model.network.forward(images, ordering=o)[1] for o in orderings}
    scores = {
        pair: float(losses.mutual_information(views[pair[0]], views[pair[1]]))
        for pair in itertools.combinations(orderings, 2)
    }
    assert chosen == min(scores, key=scores.get)
    assert len(set(np.round(list(scores.values()), 7))) > 1, "scores must discriminate"


@pytest.mark.parametrize("k", range(8))
def test_inverse_geometric_transform_realigns_exactly(k):
    x = tf.random.normal((2, 6, 6, 3))
    y = transforms.dihedral(x, k)
    np.testing.assert_array_equal(transforms.dihedral(y, k, inverse=True).numpy(), x.numpy())
    if k:
        assert not np.array_equal(y.numpy(), x.numpy())


def test_views_correspond_pixel_for_pixel_after_the_inverse():
    # A per-pixel network (no front, no autoregressive part, 1x1 head) is
    # equivariant, so the realigned second view must equal the first exactly.
    model = _compiled(front="identity", ar_blocks=0, geometric="flip_rotate")
    images = tf.random.uniform((2, 16, 16, 3))
    transforms_seen = set()
    for step in range(12):
        model.optimizer.iterations.assign(step)
        transforms_seen.add(int(transforms.sample_dihedral("flip_rotate", _step_seed(model, 13))))
        (_, p1, _), (_, p2, _) = model.views.make(
            model.network.forward, images, tf.constant([0, 1]), step, training=False, augment=True
        )
        np.testing.assert_allclose(p2.numpy(), p1.numpy(), atol=1e-6)
    assert len(transforms_seen) > 3


def test_flip_only_transforms_work_on_non_square_crops():
    model = _compiled(input_shape=(16, 24, 3), geometric="flip", photometric=True)
    drawn = set()
    for step in range(12):
        model.optimizer.iterations.assign(step)
        drawn.add(int(transforms.sample_dihedral("flip", _step_seed(model, 13))))
    # Flips only (no transpose), and more than the identity: non-square maps keep their shape.
    assert len(drawn) > 1 and all(transforms.dihedral(tf.zeros((1, 16, 24, 1)), k).shape ==
                                  (1, 16, 24, 1) for k in drawn)  # fmt: skip
    model.optimizer.iterations.assign(0)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(tf.random.uniform((4, 16, 24, 3)), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_training_never_reads_labels():
    images = synthetic_scenes(4, 16, seed=1)[0]
    results = []
    for labels in (None, np.zeros((4, 16, 16), np.int32), np.full((4, 16, 16), 7, np.int32)):
        keras.utils.set_random_seed(0)
        model = _compiled()
        data = images if labels is None else (images, labels)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(2)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_keras_save_mid_training_resumes_with_same_state_and_next_loss(tmp_path):
    model = _compiled(
        overclustering=5, attention_blocks=(1,), sampling="no_repeat", orderings=(0, 4, 9)
    )
    images = synthetic_scenes(8, 16, seed=2)[0]
    batch = tf.constant(images[:4])
    for _ in range(3):
        model.train_on_batch(batch)
    path = tmp_path / "mid.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations) == 3
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    expected = model.train_on_batch(batch, return_dict=True)
    resumed = loaded.train_on_batch(batch, return_dict=True)
    assert resumed["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _info_nce(z1, z2, temperature):
    """InfoNCE over every location, by hand in NumPy: each location's positive is itself."""
    z1, z2 = (z.reshape(-1, z.shape[-1]) for z in (z1, z2))
    z1, z2 = (z / np.linalg.norm(z, axis=-1, keepdims=True) for z in (z1, z2))
    logits = z1 @ z2.T / temperature

    def cross_entropy(x):
        x = x - x.max(-1, keepdims=True)
        return -(np.diag(x) - np.log(np.exp(x).sum(-1)))

    return (cross_entropy(logits) + cross_entropy(logits.T)).mean() / 2


def test_arl_objective_is_info_nce_of_the_two_views_features_and_leaves_the_heads_alone():
    # 2 images of 16x16 at stride 2: 128 locations, all drawn with 255 negatives, so the loss
    # is InfoNCE over every location whatever the draw (the mean does not depend on the order).
    model = _compiled(objective="arl", num_negatives=255, temperature=0.2)
    view1, view2 = _views(model)
    loss, mi = model.objective.compute(view1, view2, step=0)
    expected = _info_nce(view1[0].numpy(), view2[0].numpy(), 0.2)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    # Positives that agree (the same view twice) cost less than the two orderings' views.
    assert float(model.objective.compute(view1, view1, step=0)[0]) < float(loss)
    assert float(mi) >= 0
    head = [w.numpy().copy() for w in model.network.head.weights]
    ar = [w.numpy().copy() for w in model.network.ar_layers[0].trainable_weights]
    history = model.fit(tf.random.uniform((8, 16, 16, 3)), batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and "mi" in history.history
    for before, weight in zip(head, model.network.head.weights):  # ARL trains the features
        np.testing.assert_array_equal(weight.numpy(), before)
    blocks = model.network.ar_layers[0].trainable_weights
    assert any(not np.array_equal(w.numpy(), b) for w, b in zip(blocks, ar))


def _views(model, seed=0):
    images = tf.constant(synthetic_scenes(4, 16, seed=seed)[0])
    pair = tf.constant([0, 3])
    return model.views.make(model.network.forward, images, pair, 0, training=False, augment=False)


def _step_seed(model, salt):
    return views.step_seed(model.config.seed, model.optimizer.iterations, salt)


def _objective(**options):
    """The objective of a model with 3 clusters and an overclustering head of 6."""
    return Objective(ObjectiveConfig(**options), num_classes=3, overclustering=6, seed=0)


def test_per_head_lambda_changes_only_the_overclustering_term():
    base = _compiled(overclustering=6)
    views = _views(base)
    main_term = -losses.mutual_information_from_counts(
        losses.joint_counts(views[0][1], views[1][1]), 1.0
    )
    loss = {}
    for weight in (None, 1.0, 1.7):
        objective = _objective(over_entropy_weight=weight)
        loss[weight] = float(objective.compute(*views, step=0)[0])
    assert loss[None] == pytest.approx(loss[1.0], abs=1e-6)
    over_counts = losses.joint_counts(views[0][2], views[1][2])
    expected_over = -losses.mutual_information_from_counts(over_counts, 1.7)
    assert loss[1.7] == pytest.approx(float(main_term + expected_over), rel=1e-5)
    # The main head's lambda moves the main term only.
    objective = _objective(entropy_weight=1.5, over_entropy_weight=1.7)
    main_15 = -losses.mutual_information_from_counts(
        losses.joint_counts(views[0][1], views[1][1]), 1.5
    )
    assert float(objective.compute(*views, step=0)[0]) == pytest.approx(
        float(main_15 + expected_over), rel=1e-5
    )


def test_moving_marginals_record_the_batch_marginal_at_the_first_step_then_average():
    model = _compiled(overclustering=6, marginal_momentum=0.8)
    objective = model.objective
    assert set(objective.marginals) == {"main", "overclustering"}
    views = _views(model)
    batch = {
        "main": losses.marginal_from_counts(losses.joint_counts(views[0][1], views[1][1])),
        "overclustering": losses.marginal_from_counts(
            losses.joint_counts(views[0][2], views[1][2])
        ),
    }
    plain = float(_objective().compute(*views, step=0)[0])
    first = float(objective.compute(*views, step=0, update=True)[0])
    assert first == pytest.approx(plain, rel=1e-5)  # equal to IIC's loss at the first step
    for head, value in batch.items():
        np.testing.assert_allclose(objective.marginals[head].numpy(), value.numpy(), rtol=1e-5)
    other = _views(model, seed=5)
    other_batch = losses.marginal_from_counts(losses.joint_counts(other[0][1], other[1][1]))
    objective.compute(*other, step=0, update=True)
    np.testing.assert_allclose(
        objective.marginals["main"].numpy(),
        0.8 * batch["main"].numpy() + 0.2 * other_batch.numpy(),
        rtol=1e-5,
    )
    objective.compute(*views, step=0)  # evaluation (update=False) leaves the estimate alone
    np.testing.assert_allclose(
        objective.marginals["main"].numpy(),
        0.8 * batch["main"].numpy() + 0.2 * other_batch.numpy(),
        rtol=1e-5,
    )


def test_train_step_updates_the_moving_marginal_and_it_is_saved(tmp_path):
    model = _compiled(marginal_momentum=0.5)
    images = tf.constant(synthetic_scenes(4, 16, seed=1)[0])
    model.train_on_batch(images)
    recorded = model.objective.marginals["main"].numpy()
    assert recorded.sum() == pytest.approx(1.0, rel=1e-5) and (recorded > 0).all()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.objective.marginals["main"].numpy(), recorded)


def test_sobel_input_feeds_two_gradient_channels():
    model = _compiled(sobel=True)
    kernel = model.network.front_layer.weights[0]
    assert kernel.shape[2] == 3 + 2
    flat = tf.fill((1, 16, 16, 3), 0.5)
    np.testing.assert_array_equal(transforms.sobel(flat).numpy(), 0.0)
    ramp = tf.tile(tf.reshape(tf.range(16, dtype=tf.float32) / 16, (1, 1, 16, 1)), (1, 16, 1, 3))
    edges = transforms.sobel(ramp).numpy()
    assert edges.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(edges[0, 4:-4, 4:-4, 1], 2 / 16, rtol=1e-5)  # d/dx of the ramp
    np.testing.assert_allclose(edges[0, 4:-4, 4:-4, 0], 0.0, atol=1e-6)


def test_inference_shrinks_by_input_downsample_and_answers_at_the_input_size():
    model = _compiled(input_downsample=2)
    images = tf.constant(synthetic_scenes(2, 32, seed=4)[0])
    probs = model(images)
    assert probs.shape == (2, 32, 32, 3)
    shrunk = tf.image.resize(images, (16, 16), method="area")
    np.testing.assert_allclose(  # the same as running the plain model on block means
        probs.numpy(),
        tf.image.resize(model.network.forward(shrunk)[1], (32, 32), method="bilinear").numpy(),
        atol=1e-6,
    )
    labels = model.predict_labels(images)
    np.testing.assert_array_equal(labels.numpy(), probs.numpy().argmax(-1))
    odd = model(tf.zeros((1, 7, 5, 3)))  # odd sizes and images smaller than the factor
    assert odd.shape == (1, 7, 5, 3)
    assert model(tf.zeros((1, 1, 1, 3))).shape == (1, 1, 1, 3)


@pytest.mark.parametrize("source", ["features", "overclustering"])
def test_fitted_centres_label_pixels_by_the_nearest_centre_and_survive_saving(source, tmp_path):
    model = _compiled(overclustering=6, labels_from=source)
    images = tf.constant(synthetic_scenes(4, 16, seed=6)[0])
    head = model.network.forward(images)[1]
    np.testing.assert_allclose(  # unfitted: the head answers
        model(images).numpy(), tf.image.resize(head, (16, 16)).numpy(), atol=1e-6
    )
    centres = model.fit_labelling([images[:2], (images[2:], None)], seed=3)
    assert centres.shape == (3, model.network.feature_depth if source == "features" else 6)
    features, _, over = model.network.forward(images)
    space = (features if source == "features" else over).numpy()
    distances = ((space[..., None, :] - centres.astype(np.float32)) ** 2).sum(-1)
    grid = tf.image.resize(tf.nn.softmax(-distances / model.centres.scale.numpy()), (16, 16))
    np.testing.assert_allclose(model(images).numpy(), grid.numpy(), atol=1e-5)
    labels = model.predict_labels(images).numpy()
    np.testing.assert_array_equal(labels, grid.numpy().argmax(-1))
    assert len(np.unique(labels)) > 1
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict_labels(images).numpy(), labels)


def test_centres_need_their_source():
    with pytest.raises(ValueError, match="needs an `overclustering` head"):
        _compiled(labels_from="overclustering")
    with pytest.raises(ValueError, match="`labels_from` must be one of"):
        _compiled(labels_from="kmeans")
    with pytest.raises(ValueError, match="fit_labelling needs"):
        _compiled().fit_labelling([tf.zeros((1, 16, 16, 3))])


def test_new_options_round_trip_through_the_config():
    model = _compiled(
        overclustering=6, over_entropy_weight=1.0, entropy_weight=1.5, marginal_momentum=0.9,
        sobel=True, per_offset=True, displacement=2, input_downsample=3, labels_from="features",
    )  # fmt: skip
    clone = AutoSegModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert clone.config == model.config
    for name in ("over_entropy_weight", "entropy_weight", "marginal_momentum", "sobel",
                 "per_offset", "displacement", "input_downsample", "labels_from"):  # fmt: skip
        assert clone.config.arguments()[name] == model.config.arguments()[name]


def test_mixed_bfloat16_trains_with_finite_loss():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _compiled(attention_blocks=(2,), overclustering=6, displacement=1)
    assert model.network.head.compute_dtype == "bfloat16"
    history = model.fit(tf.random.uniform((8, 16, 16, 3)), batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model(tf.random.uniform((1, 16, 16, 3))).dtype == tf.float32


# The learning test. Stated budget and thresholds: 3-block F2 (width 16, stride
# 2) trained 150 steps of 8 images (about 10 s on 2 CPU cores) on 32x32
# synthetic scenes of 3 textured classes; held-out Hungarian accuracy at least
# 0.70 (chance is 1/3), while the same network untrained stays at most 0.55.
LEARN_STEPS = 150
TRAINED_AT_LEAST = 0.70
RANDOM_AT_MOST = 0.55


def test_ac_training_learns_the_classes_and_a_random_network_does_not():
    train_images, _ = synthetic_scenes(48, 32, 3, seed=1)
    test_images, test_labels = synthetic_scenes(16, 32, 3, seed=2)

    def accuracy(model):
        clusters = model.predict_labels(test_images).numpy()
        return hungarian_accuracy(confusion_matrix(test_labels, clusters, 3, 3))

    model = AutoSegModel.variant("F2", 3, (32, 32, 3), width=16, stride=2, ar_blocks=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    untrained = accuracy(model)
    dataset = tf.data.Dataset.from_tensor_slices(train_images).shuffle(48, seed=0).repeat().batch(8)
    model.fit(dataset, steps_per_epoch=LEARN_STEPS, epochs=1, verbose=0, shuffle=False)
    trained = accuracy(model)
    assert untrained <= RANDOM_AT_MOST, untrained
    assert trained >= TRAINED_AT_LEAST, trained
    assert float(model.mi_tracker.result()) > 0.5 * np.log(3)


def test_input_shape_may_be_left_open_and_crops_are_checked_when_a_step_is_traced(tmp_path):
    model = AutoSegModel.variant("F2", 3, width=8, ar_blocks=1, geometric="rotate")
    assert model.image_shape == (None, None, 3)
    model.compile(optimizer="adam")
    square = tf.data.Dataset.from_tensors(tf.zeros((2, 32, 32, 3))).repeat()
    model.fit(square, steps_per_epoch=2, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert model(np.zeros((1, 20, 28, 3), "float32")).shape == (1, 20, 28, 3)
    model.save(tmp_path / "open.keras")
    loaded = keras.saving.load_model(tmp_path / "open.keras", compile=False)
    assert loaded.image_shape == (None, None, 3)
    other = AutoSegModel.variant("F2", 3, width=8, ar_blocks=1, geometric="rotate")
    other.compile(optimizer="adam")
    wide = tf.data.Dataset.from_tensors(tf.zeros((2, 32, 48, 3))).repeat()
    with pytest.raises(ValueError, match="rotations need square crops. Received: crops of 32x48"):
        other.fit(wide, steps_per_epoch=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="input_shape"):
        AutoSegModel(3, (32, 32, None))


def test_each_option_is_declared_once_in_one_section():
    import dataclasses

    from tf_autoseg.modeling.config import SECTIONS
    from tf_autoseg.modeling.config import ModelConfig

    declared = [name for section in SECTIONS.values() for name in section.names()]
    assert len(declared) == len(set(declared)), "an option is declared in two sections"
    assert set(ModelConfig.names()) == {*declared, "seed"}
    with pytest.raises(TypeError, match="unknown model option.*colour"):
        ModelConfig.from_arguments(num_classes=3, colour=1)
    # Flat options, a config and the saved config describe one model.
    options = dict(num_classes=4, width=8, displacement=1, geometric="flip", labels_from="features")
    model = AutoSegModel(input_shape=(16, 16, 3), **options)
    assert model.config == ModelConfig.from_arguments(**options)
    assert AutoSegModel(input_shape=(16, 16, 3), config=model.config).config == model.config
    keras_keys = set(keras.Model(name="x").get_config())
    assert set(model.get_config()) - keras_keys == {*ModelConfig.names(), "input_shape"}
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name != "network"}
    assert ModelConfig.from_arguments(num_classes=3) == ModelConfig(
        network=SECTIONS["network"](num_classes=3), **defaults
    )
    with pytest.raises(ValueError, match="either as `config` or by name"):
        AutoSegModel(config=model.config, width=16)


def test_training_flags_become_model_arguments():
    from tf_autoseg.training.config import RunConfig
    from tf_autoseg.training.config import model_config

    flags = RunConfig(variant="F3", ar_blocks=2, num_classes=4, attention_blocks=["1"],
                      downsample=2, ordering_types="both", num_orderings=16)  # fmt: skip
    config = model_config(flags)
    network = config.network
    assert (network.front, network.front_blocks, network.ar_blocks) == ("residual", 1, 2)
    assert network.attention_blocks == (1,) and config.labelling.input_downsample == 2
    assert len(config.views.orderings) == 16 and network.num_classes == 4
    built = AutoSegModel(input_shape=(16, 16, 3), config=config)
    assert len(built.network.ar_layers) == 3 and built.config == config


def test_a_model_saved_before_the_network_was_a_layer_loads_with_its_weights_and_state():
    from pathlib import Path

    from tf_autoseg.modeling import saving

    legacy = Path(__file__).parents[1] / "support" / "legacy"
    # Saved at 8dc798d (layers on the model itself): overclustering head, attention, moving
    # marginals, fitted centres, three Adam steps; its outputs recorded by that version.
    path, recorded = legacy / "autoseg_8dc798d.keras", np.load(legacy / "autoseg_8dc798d.npz")
    assert saving.older_layout(path)
    model = saving.load(path)
    assert int(model.optimizer.iterations) == int(recorded["iterations"])
    outputs = model.inference(recorded["images"], heads=("main", "overclustering"))
    for head in ("main", "overclustering"):
        np.testing.assert_array_equal(outputs[head].numpy(), recorded[head])
    assert model.centres.fitted and float(model.objective.marginals["main"].numpy().sum()) > 0
    assert len(model.optimizer.variables) == 2 + 2 * len(model.trainable_variables)
    model.train_on_batch(recorded["images"][:, :16, :12])  # it trains on from its state
    assert int(model.optimizer.iterations) == int(recorded["iterations"]) + 1


def test_the_models_front_door_refuses_what_the_serving_signatures_refuse():
    model = _compiled()
    good = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    cases = [
        (good * 255, "float `images` must be in \\[0, 1\\]"),  # 0..255 floats
        (np.where(good > 0.5, np.nan, good), "must be finite"),
        (np.zeros((0, 16, 16, 3), np.float32), "empty batch"),
        (np.zeros((1, 0, 16, 3), np.float32), "at least 1x1 pixels"),
    ]
    for images, message in cases:
        for call in (
            model.predict_labels,
            model,
            lambda x: model.cluster_labels(x, heads=("main",)),
        ):
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                call(images)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be finite"):
        model.fit(np.where(good > 0.5, np.nan, good), batch_size=2, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights()):  # no weight turned NaN
        np.testing.assert_array_equal(a, b)
    assert model.predict_labels(good).shape == (2, 16, 16)  # and good images still pass
