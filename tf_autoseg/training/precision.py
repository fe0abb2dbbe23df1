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
# A policy other than float32 is kept only when its step is this many times faster: at equal
# speed float32 wins (exact, and no noise decides the run's numerics).
MARGIN = 1.15


def probe(
    build_model,
    input_shape,
    batch_size=2,
    rounds=3,
    warmup=1,
    policies=POLICIES,
    clock=time.perf_counter,
):
    """Median seconds of one training step under each dtype policy, timed alternately.

    Args:
        build_model: a function of no argument returning a compiled model; it is called once
            per policy, with that policy set globally.
        input_shape: (height, width, channels) of the training crops.
        batch_size: images per timed step: the run's own batch (at 2 images the policies
            were level on a CPU where bf16 trained 1.7x faster at the recipe's 32).
        rounds: rounds of one timed step per policy, after `warmup` untimed steps of each
            (the first traces); alternating keeps a machine's slow moment from favouring one.
        policies: the policies to time.
        clock: seconds (a monotonic clock; tests pass their own).

    Returns:
        {policy: median seconds per step}. The global policy is restored on return.
    """
    previous = keras.mixed_precision.global_policy().name
    images = np.random.default_rng(0).integers(0, 256, (batch_size, *input_shape), np.uint8)
    times = {policy: [] for policy in policies}
    try:
        models = {}
        for policy in policies:
            keras.mixed_precision.set_global_policy(policy)
            models[policy] = build_model()
            for _ in range(warmup):
                models[policy].train_on_batch(images)
        for _ in range(rounds):
            for policy in policies:
                keras.mixed_precision.set_global_policy(policy)
                start = clock()
                models[policy].train_on_batch(images)
                times[policy].append(clock() - start)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return {policy: statistics.median(seconds) for policy, seconds in times.items()}


def choose(timings, margin=MARGIN):
    """float32 unless another timed policy's step is `margin` times faster (then the fastest)."""
    if not timings:
        raise ValueError("`timings` is empty: no policy was timed")
    fastest = min(timings, key=timings.get)
    if "float32" in timings and timings[fastest] * margin > timings["float32"]:
        return "float32"
    return fastest
