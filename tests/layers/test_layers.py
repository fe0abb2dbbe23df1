"""Causality, masking, attention and serialisation of the layers, proved exactly."""

import itertools
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_autoseg import MaskedAttentionBlock
from tf_autoseg import MaskedMultiHeadAttention
from tf_autoseg import MaskedResidualBlock
from tf_autoseg import ShiftedMaskedConv2D
from tf_autoseg.layers import backbones
from tf_autoseg.layers import orderings

SIZES = [(4, 6), (5, 5), (7, 3)]
ALL = range(orderings.NUM_ORDERINGS)


class Stack(keras.layers.Layer):
    """Layers called in turn under one ordering."""

    def __init__(self, layers, **kwargs):
        super().__init__(**kwargs)
        self.parts = layers

    def call(self, x, ordering=None):
        for layer in self.parts:
            x = layer(x, ordering=ordering)
        return x


def dependency_fn(network, height, width, channels=3, seed=0):
    """Returns `f(ordering) -> D`, D[p, q] = |d out(p) / d in(q)| summed over channels.

    p and q are row-major positions. The batch holds one copy of the input per
    output pixel; copy b backpropagates only from pixel b, with a random
    weight per output channel so no channel sum cancels. One backward pass
    gives the whole (HW, HW) matrix, and one trace serves every ordering.
    """
    rng = np.random.default_rng(seed)
    n = height * width
    x = tf.constant(
        np.tile(rng.normal(size=(1, height, width, channels)), (n, 1, 1, 1)), tf.float32
    )
    network(x[:1], ordering=0)  # build
    out_channels = network(x[:1]).shape[-1]
    picks = tf.constant(
        np.eye(n).reshape(n, height, width, 1)
        * rng.uniform(0.5, 1.5, size=(1, 1, 1, out_channels)),
        tf.float32,
    )

    @tf.function
    def matrix(ordering):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(network(x, ordering=ordering), tf.float32)
            objective = tf.reduce_sum(y * picks)
        grad = tape.gradient(objective, x)
        return tf.reshape(tf.reduce_sum(tf.abs(grad), axis=-1), (n, n))

    return lambda ordering: matrix(tf.constant(ordering)).numpy(), matrix


def allowed_matrix(ordering, height, width):
    ranks = orderings.rank(ordering, height, width).ravel()
    return ranks[None, :] <= ranks[:, None]


def offsets_from_spec(ordering, kernel_size):
    """A masked convolution's offsets, from the paper's rule and the rank alone.

    Window: k rows ending at the current one along the slow axis (towards the
    scan's start), centred on the fast axis; kept: offsets whose pixel is
    visited no later than the centre wherever both lie on a 9x9 grid.
    """
    k, half = kernel_size, (kernel_size - 1) // 2
    name = orderings.name(ordering)
    by_columns = "cols" in name or name.endswith("vertical")
    from_start = ("left" in name) if by_columns else ("top" in name)
    slow = range(-(k - 1), 1) if from_start else range(0, k)
    window = [(s, f) for s in slow for f in range(-half, half + 1)]
    window = [(f, s) if by_columns else (s, f) for s, f in window]
    size = 9
    ranks = orderings.rank(ordering, size, size)
    return [
        (dr, dc)
        for dr, dc in window
        if all(
            ranks[r + dr, c + dc] <= ranks[r, c]
            for r, c in itertools.product(range(size), repeat=2)
            if 0 <= r + dr < size and 0 <= c + dc < size
        )
    ]


def composed_receptive_field(offsets, layers, height, width):
    """(HW, HW) reachability through `layers` convolutions with zero padding."""
    n = height * width
    reach = np.eye(n, dtype=bool)
    step = np.zeros((n, n), bool)
    for r, c in itertools.product(range(height), range(width)):
        for dr, dc in offsets:
            if 0 <= r + dr < height and 0 <= c + dc < width:
                step[r * width + c, (r + dr) * width + c + dc] = True
    for _ in range(layers):
        reach = (reach.astype(int) @ step.astype(int)) > 0
    return reach


@pytest.mark.parametrize("height,width", SIZES)
def test_single_convolution_is_causal_and_keeps_its_allowed_offsets(height, width):
    layer = ShiftedMaskedConv2D(4, 3, kernel_initializer="random_normal")
    dep, _ = dependency_fn(layer, height, width)
    for ordering in ALL:
        d = dep(ordering)
        assert (d[~allowed_matrix(ordering, height, width)] == 0).all(), ordering
        expected = composed_receptive_field(offsets_from_spec(ordering, 3), 1, height, width)
        np.testing.assert_array_equal(d > 0, expected, err_msg=orderings.name(ordering))


@pytest.mark.parametrize("kernel_size,layers,size", [(3, 3, (7, 6)), (5, 2, (6, 7))])
def test_stacked_receptive_field_equals_composed_offsets(kernel_size, layers, size):
    height, width = size
    stack = Stack(
        [
            ShiftedMaskedConv2D(4, kernel_size, kernel_initializer="random_normal")
            for _ in range(layers)
        ]
    )
    dep, matrix = dependency_fn(stack, height, width)
    for ordering in ALL:
        d = dep(ordering)
        expected = composed_receptive_field(
            offsets_from_spec(ordering, kernel_size), layers, height, width
        )
        np.testing.assert_array_equal(d > 0, expected, err_msg=orderings.name(ordering))
        assert not expected[~allowed_matrix(ordering, height, width)].any()
    assert matrix.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("height,width", SIZES + [(1, 6), (6, 1)])
def test_mixed_stack_is_causal_and_sees_every_allowed_pixel(height, width):
    """Conv -> attention -> residual block: zero on the future, non-zero on all the past."""
    stack = Stack(
        [
            ShiftedMaskedConv2D(6, 3, kernel_initializer="random_normal"),
            MaskedMultiHeadAttention(num_heads=2, key_dim=3),
            MaskedResidualBlock(6, activation="tanh"),
        ]
    )
    dep, matrix = dependency_fn(stack, height, width)
    for ordering in ALL:
        d = dep(ordering)
        allowed = allowed_matrix(ordering, height, width)
        assert (d[~allowed] == 0).all(), f"future leaks under {orderings.name(ordering)}"
        assert (d[allowed] > 0).all(), f"past lost under {orderings.name(ordering)}"
    assert matrix.experimental_get_tracing_count() == 1


def test_residual_block_with_dropout_is_causal_in_training():
    block = MaskedResidualBlock(4, dropout=0.3)
    wrapped = Stack([block])
    x = tf.random.normal((1, 5, 6, 4))
    for ordering in (0, 5, 10, 15):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, ordering=ordering, training=True)
            objective = tf.reduce_sum(y[0, 2, 3])
        d = tf.reduce_sum(tf.abs(tape.gradient(objective, x)), -1).numpy().ravel()
        allowed = allowed_matrix(ordering, 5, 6)[2 * 6 + 3]
        assert (d[~allowed] == 0).all()
    assert wrapped(x, ordering=1).shape == (1, 5, 6, 4)


@pytest.mark.parametrize("ordering", [0, 3, 6, 9, 14])
def test_masked_weights_get_zero_gradient_and_stay_put(ordering):
    layer = ShiftedMaskedConv2D(5, 3, kernel_initializer="random_normal")
    x = tf.random.normal((2, 6, 7, 3))
    layer(x)
    optimizer = keras.optimizers.Adam(0.1)
    before = layer.kernel.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, ordering=ordering)))
    grad = tape.gradient(loss, layer.kernel).numpy()
    mask = orderings.conv_mask(ordering, 3).astype(bool)
    assert (grad[~mask] == 0).all()
    assert (np.abs(grad[mask]).sum(axis=(-1, -2)) > 0).all()
    optimizer.apply([tf.constant(grad)], [layer.kernel])
    after = layer.kernel.numpy()
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert (after[mask] != before[mask]).all()


def test_plain_inference_equals_keras_conv2d():
    layer = ShiftedMaskedConv2D(5, 3, activation="relu", bias_initializer="random_normal")
    x = tf.random.normal((2, 7, 6, 3))
    layer(x)
    reference = keras.layers.Conv2D(5, 3, padding="same", activation="relu")
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)


def test_plain_attention_equals_keras_multi_head_attention():
    layer = MaskedMultiHeadAttention(num_heads=2, key_dim=4)
    x = tf.random.normal((2, 3, 5, 6))
    y = layer(x)
    sequence = tf.reshape(x, (2, 15, 6))
    keras_attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    keras_attention(sequence, sequence)
    keras_attention.set_weights(layer.attention.get_weights())
    reference = keras_attention(sequence, sequence)
    np.testing.assert_allclose(y.numpy(), tf.reshape(reference, y.shape).numpy(), atol=1e-6)


def numpy_attention(layer, x, ordering):
    """Reference: softmax over the allowed keys only, no large negative numbers."""
    mha = layer.attention
    b, h, w, c = x.shape
    seq = x.reshape(b, h * w, c).astype(np.float64)

    def project(dense):
        kernel, bias = (v.numpy().astype(np.float64) for v in dense.weights)
        return np.einsum("btc,cnd->btnd", seq, kernel) + bias

    q, k, v = project(mha.query_dense), project(mha.key_dense), project(mha.value_dense)
    logits = np.einsum("btnd,bsnd->bnts", q, k) / np.sqrt(layer.key_dim)
    allowed = orderings.attention_mask(ordering, h, w)
    weights = np.zeros_like(logits)
    for t in range(h * w):
        keys = allowed[t]
        row = logits[:, :, t, keys]
        e = np.exp(row - row.max(-1, keepdims=True))
        weights[:, :, t, keys] = e / e.sum(-1, keepdims=True)
    context = np.einsum("bnts,bsnd->btnd", weights, v)
    kernel, bias = (v.numpy().astype(np.float64) for v in mha.output_dense.weights)
    out = np.einsum("btnd,ndc->btc", context, kernel) + bias
    return out.reshape(b, h, w, -1)


@pytest.mark.parametrize("ordering", [None, 0, 5, 8, 13])
def test_attention_equals_numpy_reference(ordering):
    layer = MaskedMultiHeadAttention(num_heads=3, key_dim=4, output_dim=5)
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)
    y = layer(x, ordering=ordering).numpy()
    assert y.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(y, numpy_attention(layer, x, ordering), atol=2e-5)


def test_one_trace_serves_all_orderings():
    stack = Stack(
        [ShiftedMaskedConv2D(4, 3), MaskedMultiHeadAttention(2, 2), MaskedResidualBlock(4)]
    )
    x = tf.random.normal((2, 5, 6, 3))
    stack(x)  # variables are created outside the traced function

    @tf.function
    def forward(ordering):
        return stack(x, ordering=ordering)

    outputs = [forward(tf.constant(o)).numpy() for o in ALL]
    assert forward.experimental_get_tracing_count() == 1
    for o in (0, 7, 8, 15):
        np.testing.assert_allclose(outputs[o], stack(x, ordering=o).numpy(), atol=1e-5)
    distinct = {np.round(out, 5).tobytes() for out in outputs}
    assert len(distinct) == 16


def test_keras_save_and_load_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5, 6, 3)),
            ShiftedMaskedConv2D(4, 5, bias_initializer="random_normal", allow_zigzag=False),
            MaskedResidualBlock(6, dropout=0.2, activation="gelu"),
            MaskedMultiHeadAttention(num_heads=2, key_dim=3, value_dim=2, output_dim=4),
        ]
    )
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = tf.random.normal((2, 5, 6, 3))
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    for ordering in (None, 2, 7):
        a, b = x, x
        for original, restored in zip(model.layers, loaded.layers):
            assert type(restored) is type(original)
            assert restored.get_config() == original.get_config()
            a, b = original(a, ordering=ordering), restored(b, ordering=ordering)
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_archive_names_layers_by_registered_name_not_module(tmp_path):
    """An archive saved before the split (module `tf_autoseg.layers`) still loads."""
    model = keras.Sequential(
        [keras.Input((4, 5, 3)), ShiftedMaskedConv2D(4, 3), MaskedAttentionBlock(2)]
    )
    path = tmp_path / "new.keras"
    model.save(path)
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"][1:]:
                    assert layer["module"].startswith("tf_autoseg.layers.masked_")
                    # Where the layers lived before tf_autoseg.layers was a package.
                    layer["module"] = layer["module"].replace(".layers.", ".")
                data = json.dumps(config).encode()
            target.writestr(item, data)
    loaded = keras.saving.load_model(old)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    x = tf.random.normal((2, 4, 5, 3))
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())


# Every registered layer of the package, each with non-default arguments, and
# an input it accepts.
ROUND_TRIP = [
    (ShiftedMaskedConv2D(4, (5, 5), use_bias=False, allow_zigzag=False, name="c"), (5, 6, 3)),
    (MaskedMultiHeadAttention(3, 2, value_dim=5, dropout=0.1, use_bias=False, output_dim=7), (3, 4, 6)),
    (MaskedResidualBlock(3, kernel_size=5, dropout=0.25, activation="elu", allow_zigzag=False), (5, 6, 2)),
    (MaskedAttentionBlock(num_heads=3, key_dim=5, dropout=0.2, name="a"), (3, 4, 6)),
    (MaskedAttentionBlock(num_heads=2), (3, 4, 6)),
    (backbones.BasicBlock(6, strides=2, name="b"), (8, 8, 4)),
    (backbones.BasicBlock(4, dilation=2), (8, 8, 4)),
    (backbones.ConvStem(5, stride=2, blocks=2, name="s"), (8, 8, 3)),
    (backbones.ResNet18(name="r"), (16, 16, 3)),
]  # fmt: skip


@pytest.mark.parametrize(
    "layer,shape", ROUND_TRIP, ids=[type(layer).__name__ for layer, _ in ROUND_TRIP]
)
def test_config_round_trip(layer, shape):
    """from_config(get_config()) rebuilds the same layer: same config, weights, outputs."""
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_name(type(layer))
    assert registered.startswith("tf_autoseg>")
    assert keras.saving.get_registered_object(registered) is type(layer)
    x = tf.random.normal((2, *shape))
    expected = layer(x, training=False)
    clone(x, training=False)
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x, training=False).numpy(), expected.numpy())


def test_mixed_bfloat16_runs_close_to_float32_and_stays_causal():
    x = tf.random.normal((1, 5, 6, 4))
    reference = Stack(
        [ShiftedMaskedConv2D(8, 3), MaskedMultiHeadAttention(2, 4), MaskedResidualBlock(8)]
    )
    expected = reference(x, ordering=4).numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = Stack(
        [ShiftedMaskedConv2D(8, 3), MaskedMultiHeadAttention(2, 4), MaskedResidualBlock(8)]
    )
    mixed(x, ordering=0)
    for source, target in zip(reference.parts, mixed.parts):
        target.set_weights(source.get_weights())
        assert target.variable_dtype == "float32" and target.compute_dtype == "bfloat16"
    y = mixed(x, ordering=4)
    assert y.dtype == tf.bfloat16
    scale = np.abs(expected).max()
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, atol=0.05 * scale)
    dep, _ = dependency_fn(mixed, 5, 6, channels=4)
    for ordering in (0, 11):
        d = dep(ordering)
        allowed = allowed_matrix(ordering, 5, 6)
        assert (d[~allowed] == 0).all() and (d[allowed] > 0).all()


@pytest.mark.parametrize("bad", [16, -1, 1.5, "3"])
def test_bad_python_ordering_is_named(bad):
    layer = ShiftedMaskedConv2D(2, 3)
    with pytest.raises(ValueError, match=r"`ordering`.*\[0, 15\]"):
        layer(tf.zeros((1, 4, 4, 1)), ordering=bad)
    with pytest.raises(ValueError, match=r"`ordering`.*\[0, 15\]"):
        MaskedMultiHeadAttention(1, 2)(tf.zeros((1, 4, 4, 2)), ordering=bad)


def test_out_of_range_ordering_tensor_fails_at_run_time():
    layer = ShiftedMaskedConv2D(2, 3)
    forward = tf.function(lambda o: layer(tf.zeros((1, 4, 4, 1)), ordering=o))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"`ordering` must be an ordering id in \[0, 15\]"
    ):
        forward(tf.constant(16))
    with pytest.raises(ValueError, match="scalar integer tensor"):
        layer(tf.zeros((1, 4, 4, 1)), ordering=tf.constant([1, 2]))


def test_zigzag_where_unsupported_is_named():
    layer = ShiftedMaskedConv2D(2, 3, allow_zigzag=False)
    assert layer(tf.zeros((1, 4, 4, 1)), ordering=7).shape == (1, 4, 4, 2)
    with pytest.raises(
        ValueError, match=r"`ordering` must be an ordering id in \[0, 7\]. Received: ordering=8"
    ):
        layer(tf.zeros((1, 4, 4, 1)), ordering=8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 7\]"):
        tf.function(lambda o: layer(tf.zeros((1, 4, 4, 1)), ordering=o))(tf.constant(12))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ShiftedMaskedConv2D(2, 4), "`kernel_size` must be an odd positive int"),
        (lambda: ShiftedMaskedConv2D(2, (3, 5)), "square"),
        (lambda: ShiftedMaskedConv2D(2, 3, strides=2), "strides=1"),
        (lambda: ShiftedMaskedConv2D(2, 3, dilation_rate=2), "dilation_rate=1"),
        (
            lambda: ShiftedMaskedConv2D(2, 3, padding="valid"),
            "`padding` must be 'same'. Received: padding='valid'",
        ),
        (lambda: ShiftedMaskedConv2D(2, 3, data_format="channels_first"), "channels_last"),
        (lambda: MaskedMultiHeadAttention(0, 4), "`num_heads` must be a positive int"),
        (lambda: MaskedMultiHeadAttention(2, -1), "`key_dim` must be a positive int"),
        (lambda: MaskedMultiHeadAttention(2, 2.0), "Received: key_dim=2.0"),
        (lambda: MaskedMultiHeadAttention(2, 2, value_dim=0), "`value_dim`.*Received: value_dim=0"),
        (lambda: MaskedMultiHeadAttention(2, 2, output_dim=True), "Received: output_dim=True"),
        (lambda: MaskedMultiHeadAttention(2, 2, dropout=1.0), r"\[0, 1\). Received: dropout=1.0"),
        (lambda: MaskedMultiHeadAttention(2, 2, dropout="0.1"), "Received: dropout='0.1'"),
        (lambda: MaskedMultiHeadAttention(2, 2, dropout=None), "Received: dropout=None"),
        (lambda: MaskedAttentionBlock(0), "`num_heads` must be a positive int"),
        (lambda: MaskedAttentionBlock(2, key_dim=0), "`key_dim`.*Received: key_dim=0"),
        (lambda: MaskedAttentionBlock(2, dropout=-0.1), "Received: dropout=-0.1"),
        (lambda: MaskedResidualBlock(0), "`filters` must be a positive int"),
        (lambda: MaskedResidualBlock(4, kernel_size=2), "Received: kernel_size=2"),
        (lambda: MaskedResidualBlock(4, dropout=1), "Received: dropout=1"),
    ],
)
def test_bad_constructor_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_attention_needs_static_size_only_under_an_ordering():
    layer = MaskedMultiHeadAttention(1, 2)
    full = tf.function(lambda x: layer(x), input_signature=[tf.TensorSpec([None, None, None, 2])])
    assert full(tf.zeros((1, 3, 7, 2))).shape == (1, 3, 7, 2)
    masked = tf.function(
        lambda x: layer(x, ordering=0), input_signature=[tf.TensorSpec([None, None, None, 2])]
    )
    with pytest.raises(ValueError, match="static height and width"):
        masked(tf.zeros((1, 3, 7, 2)))
