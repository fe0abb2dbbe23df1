"""View transformations of the training procedure (slides, "Transformations").

Photometric: colour jitter, drawn per view. Geometric: an element of the
dihedral group (flips, 90-degree rotations) applied to one view's input and
inverted on its output, so that pixel u of both outputs shows the same scene
point. All draws are stateless: they depend only on the seed they are given.
"""

import tensorflow as tf

from tf_autoseg import arguments
from tf_autoseg.modeling.config import GEOMETRIC

# A dihedral element k has three bits: 1 = flip left-right, 2 = flip
# up-down, 4 = transpose (applied first). Rotations are 0 (identity),
# 3 (180 degrees), 5 and 6 (90 degrees either way).
_ELEMENTS = {
    "none": (0,),
    "flip": (0, 1, 2, 3),
    "rotate": (0, 3, 5, 6),
    "flip_rotate": tuple(range(8)),
}


def to_float_images(images):
    """uint8 images become float32 in [0, 1]; float images are cast to float32."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    if not images.dtype.is_floating:
        raise ValueError(
            "Images must be uint8 or floating point in [0, 1]. "
            f"Received: images with dtype={images.dtype.name}"
        )
    return tf.cast(images, tf.float32)


def checked_images(images, channels=None):
    """`to_float_images` of a batch that passed the checks the serving signatures make.

    The front door of the model and of its export, in one wording: a (B, H, W, C) batch
    (`channels` C when given) of at least one image of at least 1x1 pixels, uint8, or floats
    that are finite and in [0, 1] (0..255 floats would be labelled wrongly, NaN would reach
    every weight). The checks are graph ops (an InvalidArgumentError with its message),
    cheap beside a forward pass.
    """
    images = tf.convert_to_tensor(images)
    images = tf.ensure_shape(images, [None, None, None, channels])
    shape = tf.shape(images)
    checks = [
        tf.debugging.assert_positive(
            shape[0], message="`images` is an empty batch: send at least one image"
        ),
        tf.debugging.assert_positive(
            shape[1] * shape[2],
            message="`images` must be at least 1x1 pixels: received height or width 0",
        ),
    ]
    floats = to_float_images(images)
    if images.dtype != tf.uint8:
        checks += [
            tf.debugging.assert_all_finite(floats, "float `images` must be finite (no NaN)"),
            tf.debugging.assert_greater_equal(
                tf.reduce_min(floats), 0.0, message="float `images` must be in [0, 1]"
            ),
            tf.debugging.assert_less_equal(
                tf.reduce_max(floats), 1.0, message="float `images` must be in [0, 1]"
            ),
        ]
    with tf.control_dependencies(checks):
        return tf.identity(floats)


def sample_dihedral(mode, seed):
    """A random dihedral element id among those `mode` allows, as an int32 scalar."""
    arguments.choice("geometric", mode, GEOMETRIC)
    elements = tf.constant(_ELEMENTS[mode], tf.int32)
    index = tf.random.stateless_uniform((), seed, maxval=len(_ELEMENTS[mode]), dtype=tf.int32)
    return elements[index]


def dihedral(x, k, inverse=False):
    """Applies dihedral element `k` (or its inverse) to (B, H, W, C) maps.

    Elements with a transpose (the 90-degree rotations, 4-7) need square maps;
    on others the static shape is kept.
    """
    k = tf.convert_to_tensor(k, tf.int32)
    square = x.shape[1] is not None and x.shape[1] == x.shape[2]

    def maybe(bit, fn, value):
        return tf.cond(tf.bitwise.bitwise_and(k, bit) > 0, lambda: fn(value), lambda: value)

    def flips(t):
        return maybe(2, lambda u: tf.reverse(u, [1]), maybe(1, lambda u: tf.reverse(u, [2]), t))

    def transpose(t):
        if square:
            return maybe(4, lambda u: tf.transpose(u, (0, 2, 1, 3)), t)
        check = tf.debugging.assert_equal(
            tf.bitwise.bitwise_and(k, 4),
            0,
            message=f"dihedral: 90-degree rotations need square maps; got shape {x.shape}",
        )
        with tf.control_dependencies([check]):
            return tf.identity(t)

    y = transpose(flips(x)) if inverse else flips(transpose(x))
    y.set_shape(x.shape)
    return y


def sobel(images):
    """(B, H, W, 2) Sobel gradients (vertical, horizontal) of the grey level of [0, 1] images.

    The grey level is the mean of the first three channels (or the only one); borders
    repeat the edge pixels (`tf.image.sobel_edges`).
    """
    grey = tf.reduce_mean(images[..., :3], axis=-1, keepdims=True)
    return tf.image.sobel_edges(grey)[..., 0, :] / 4.0  # (B, H, W, 1, 2) -> (B, H, W, 2)


def color_jitter(images, seed, brightness=0.2, contrast=0.3, saturation=0.3):
    """Per-image random brightness, contrast and (RGB) saturation, clipped to [0, 1].

    Channels past the third (e.g. Potsdam's infrared) get brightness and
    contrast only.
    """
    batch = tf.shape(images)[0]

    def draw(salt, low, high):
        return tf.random.stateless_uniform(
            (batch, 1, 1, 1), seed + tf.constant([0, salt], seed.dtype), low, high
        )

    x = images + draw(1, -brightness, brightness)
    mean = tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    x = (x - mean) * draw(2, 1 - contrast, 1 + contrast) + mean
    if images.shape[-1] is not None and images.shape[-1] >= 3:
        rgb, rest = x[..., :3], x[..., 3:]
        gray = tf.reduce_mean(rgb, axis=-1, keepdims=True)
        rgb = (rgb - gray) * draw(3, 1 - saturation, 1 + saturation) + gray
        x = tf.concat([rgb, rest], axis=-1)
    return tf.clip_by_value(x, 0.0, 1.0)
