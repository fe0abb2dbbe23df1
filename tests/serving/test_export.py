"""SavedModel export: the exported signatures without tf_autoseg, stock ops, versions, config."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tf_autoseg import AutoSegModel
from tf_autoseg.serving import export

ISOLATED = Path(__file__).resolve().parents[1] / "support" / "isolated_saved_model.py"
ROOT = ISOLATED.parents[2]
SIZES = [(17, 23), (32, 32), (9, 40)]
# Labels are compared where the top two probabilities differ by more than this
# (elsewhere float rounding may break the tie either way).
TIE = 1e-5


def _tiny_model():
    return AutoSegModel.variant(
        "F2",
        3,
        (16, 16, 3),
        width=8,
        attention_heads=2,
        stride=2,
        ar_blocks=2,
        attention_blocks=(1,),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_model()
    base = tmp_path_factory.mktemp("saved_models")
    return model, export.export_model(model, "tiny", base)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return env


def _images(size, seed):
    return np.random.default_rng(seed).integers(0, 256, (2, *size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def isolated(exported, tmp_path_factory):
    """Runs tests/support/isolated_saved_model.py once; returns (report, outputs, inputs)."""
    _, path = exported
    work = tmp_path_factory.mktemp("isolated")
    inputs = {}
    for i, size in enumerate(SIZES):
        inputs[f"serving_default/{i}"] = _images(size, i)
        inputs[f"serving_float/{i}"] = _images(size, 10 + i).astype(np.float32) / 255.0
    inputs["bad/float"] = np.zeros((1, 8, 8, 3), np.float32)
    inputs["bad/rank3"] = np.zeros((8, 8, 3), np.uint8)
    inputs["bad/rank5"] = np.zeros((1, 1, 8, 8, 3), np.uint8)
    inputs["bad/channels"] = np.zeros((1, 8, 8, 4), np.uint8)
    inputs["bad/empty"] = np.zeros((0, 8, 8, 3), np.uint8)
    np.savez(work / "inputs.npz", **inputs)
    command = [sys.executable, "-I", str(ISOLATED), str(path), str(work / "inputs.npz")]
    command += [str(work / "out"), str(ROOT)]
    result = subprocess.run(
        command, cwd=work, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((work / "out.json").read_text())
    with np.load(work / "out.npz") as outputs:
        return report, dict(outputs), inputs


def test_tf_autoseg_cannot_be_imported_where_the_export_is_loaded(isolated):
    report, _, _ = isolated
    assert report["tf_autoseg_import_error"], "the isolated process imported tf_autoseg"
    assert "No module named 'tf_autoseg'" in report["tf_autoseg_import_error"]
    assert not report["tf_autoseg_loaded"]
    assert {"serving_default", "serving_float"} <= set(report["signatures"])


@pytest.mark.parametrize("signature", ["serving_default", "serving_float"])
@pytest.mark.parametrize("case", range(len(SIZES)))
def test_loaded_signature_equals_the_model_at_any_size(exported, isolated, signature, case):
    model, _ = exported
    _, outputs, inputs = isolated
    images = inputs[f"{signature}/{case}"]
    expected = model(images).numpy()
    labels = outputs[f"{signature}/{case}/labels"]
    probabilities = outputs[f"{signature}/{case}/probabilities"]
    assert labels.dtype == np.int32 and labels.shape == images.shape[:3]
    assert probabilities.dtype == np.float32 and probabilities.shape == (*images.shape[:3], 3)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    top2 = np.sort(expected, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > TIE
    assert clear.mean() > 0.9, "too many ties to compare labels"
    np.testing.assert_array_equal(labels[clear], expected.argmax(-1)[clear])


@pytest.mark.parametrize(
    "case,match",
    [
        ("float", "expected to be a uint8 tensor but is a float tensor"),
        ("rank3", re.escape("Shape of tensor images [8,8,3] is not compatible with expected")),
        ("rank5", re.escape("images [1,1,8,8,3] is not compatible with expected shape [?,?,?,3]")),
        ("channels", re.escape("images [1,8,8,4] is not compatible with expected shape [?,?,?,3]")),
        ("empty", "`images` is an empty batch"),
    ],
)
def test_signature_rejects_bad_images_with_a_clear_error(isolated, case, match):
    report, _, _ = isolated
    error = report["errors"][case]
    assert error is not None, f"{case} images were accepted"
    assert error.startswith("InvalidArgumentError") and re.search(match, error), error


def test_exported_graphs_use_only_stock_tensorflow_ops(isolated):
    report, _, _ = isolated
    ops = set(report["ops"])
    assert {"Conv2D", "Softmax", "ResizeBilinear", "ArgMax", "EnsureShape", "Einsum"} <= ops
    assert report["unregistered_ops"] == [], report["unregistered_ops"]
    assert report["called_functions"] == []


def _saved_model_cli():
    cli = Path(sys.executable).with_name("saved_model_cli")
    if cli.exists():
        return [str(cli)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_lists_both_signatures(exported):
    _, path = exported
    command = [*_saved_model_cli(), "show", "--all", "--dir", str(path)]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = dict(
        re.findall(r"signature_def\['(\w+)'\]:\n(.*?)Method name is", result.stdout, re.S)
    )
    for name, dtype in [("serving_default", "DT_UINT8"), ("serving_float", "DT_FLOAT")]:
        block = re.sub(r"\s+", " ", blocks[name])
        assert f"inputs['images'] tensor_info: dtype: {dtype} shape: (-1, -1, -1, 3)" in block
        assert "outputs['labels'] tensor_info: dtype: DT_INT32 shape: (-1, -1, -1)" in block
        assert (
            "outputs['probabilities'] tensor_info: dtype: DT_FLOAT shape: (-1, -1, -1, 3)" in block
        )


def _config(base):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((base / "models.config").read_text(), config)
    return {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}


def test_exports_take_the_next_version_and_are_listed_in_models_config(tmp_path):
    model = _tiny_model()
    first = export.export_model(model, "seg", tmp_path)
    second = export.export_model(model, "seg", tmp_path)
    assert (first, second) == (tmp_path / "seg" / "1", tmp_path / "seg" / "2")
    assert (second / "saved_model.pb").is_file() and (second / "variables").is_dir()
    export.export_model(model, "other", tmp_path, serving_root=None)
    assert _config(tmp_path) == {
        "seg": ("/models/seg", "tensorflow"),
        "other": (str((tmp_path / "other").resolve()), "tensorflow"),
    }
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["1", "2"]
    umask = os.umask(0)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o777 & ~umask, "readable by the server's user"


def test_existing_versions_are_never_overwritten(tmp_path):
    (tmp_path / "seg" / "3").mkdir(parents=True)
    (tmp_path / "seg" / "3" / "keep").write_text("old")
    (tmp_path / "seg" / "notes").mkdir()
    path = export.export_model(_tiny_model(), "seg", tmp_path)
    assert path.name == "4"
    assert (tmp_path / "seg" / "3" / "keep").read_text() == "old"


def test_failed_export_leaves_no_version_no_temp_folder_and_the_config(tmp_path, monkeypatch):
    model = _tiny_model()
    export.export_model(model, "seg", tmp_path)
    config_before = (tmp_path / "models.config").read_text()

    def failing_save(obj, export_dir, *args, **kwargs):
        Path(export_dir, "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_model(model, "seg", tmp_path)
    with pytest.raises(OSError, match="disk full"):
        export.export_model(model, "new", tmp_path)
    assert [p.name for p in (tmp_path / "seg").iterdir()] == ["1"]
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "models.config").read_text() == config_before


def test_a_broken_models_config_is_named_before_anything_is_written(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="models.config' is not a text-format"):
        export.export_model(_tiny_model(), "seg", tmp_path)
    assert not (tmp_path / "seg").exists()


def test_the_next_export_removes_what_a_killed_one_left(tmp_path):
    model = _tiny_model()
    seg = tmp_path / "seg"
    (seg / f"{export.TEMP_PREFIX}{'0' * 32}").mkdir(parents=True)  # killed before writing
    half = seg / f"{export.TEMP_PREFIX}{'1' * 32}"
    (half / "variables").mkdir(parents=True)
    (half / "saved_model.pb").write_bytes(b"\x08")  # killed while writing
    (tmp_path / f".{export.CONFIG_FILE}.{'2' * 32}").write_text("model_config_list {")
    assert export.export_model(model, "seg", tmp_path) == seg / "1"
    assert sorted(p.name for p in seg.iterdir()) == ["1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config", "seg"]


def test_a_running_exports_folder_is_never_taken_for_a_leftover(tmp_path):
    import threading

    model = _tiny_model()
    seg = tmp_path / "seg"
    running = seg / f"{export.TEMP_PREFIX}{'3' * 32}"
    running.mkdir(parents=True)
    results = []
    with export._locked(seg) as locked:  # what a running export of "seg" holds
        assert locked
        worker = threading.Thread(
            target=lambda: results.append(export.export_model(model, "seg", tmp_path))
        )
        worker.start()
        worker.join(timeout=5)
        assert worker.is_alive() and running.is_dir(), "the second export did not wait"
    worker.join(timeout=300)
    assert results == [seg / "1"] and not running.exists()


def test_export_model_takes_a_run_directory_or_a_keras_file_but_not_a_saved_model(exported):
    model, target = exported
    with pytest.raises(ValueError, match="is a SavedModel, already an export"):
        export.export_model(target, "again", target.parent.parent)
    with pytest.raises(ValueError, match="must be an AutoSegModel"):
        export.export_model(keras.Sequential([keras.layers.Dense(1)]), "seq", target.parent)


def test_bad_names_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"`name` must match .*name='1/x'"):
        export.export_model(_tiny_model(), "1/x", tmp_path)


def _cli(*args, cwd):
    env = dict(_env(), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "tf_autoseg.export", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_command_line_exports_a_run_directory_and_names_bad_flags(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _tiny_model().save(run_dir / "model.keras")
    result = _cli("--model", str(run_dir), "--name", "cli", "--output_dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(os.path.join("out", "cli", "1"))
    assert "export.py" in result.stderr and "Exported" in result.stderr  # its own INFO line
    for chatter in ("signature_serialization.py", "fingerprinting_utils.py", "cudart_stub"):
        assert chatter not in result.stderr, "TensorFlow's INFO lines are shown"
    assert _config(tmp_path / "out") == {"cli": ("/models/cli", "tensorflow")}
    bad = _cli("--model", str(tmp_path / "nowhere"), "--name", "cli", cwd=tmp_path)
    assert bad.returncode != 0
    assert "--model" in bad.stderr and "nowhere' does not exist" in bad.stderr
    assert not (tmp_path / "saved_models").exists()


# Clusters 0 and 2 become class 1 ("field"), cluster 1 class 0 ("sky"); nothing ignored, so
# every pixel's class follows from its cluster.
NAMED = {
    "head": "main",
    "num_clusters": 3,
    "classes": [
        {"id": 1, "name": "field", "colour": "#3cb44b", "clusters": [0, 2]},
        {"id": 0, "name": "sky", "colour": "#0082c8", "clusters": [1]},
    ],
}


def test_a_run_with_named_classes_exports_class_ids_readable_without_tf_autoseg(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = _tiny_model()
    model.save(run_dir / "model.keras")
    (run_dir / "classes.json").write_text(
        json.dumps({**NAMED, "classes": [{"name": "x", "clusters": [0, 1, 2, 7]}]})
    )
    bad = _cli("--model", str(run_dir), "--name", "named", "--output_dir", "out", cwd=tmp_path)
    assert bad.returncode == 2 and "names cluster 7, which the model lacks" in bad.stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written
    (run_dir / "classes.json").write_text(json.dumps(NAMED))
    result = _cli("--model", str(run_dir), "--name", "named", "--output_dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    version = tmp_path / "out" / "named" / "1"
    work = tmp_path / "isolated"
    work.mkdir()
    images = _images((24, 20), 5)
    np.savez(work / "inputs.npz", **{"serving_default/0": images})
    command = [sys.executable, "-I", str(ISOLATED), str(version), str(work / "inputs.npz")]
    command += [str(work / "out"), str(ROOT)]
    ran = subprocess.run(command, cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads((work / "out.json").read_text())
    assert report["tf_autoseg_import_error"] and not report["tf_autoseg_loaded"]
    with np.load(work / "out.npz") as outputs:
        labels = outputs["serving_default/0/labels"]
        clusters = outputs["serving_default/0/clusters"]
    expected = keras.saving.load_model(run_dir / "model.keras", compile=False)(images).numpy()
    top2 = np.sort(expected, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > TIE
    np.testing.assert_array_equal(clusters[clear], expected.argmax(-1)[clear])
    np.testing.assert_array_equal(labels, np.array([1, 0, 1])[clusters])  # class ids
    assert len(np.unique(clusters)) >= 2, "the image should show more than one cluster"
    # The names and colours travel with the model: a variable, and a file beside the graph.
    for text in (report["classes_json"], (version / "assets.extra" / "classes.json").read_text()):
        carried = json.loads(text)
        assert [(c["id"], c["name"], c["clusters"]) for c in carried["classes"]] == [
            (1, "field", [0, 2]),
            (0, "sky", [1]),
        ]
