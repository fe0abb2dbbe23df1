"""Training and inference speed against the machine's own limit, and peak memory.

Prints one JSON object. In the same process first: the float32 matmul
throughput of this machine (the limit). Then each configuration runs in a
fresh child process (so its peak resident memory is its own): training
images/s of `model.fit`'s step (two orderings, two forward passes, the AC
loss, the update), the achieved GFLOP/s with the FLOPs counted analytically
from the graph's shapes (`forward_gflop` per image; a training step counts
2 views x 3 x forward), its ratio to the matmul limit, inference images/s in
process and through the exported SavedModel, the AC loss's time and share of
a step, and peak RSS.

    python -m benchmarks.speed                     # the full set (tens of minutes)
    python -m benchmarks.speed --quick             # tiny shapes, seconds per configuration

Models: F2 (5 masked blocks, width 64, stride 4), F2 with attention after block 3, and
`peer-net4`, the configuration of the public PyTorch reimplementation (stem to stride 4,
4 blocks of one masked 3x3 conv C->2C and five 1x1 convs, C = 64..512, K = 3).
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program (importing stays free)."""
    flags.DEFINE_list("models", ["f2", "f2_attention", "peer_net4"], "Models to time.")
    flags.DEFINE_list(
        "shapes", ["8x128x128x3", "4x200x200x4"], "BxHxWxC inputs (peer_net4: first only)."
    )
    flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies.")
    flags.DEFINE_integer("steps", 5, "Timed steps per measurement (the median is reported).")
    flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing).")
    flags.DEFINE_bool("saved_model", True, "Also time inference through the exported SavedModel.")
    flags.DEFINE_bool("quick", False, "Tiny shapes and widths, 2 steps: checks that it all works.")
    flags.DEFINE_string("one", None, "Internal: run one configuration (JSON) and print its result.")


def matmul_gflops(size=2048, repeats=5):
    """fp32 matmul throughput of this machine, GFLOP/s (median)."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def forward_flops(function, input_spec):
    """FLOPs of one call of `function` on `input_spec`, counted from the graph's shapes."""
    import tensorflow as tf

    graph = tf.function(function).get_concrete_function(input_spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


def build(name, shape, quick):
    """The model of a configuration, compiled."""
    import keras

    from benchmarks.peer_net4 import PeerNet4
    from tf_autoseg import AutoSegModel

    _, height, width, channels = shape
    scale = dict(width=8) if quick else {}
    if name == "peer_net4":
        model = PeerNet4((height, width, channels), base=8 if quick else 64)
    elif name in ("f2", "f2_attention"):
        model = AutoSegModel.variant(
            "F2",
            6,
            (height, width, channels),
            attention_blocks=(3,) if name == "f2_attention" else (),
            **scale,
        )
    else:
        raise ValueError(f"--models: unknown model {name!r}; accepted: f2, f2_attention, peer_net4")
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    return model


def _median_seconds(function, steps, warmup):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_one(config):
    """Measures one (model, shape, precision) configuration in this process."""
    import keras
    import tensorflow as tf

    from tf_autoseg.modeling.network import Outputs
    from tf_autoseg.serving import export

    keras.mixed_precision.set_global_policy(config["precision"])
    shape = config["shape"]
    batch = shape[0]
    model = build(config["model"], shape, config["quick"])
    images = tf.random.uniform(shape)
    flops = forward_flops(lambda x: model(x), tf.TensorSpec([1, *shape[1:]], tf.float32))
    train_s = _median_seconds(
        lambda: model.train_on_batch(images), config["steps"], config["warmup"]
    )
    # The AC loss on the two views' head outputs (the grid the loss runs on), fwd + bwd.
    probs = model.network.forward(images).probabilities
    views = [tf.Variable(probs), tf.Variable(tf.reverse(probs, [1]))]

    @tf.function
    def loss_step():  # the objective that trains, on the main head alone
        with tf.GradientTape() as tape:
            loss = model.objective.compute(*(Outputs(None, v, None) for v in views), step=0)[0]
        return tape.gradient(loss, views)

    loss_s = _median_seconds(lambda: loss_step()[0].numpy(), config["steps"], config["warmup"])
    infer = tf.function(lambda x: model(x))
    infer_s = _median_seconds(lambda: infer(images).numpy(), config["steps"], config["warmup"])
    result = {
        **{k: config[k] for k in ("model", "precision")},
        "shape": "x".join(map(str, shape)),
        "parameters": int(model.count_params()),
        "forward_gflop_per_image": float(f"{flops / 1e9:.4g}"),
        "train_step_s": round(train_s, 4),
        "train_images_per_s": round(batch / train_s, 3),
        "train_gflops": round(2 * 3 * flops * batch / train_s / 1e9, 1),
        "infer_images_per_s": round(batch / infer_s, 3),
        "loss_ms": round(loss_s * 1e3, 3),
        "loss_fraction_of_step": round(loss_s / train_s, 4),
    }
    if config["saved_model"]:
        with tempfile.TemporaryDirectory() as folder:
            path = export.export_model(model, "bench", output_dir=folder)
            signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            pixels = tf.cast(images * 255.0, tf.uint8)
            served_s = _median_seconds(
                lambda: signature(images=pixels)["labels"].numpy(),
                config["steps"],
                config["warmup"],
            )
        result["infer_saved_model_images_per_s"] = round(batch / served_s, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main(argv):
    del argv
    if FLAGS.one:
        print(json.dumps(run_one(json.loads(FLAGS.one))))
        return
    shapes = ["2x32x32x3", "2x40x40x4"] if FLAGS.quick else FLAGS.shapes
    limit = matmul_gflops(512 if FLAGS.quick else 2048)
    results = []
    for model in FLAGS.models:
        for shape in shapes[:1] if model == "peer_net4" else shapes:
            for precision in FLAGS.precisions:
                config = {
                    "model": model,
                    "shape": [int(v) for v in shape.split("x")],
                    "precision": precision,
                    "steps": 2 if FLAGS.quick else FLAGS.steps,
                    "warmup": 1 if FLAGS.quick else FLAGS.warmup,
                    "saved_model": FLAGS.saved_model,
                    "quick": FLAGS.quick,
                }
                child = subprocess.run(
                    [sys.executable, "-m", "benchmarks.speed", f"--one={json.dumps(config)}"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode:
                    raise SystemExit(f"configuration {config} failed:\n{child.stderr[-3000:]}")
                result = json.loads(child.stdout.strip().splitlines()[-1])
                result["train_fraction_of_matmul"] = round(result["train_gflops"] / limit, 3)
                results.append(result)
    print(
        json.dumps(
            {
                "matmul_fp32_gflops": round(limit, 1),
                "cpu_count": os.cpu_count(),
                "flop_convention": "forward FLOPs from graph shapes; training = 2 views x 3 x forward",
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
