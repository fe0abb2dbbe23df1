"""The one loader: a run directory, a `.keras` file and a SavedModel give the same labels, and
evaluate, segment, export and the README figure load through it."""

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_autoseg import AutoSegModel
from tf_autoseg.modeling.model import cluster_ids
from tf_autoseg.serving import export
from tf_autoseg.serving import loading
from tf_autoseg.serving import paths

ROOT = Path(__file__).resolve().parents[2]
# Labels are compared where the top two probabilities differ by more than this (elsewhere
# float rounding may break the tie either way).
TIE = 1e-5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, run directory, export base folder) of a tiny untrained model."""
    folder = tmp_path_factory.mktemp("loading")
    keras.utils.set_random_seed(3)
    model = AutoSegModel(4, (16, 16, 3), width=8, stride=2, ar_blocks=1, input_downsample=2)
    run_dir = folder / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    export.export_model(run_dir, "tiny", folder / "saved")
    return model, run_dir, folder / "saved" / "tiny"


def _clear(probabilities):
    top = np.sort(np.asarray(probabilities), axis=-1)[..., -2:]
    return top[..., 1] - top[..., 0] > TIE


def test_every_kind_of_model_path_loads_and_labels_alike(saved):
    model, run_dir, base = saved
    images = np.random.default_rng(0).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    probabilities = model(images).numpy()
    expected = model.predict_labels(images).numpy()
    clear = _clear(probabilities)
    sources = {
        "run directory": run_dir,
        "run directory (str)": str(run_dir),
        ".keras file": run_dir / "model.keras",
        "SavedModel version": base / "1",
        "SavedModel base": base,
    }
    for kind, source in sources.items():
        loaded = loading.load(source)
        assert loaded.num_classes == 4 and loaded.image_shape[-1] == 3, kind
        assert loaded.overclustering is None, kind
        np.testing.assert_allclose(loaded(images).numpy(), probabilities, atol=1e-5)
        labels = loaded.cluster_labels(images, batch_size=2, heads=("main",))["main"].numpy()
        np.testing.assert_array_equal(labels[clear], expected[clear], err_msg=kind)
        floats = loaded(images.astype(np.float32) / 255.0).numpy()  # serving_float for an export
        np.testing.assert_allclose(floats, probabilities, atol=1e-5, err_msg=kind)
    assert isinstance(loading.load(run_dir), AutoSegModel)
    assert isinstance(loading.load(base), loading.SavedModelSegmenter)
    assert loading.load(model) is model


def test_the_newest_version_of_an_export_is_taken(saved, tmp_path):
    _, run_dir, base = saved
    assert paths.resolve(base) == (paths.SAVED_MODEL, base / "1")
    second = export.export_model(run_dir, "two", tmp_path)
    export.export_model(run_dir, "two", tmp_path)
    assert second == tmp_path / "two" / "1"
    assert paths.resolve(tmp_path / "two") == (paths.SAVED_MODEL, tmp_path / "two" / "2")
    assert paths.versions(tmp_path / "two") == [1, 2]


def test_labels_are_the_argmax_of_the_probabilities():
    probabilities = tf.constant([[[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]])
    labels = cluster_ids(probabilities)
    assert labels.dtype == tf.int32
    np.testing.assert_array_equal(labels.numpy(), [[1, 0]])


def test_bad_model_paths_are_named(saved, tmp_path):
    _, _, base = saved
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "weights.h5").write_bytes(b"")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(FileNotFoundError, match="empty_run' holds no model.keras"):
        loading.load(tmp_path / "empty_run")
    with pytest.raises(FileNotFoundError, match="missing.keras' does not exist"):
        loading.load(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="weights.h5' is not a .keras file"):
        loading.load(tmp_path / "weights.h5")
    with pytest.raises(ValueError, match="broken.keras' cannot be loaded"):
        loading.load(tmp_path / "broken.keras")
    with pytest.raises(ValueError, match="must be an AutoSegModel"):
        loading.load(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="is a SavedModel, already an export"):
        loading.load(base, saved_model=False)
    with pytest.raises(ValueError, match="only the main head"):
        loading.load(base).cluster_labels(np.zeros((1, 8, 8, 3), np.uint8), heads=("main", "x"))


# The modules that load a model, and the loaders they must not call themselves.
LOADERS = ("tf_autoseg/cli/evaluate.py", "tf_autoseg/cli/segment.py", "tf_autoseg/cli/export.py",
           "benchmarks/example_figure.py")  # fmt: skip
OWN_LOADERS = ("load_model", "load_checkpoint", "saved_model.load", "argmax", "decode_")


def _calls(path):
    calls = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func))
    return calls


@pytest.mark.parametrize("path", LOADERS)
def test_programs_load_read_and_label_through_the_one_owner(path):
    calls = _calls(path)
    assert "loading.load" in calls or "paths.resolve" in calls, sorted(calls)
    own = [call for call in calls if any(name in call for name in OWN_LOADERS)]
    assert own == [], f"{path} loads, decodes or labels by itself: {own}"


def test_export_loads_through_the_loader(saved, tmp_path, monkeypatch):
    _, run_dir, _ = saved
    seen = []
    real = loading.load

    def spy(source, *args, **kwargs):
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(loading, "load", spy)
    export.export_model(run_dir, "spied", tmp_path)
    assert seen == [run_dir]
