"""`import tf_autoseg` is enough for Keras to load what the package saves, and loads no
TensorFlow (tf_autoseg.registration)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tf_autoseg import AutoSegModel
from tf_autoseg import registration
from tf_autoseg.evaluation.keras_metric import MatchedSegmentationScore
from tf_autoseg.layers import backbones
from tf_autoseg.layers import masked_attention
from tf_autoseg.layers import masked_conv

ROOT = Path(__file__).resolve().parents[1]


def _python(code):
    """Runs `code` in a fresh interpreter (nothing of the package imported before it)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model and a stack of every serializable layer, saved as a Keras user would."""
    folder = tmp_path_factory.mktemp("saved")
    model = AutoSegModel.variant(
        "F2", 3, (16, 16, 3), width=8, stride=2, ar_blocks=2, attention_blocks=(1,),
        attention_heads=2, front="residual", front_blocks=1,
    )  # fmt: skip
    model(np.zeros((1, 16, 16, 3), np.float32))
    model.save(folder / "model.keras")
    layers = keras.Sequential([
        keras.Input((16, 16, 3)),
        backbones.ConvStem(8, stride=2, blocks=1),
        backbones.BasicBlock(8),
        masked_conv.ShiftedMaskedConv2D(8, 3),
        masked_conv.MaskedResidualBlock(8),
        masked_attention.MaskedAttentionBlock(num_heads=2),
        masked_attention.MaskedMultiHeadAttention(num_heads=2, key_dim=4),
    ])  # fmt: skip
    layers.compile(metrics=[MatchedSegmentationScore(3)])
    layers.save(folder / "layers.keras")
    return folder


@pytest.mark.parametrize(
    "imports", ["import tf_autoseg\nimport keras", "import keras\nimport tf_autoseg"]
)
def test_import_tf_autoseg_is_enough_to_load_what_it_saves(saved, imports):
    code = f"""{imports}
model = keras.models.load_model({str(saved / "model.keras")!r})
layers = keras.saving.load_model({str(saved / "layers.keras")!r})
metric = keras.saving.deserialize_keras_object(
    {keras.saving.serialize_keras_object(MatchedSegmentationScore(4, score="pixel_accuracy"))!r})
print(type(model).__name__, [type(layer).__name__ for layer in layers.layers], metric.num_classes)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]  # was "Could not locate class"
    assert result.stdout.split() == [
        "AutoSegModel", "['ConvStem',", "'BasicBlock',", "'ShiftedMaskedConv2D',",
        "'MaskedResidualBlock',", "'MaskedAttentionBlock',", "'MaskedMultiHeadAttention']", "4",
    ]  # fmt: skip


def test_import_tf_autoseg_loads_no_tensorflow_and_no_model_code():
    result = _python(
        "import sys, tf_autoseg\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules,"
        " 'tf_autoseg.modeling.model' in sys.modules)\n"
        "import keras\n"
        "print('tf_autoseg.modeling.model' in sys.modules)\n"  # only once a name is asked for
        "keras.saving.get_registered_object('tf_autoseg>AutoSegModel')\n"
        "print('tf_autoseg.modeling.model' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "False", "False", "True"]


def test_every_module_that_registers_a_class_is_listed():
    registering = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "tf_autoseg").rglob("*.py")
        if any(
            isinstance(node, ast.Attribute) and node.attr == "register_keras_serializable"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert sorted(registration._REGISTERED) == registering
