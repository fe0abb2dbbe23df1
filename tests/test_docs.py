"""The README's and docs' Python blocks run, and the docstring examples of the public modules.

A README block is code: a name that moves breaks this test, not a user. Blocks run at tiny
sizes (`steps_per_epoch` and `epochs` shrunk), each in a fresh namespace inside a temporary
folder that holds `my_images/` (generated scenes, as a user's folder would). A block that
opens with a comment saying it needs a running model server runs its imports only.
"""

import doctest
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The packages the blocks use: imported here so that BUILD's deps (derived from this file's
# imports) put them in the test's runfiles.
import tf_autoseg.data  # noqa: F401
import tf_autoseg.evaluation  # noqa: F401
import tf_autoseg.modeling  # noqa: F401
import tf_autoseg.serving  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "experiments").glob("*.md"))]  # fmt: skip
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
TINY = ((re.compile(r"steps_per_epoch=\d+"), "steps_per_epoch=2"),
        (re.compile(r"(?<!_)epochs=\d+"), "epochs=1"))  # fmt: skip
DOCTESTED = ("tf_autoseg.layers.masked_conv", "tf_autoseg.layers.masked_attention",
             "tf_autoseg.modeling.model", "tf_autoseg.modeling.losses",
             "tf_autoseg.evaluation.metrics", "tf_autoseg.evaluation.keras_metric")  # fmt: skip


def _blocks():
    found = []
    for document in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(document.read_text())):
            found.append(pytest.param(match.group(1), id=f"{document.name}-{number}"))
    return found


def _imports_only(code):
    return "\n".join(line for line in code.splitlines() if re.match(r"(from \S+ )?import ", line))


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A working folder with `my_images/`: 6 generated 96x128 scenes, one named street.jpg."""
    from tf_autoseg.datasets import synthetic

    images = synthetic.scenes(6, 128, 3, seed=3)[0][:, :96]
    folder = tmp_path / "my_images"
    folder.mkdir()
    for k, image in enumerate(images):
        name = "street.jpg" if k == 0 else f"scene{k}.png"
        Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8)).save(folder / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_documents_have_python_blocks():
    assert len(_blocks()) >= 3


@pytest.mark.parametrize("code", _blocks())
def test_python_block_runs(code, user_folder):
    if re.match(r"#.*model server", code):
        code = _imports_only(code)
    for pattern, tiny in TINY:
        code = pattern.sub(tiny, code)
    exec(compile(code, "<readme block>", "exec"), {"__name__": "readme_block"})


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    """Every `>>>` example of the module runs and prints what it shows."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted >= 2


@pytest.fixture(scope="module")
def training_block_output(tmp_path_factory):
    """What the README's "Training from Python" block prints, run as a user runs it: a fresh
    interpreter, TensorFlow's log level not set, at tiny sizes."""
    import os
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    start = text.index("### Training from Python")
    code = BLOCK.search(text, start).group(1)
    for pattern, tiny in TINY:
        code = pattern.sub(tiny, code)
    folder = tmp_path_factory.mktemp("training_block")
    (folder / "block.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "block.py"], cwd=folder, capture_output=True, text=True, timeout=600,
        env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_the_training_block_prints_no_error_line_that_is_no_failure(training_block_output):
    # cuInit on a machine without a GPU, Grappler's "remapper failed" in evaluate: harmless,
    # but read as failures.
    for alarm in ("cuInit", "remapper failed", "E0000"):
        assert alarm not in training_block_output, training_block_output[-3000:]


def test_the_training_block_prints_no_keras_warning_nor_empty_label_scores(training_block_output):
    assert "`shuffle=True` was passed" not in training_block_output  # the block passes none
    # The label metrics update on labelled batches only: at training steps they read 0.
    assert "matched_mean_iou: 0.0000e+00" not in training_block_output
