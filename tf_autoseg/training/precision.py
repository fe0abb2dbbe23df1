"""`--precision=auto`: time the run's own training step in each dtype policy here, keep the faster.

Whether `mixed_bfloat16` pays depends on the CPU, not on the model: measured on this project's
2-core machines it trained 1.7-1.9x faster than float32 on an AMD EPYC with `avx512_bf16`,
1.2-1.8x slower on an Intel Xeon without AMX, and 14x slower on an AMD EPYC without AVX-512
(2026-12-02, the dubai.cfg model). No flag in /proc/cpuinfo predicts the ratio reliably, so the
training program measures it: a few steps of the model it is about to train, on a small batch
of random images of the training shape, under each policy.
"""

import statistics
import time

import keras
import numpy as np

POLICIES = ("float32", "mixed_bfloat16")


def probe(build_model, input_shape, batch_size=2, steps=3, warmup=1, policies=POLICIES):
    """Median seconds of one training step under each dtype policy.

    Args:
        build_model: a function of no argument returning a compiled model; it is called once
            per policy, with that policy set globally.
        input_shape: (height, width, channels) of the training crops.
        batch_size: images per timed step (small: the ratio is what matters).
        steps: timed steps per policy, after `warmup` untimed ones (the first traces).
        policies: the policies to time.

    Returns:
        {policy: seconds per step}. The global policy is restored on return.
    """
    previous = keras.mixed_precision.global_policy().name
    images = np.random.default_rng(0).integers(0, 256, (batch_size, *input_shape), np.uint8)
    timings = {}
    try:
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            model = build_model()
            for _ in range(warmup):
                model.train_on_batch(images)
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                model.train_on_batch(images)
                times.append(time.perf_counter() - start)
            timings[policy] = statistics.median(times)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return timings


def choose(timings):
    """The policy of the fastest step in `timings` ({policy: seconds})."""
    if not timings:
        raise ValueError("`timings` is empty: no policy was timed")
    return min(timings, key=timings.get)
