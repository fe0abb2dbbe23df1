"""--precision=auto picks the policy its probe measured as faster."""

import keras
import numpy as np
import pytest

from tf_autoseg import AutoSegModel
from tf_autoseg.training import precision


class _Clock:
    """A clock that only the stand-in models advance."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _PolicyTimedModel:
    """A stand-in whose step takes a known time (on `clock`) under the policy it was built in."""

    def __init__(self, seconds, clock, log):
        self.policy = keras.mixed_precision.global_policy().name
        self.seconds, self.clock, self.log = seconds, clock, log
        self.steps = 0

    def train_on_batch(self, images):
        assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 3)  # the run's batch
        self.steps += 1
        self.log.append(self.policy)
        self.clock.now += self.seconds[self.policy]


def _probe(seconds, rounds=3):
    clock, log, built = _Clock(), [], []

    def build():
        built.append(_PolicyTimedModel(seconds, clock, log))
        return built[-1]

    timings = precision.probe(build, (8, 8, 3), batch_size=5, rounds=rounds, clock=clock)
    return timings, built, log


@pytest.mark.parametrize("slow", ["float32", "mixed_bfloat16"])
def test_auto_picks_the_policy_the_probe_measured_faster(slow):
    seconds = {"float32": 0.1, "mixed_bfloat16": 0.1}
    seconds[slow] = 0.3
    timings, built, log = _probe(seconds)
    assert [m.policy for m in built] == list(precision.POLICIES)
    assert all(m.steps == 4 for m in built)  # one warm-up step and 3 timed ones each
    assert log[2:] == list(precision.POLICIES) * 3  # timed steps alternate between policies
    assert timings == pytest.approx({**seconds})
    assert precision.choose(timings) != slow
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_bfloat16_needs_a_clear_margin_over_float32():
    timings, _, _ = _probe({"float32": 0.100, "mixed_bfloat16": 0.095})  # 5% faster: noise
    assert precision.choose(timings) == "float32"
    timings, _, _ = _probe({"float32": 0.235, "mixed_bfloat16": 0.139})  # 1.69x (Zen 4)
    assert precision.choose(timings) == "mixed_bfloat16"


def test_probe_times_the_real_model_under_both_policies():
    def build():
        model = AutoSegModel(3, (16, 16, 3), width=8, ar_blocks=1, stride=2)
        model.compile(optimizer="adam")
        assert (
            model.network.head.compute_dtype == keras.mixed_precision.global_policy().compute_dtype
        )
        return model

    timings = precision.probe(build, (16, 16, 3), rounds=1)
    assert set(timings) == set(precision.POLICIES) and all(t > 0 for t in timings.values())
    assert precision.choose(timings) in precision.POLICIES
    with pytest.raises(ValueError, match="empty"):
        precision.choose({})
