"""--precision=auto picks the policy its probe measured as faster."""

import time

import keras
import numpy as np
import pytest

from tf_autoseg import AutoSegModel
from tf_autoseg.training import precision


class _PolicyTimedModel:
    """A stand-in whose step takes a known time under each global policy."""

    def __init__(self, seconds):
        self.policy = keras.mixed_precision.global_policy().name
        self.seconds = seconds
        self.steps = 0

    def train_on_batch(self, images):
        assert images.dtype == np.uint8 and images.shape == (2, 8, 8, 3)
        self.steps += 1
        time.sleep(self.seconds[self.policy])


@pytest.mark.parametrize("slow", ["float32", "mixed_bfloat16"])
def test_auto_picks_the_policy_the_probe_measured_faster(slow):
    seconds = {"float32": 0.002, "mixed_bfloat16": 0.002}
    seconds[slow] = 0.03
    built = []

    def build():
        built.append(_PolicyTimedModel(seconds))
        return built[-1]

    timings = precision.probe(build, (8, 8, 3), steps=3, warmup=1)
    assert [m.policy for m in built] == list(precision.POLICIES)
    assert all(m.steps == 4 for m in built)
    assert timings[slow] > 0.025 and min(timings.values()) < 0.02
    assert precision.choose(timings) != slow
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_probe_times_the_real_model_under_both_policies():
    def build():
        model = AutoSegModel(3, (16, 16, 3), width=8, ar_blocks=1, stride=2)
        model.compile(optimizer="adam")
        assert model.head.compute_dtype == keras.mixed_precision.global_policy().compute_dtype
        return model

    timings = precision.probe(build, (16, 16, 3), steps=1)
    assert set(timings) == set(precision.POLICIES) and all(t > 0 for t in timings.values())
    assert precision.choose(timings) == min(timings, key=timings.get)
    with pytest.raises(ValueError, match="empty"):
        precision.choose({})


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
