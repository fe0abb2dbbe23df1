"""Edge-aware refinement of label probabilities at full resolution, inside the graph.

The network labels a grid 4 times coarser than the image; its probabilities, upsampled, blur
across colour edges. `refine` runs a few mean-field steps of a Potts model whose pairwise
kernel is bilateral (Krahenbuhl and Koltun, "Efficient Inference in Fully Connected CRFs",
2011; Teichmann and Cipolla's ConvCRF, 2019, restricts it to a local window as here): a pixel
takes the labels of the neighbours that look like it, so labels follow the image's edges.
Plain TensorFlow ops on any height and width, so the SavedModel serves it too.
"""

import tensorflow as tf

# The window: (2 * RADIUS + 1)^2 - 1 neighbours STEP pixels apart (8 neighbours 8 pixels away,
# a 17 x 17 pixel reach). Chosen on CamVid 0006R0 (docs/benchmarks.md): 0.6 mIoU below 24
# neighbours 4 apart at a third of their cost (0.65x the head's 512 x 512 latency, for 3 steps).
RADIUS = 1
STEP = 8
COLOUR = 0.1  # colour distance (channels in [0, 1]) at which a neighbour's weight is e^(-1/2)
WEIGHT = 2.0  # how much the neighbours count against the pixel's own probabilities


def _shift(x, dy, dx):
    """`out[:, y, x] = x[:, y + dy, x + dx]`, zeros where that falls outside the image."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [max(-dy, 0), max(dy, 0)], [max(-dx, 0), max(dx, 0)], [0, 0]])
    return padded[:, max(dy, 0) : max(dy, 0) + height, max(dx, 0) : max(dx, 0) + width, :]


def refine(probabilities, images, iterations=3, radius=RADIUS, step=STEP, colour=COLOUR,
           weight=WEIGHT):  # fmt: skip
    """(B, H, W, K) probabilities after `iterations` mean-field steps over `images`' edges.

    Args:
        probabilities: (B, H, W, K) label probabilities (the unary term, as log-probabilities).
        images: (B, H, W, C) float images in [0, 1] at the same size.
        iterations: mean-field steps (0 returns `probabilities`).
        radius, step: the window: offsets (dy, dx) = step * (i, j), |i|, |j| <= radius.
        colour: the bilateral kernel's colour scale; the spatial scale is the window's reach.
        weight: the Potts term's weight.

    Returns:
        (B, H, W, K) float32 probabilities.
    """
    probabilities = tf.cast(probabilities, tf.float32)
    if iterations == 0:
        return probabilities
    images = tf.cast(images, tf.float32)
    inside = tf.ones_like(images[..., :1])
    reach = float(radius * step)
    kernels, offsets = [], []
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            if i == j == 0:
                continue
            dy, dx = i * step, j * step
            distance = tf.reduce_sum((images - _shift(images, dy, dx)) ** 2, -1, keepdims=True)
            spatial = (dy * dy + dx * dx) / (2.0 * reach * reach)
            kernel = tf.exp(-distance / (2.0 * colour * colour) - spatial)
            kernels.append(kernel * _shift(inside, dy, dx))
            offsets.append((dy, dx))
    unary = tf.math.log(tf.maximum(probabilities, 1e-6))
    q = probabilities
    for _ in range(iterations):
        message = tf.add_n([k * _shift(q, dy, dx) for k, (dy, dx) in zip(kernels, offsets)])
        q = tf.nn.softmax(unary + weight * message)
    return q
