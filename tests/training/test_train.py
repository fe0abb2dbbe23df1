"""The training program end to end: quickstart, resume after SIGKILL, reruns, flagfiles, bad flags,
segment, evaluate."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_autoseg import AutoSegModel
from tf_autoseg.serving import paths
from tf_autoseg.serving import segment
from tf_autoseg.training import checkpoints
from tf_autoseg.training import runs
from tf_autoseg.training.config import upgrade

ROOT = Path(__file__).resolve().parents[2]
QUICK = [
    "--flagfile=experiments/quickstart.cfg",
    "--synthetic_images=16",
    "--synthetic_size=32",
    "--width=8",
    "--ar_blocks=1",
    "--batch_size=4",
    "--summary_images=2",
]


def _terminal_signals():
    # As from a terminal: a suite started in the background (`pytest &` in a script) ignores
    # SIGINT, and its children would inherit that, so the Ctrl-C tests would test nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train(args, run_dir, export_dir, wait=True, extra_env=None):
    command = [sys.executable, "-m", "tf_autoseg.train", *args,
               f"--run_dir={run_dir}", f"--export_dir={export_dir}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_terminal_signals,
    )  # fmt: skip
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def test_quickstart_runs_end_to_end_and_every_artefact_loads(tmp_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "saved"
    code, output = _train([*QUICK, "--steps=20", "--checkpoint_every=10"], run_dir, export_dir)
    assert code == 0, output[-4000:]
    flags_used = json.loads((run_dir / "flags.json").read_text())
    assert flags_used["dataset"] == "synthetic" and flags_used["steps"] == 20
    assert [step for step, _ in checkpoints.checkpoints(run_dir)] == [10, 20]
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "TensorBoard logs"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20
    # A short summary for a person, the figures exactly as metrics.json holds them.
    summary = output[output.index("Trained to step 20") :].splitlines()
    assert len(summary) == 4 and max(len(line) for line in summary) < 200, summary
    assert f"loss {metrics['loss']:.4f}" in summary[0]
    assert f"mIoU {metrics['evaluation']['main']['mean_iou']:.3f}" in summary[1]
    assert metrics["export"] in summary[2] and str(run_dir / "metrics.json") in summary[3]
    model = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(model, AutoSegModel) and int(model.optimizer.iterations) == 20
    export = Path(metrics["export"])
    assert export == export_dir / "quickstart" / "1"
    served = tf.saved_model.load(str(export)).signatures["serving_default"]
    image = np.random.default_rng(0).integers(0, 255, (1, 40, 36, 3), dtype=np.uint8)
    labels = served(images=tf.constant(image))["labels"].numpy()
    np.testing.assert_array_equal(labels, model.predict_labels(image).numpy())
    # segment, from the SavedModel and from the run directory.
    tf.io.write_file(str(tmp_path / "input.png"), tf.io.encode_png(image[0]))
    for source in (export, run_dir):
        out = tmp_path / f"seg-{source.name}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tf_autoseg.segment",
                f"--model={source}",
                f"--input={tmp_path / 'input.png'}",
                f"--output={out}",
            ],  # fmt: skip
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        written = tf.io.decode_png(tf.io.read_file(str(out / "input_labels.png"))).numpy()[..., 0]
        np.testing.assert_array_equal(written, labels[0])
        overlay = tf.io.decode_png(tf.io.read_file(str(out / "input_overlay.png")))
        assert overlay.shape == (40, 36, 3)
    # evaluate, from the run directory and from the SavedModel: the scores training recorded.
    recorded = metrics["evaluation"]["main"]
    for source in (run_dir, export):
        result = subprocess.run(
            [sys.executable, "-m", "tf_autoseg.evaluate", *QUICK, f"--model={source}"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        scores = json.loads(result.stdout.strip().splitlines()[-1])["main"]
        for name in ("pixel_accuracy", "mean_iou"):
            assert scores[name] == pytest.approx(recorded[name], abs=1e-6), (source, name)


def _wait_for(path, process, timeout=300):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-4000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_mid_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    args = [*QUICK, "--steps=40", "--checkpoint_every=10", "--deterministic", "--noexport"]
    killed_dir = tmp_path / "killed"
    process = _train(args, killed_dir, tmp_path / "saved", wait=False)
    _wait_for(checkpoints.checkpoint_path(killed_dir, 20), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survivors = checkpoints.checkpoints(killed_dir)
    assert survivors and survivors[-1][0] in (20, 30)
    for _, path in survivors:
        checkpoints.load_checkpoint(path)  # complete and loadable
    resumed_from = survivors[-1][0]
    code, output = _train(args, killed_dir, tmp_path / "saved")
    assert code == 0, output[-4000:]
    assert f"Epoch {resumed_from // 10 + 1}/4" in output and "Epoch 1/4" not in output
    code, output = _train(args, tmp_path / "straight", tmp_path / "saved")
    assert code == 0, output[-4000:]
    resumed = keras.saving.load_model(killed_dir / "model.keras")
    straight = keras.saving.load_model(tmp_path / "straight" / "model.keras")
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 40
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not list(killed_dir.rglob("*.tmp*")), "no temporary file is left behind"
    assert (killed_dir / "metrics.json").stat().st_mode & 0o044, "written files are not private"


def test_corrupt_checkpoint_is_a_clear_error_not_a_silent_restart(tmp_path):
    run_dir = tmp_path / "run"
    code, output = _train(
        [*QUICK, "--steps=10", "--checkpoint_every=10", "--noexport"], run_dir, tmp_path
    )
    assert code == 0, output[-3000:]
    checkpoints.checkpoint_path(run_dir, 10).write_bytes(b"not a keras file")
    code, output = _train(
        [*QUICK, "--steps=20", "--checkpoint_every=10", "--noexport"], run_dir, tmp_path
    )
    assert code == 2
    assert "ckpt-00000010.keras is corrupt or incompatible" in output
    assert "Traceback" not in output


def test_resuming_with_other_training_flags_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    code, output = _train(
        [*QUICK, "--steps=10", "--checkpoint_every=10", "--noexport"], run_dir, tmp_path
    )
    assert code == 0, output[-3000:]
    code, output = _train([*QUICK, "--steps=10", "--checkpoint_every=10", "--noexport",
                           "--learning_rate=0.5"], run_dir, tmp_path)  # fmt: skip
    assert code == 2 and "--learning_rate was 0.001, now 0.5" in output


def test_runs_recorded_with_the_old_not_given_values_resume_with_none(tmp_path):
    # Before 2026-12-04 "not given" was --overclustering=0, --over_entropy_weight=-1,
    # --ar_blocks=-1, --front_blocks=-1 in flags.json; these flags now default to None.
    old = {"overclustering": 0, "over_entropy_weight": -1.0, "ar_blocks": -1, "front_blocks": -1}
    (tmp_path / "flags.json").write_text(json.dumps({**old, "steps": 10}))
    now = {name: None for name in old}
    runs.check_same_flags(tmp_path / "flags.json", {**now, "steps": 10})
    with pytest.raises(ValueError, match="--ar_blocks was None, now 2"):
        runs.check_same_flags(tmp_path / "flags.json", {**now, "ar_blocks": 2, "steps": 10})
    assert upgrade({**old, "overclustering": 25}) == {**now, "overclustering": 25}


def test_runs_recorded_with_the_old_flag_names_resume_and_evaluate(tmp_path):
    # Before 2026-12-05 --num_classes was --classes and --tile was --crop: a run recorded then
    # resumes under the new names (and refuses a changed value by its new name).
    (tmp_path / "flags.json").write_text(json.dumps({"classes": 5, "crop": 64, "steps": 10}))
    now = {"num_classes": 5, "tile": 64, "steps": 10}
    runs.check_same_flags(tmp_path / "flags.json", now)
    with pytest.raises(ValueError, match="--tile was 64, now 32"):
        runs.check_same_flags(tmp_path / "flags.json", {**now, "tile": 32})
    from tf_autoseg.cli import evaluate

    assert evaluate.recorded_flags(tmp_path) == now


def test_each_part_is_a_data_section_named_as_the_dataset_arguments(tmp_path):
    from tf_autoseg.training import sections
    from tf_autoseg.training.config import RunConfig

    flags = RunConfig(train_tiles=["1", "2"], eval_tiles=["7"], train_sequences=["0016E5"],
                      eval_sequences=["0001TP"], data_service="grpc://h:1", run_dir="r")  # fmt: skip
    run = sections.experiment_config(flags)
    assert (run.train_data.part, run.train_data.tiles, run.train_data.sequences) == (
        "train",
        (1, 2),
        ("0016E5",),
    )
    assert (run.eval_data.part, run.eval_data.tiles, run.eval_data.sequences) == (
        "eval",
        (7,),
        ("0001TP",),
    )
    assert run.train_data.data_service == "grpc://h:1" and run.eval_data.data_service is None
    assert run.model.network.num_classes == 3 and run.output.run_dir == "r" and run.flags is flags
    assert not sections.experiment_config(flags.replace(variant="random")).optimisation.train
    # A folder has no evaluation part of its own: it is scored on its training part.
    folder = flags.replace(dataset="folder", data_dir=str(tmp_path), masks_dir=str(tmp_path))
    assert sections.data_config(folder, "eval").part == "train"


def test_evaluation_builds_only_the_labelled_parts_it_scores(monkeypatch):
    from tf_autoseg.training import experiment
    from tf_autoseg.training import inputs
    from tf_autoseg.training import sections
    from tf_autoseg.training.config import RunConfig

    built = []

    def build(data, labels=False, **ignored):
        built.append((data.part, labels))
        return data.part

    monkeypatch.setattr(inputs, "build", build)
    run = sections.experiment_config(RunConfig(run_dir="r"))
    sets = experiment.evaluation_sets(run.evaluation, run.eval_data, run.train_data)
    assert sets == ("eval", None) and built == [("eval", True)]  # never the training pipeline
    holdout = sections.evaluation_config(RunConfig(eval_mode="holdout"))
    experiment.evaluation_sets(holdout, run.eval_data, run.train_data)
    assert built[1:] == [("eval", True), ("train", True)]  # the mapping's labelled training part


def test_the_old_flag_names_are_aliases_on_command_lines_and_in_flagfiles(tmp_path):
    from absl import flags

    from tf_autoseg.cli import run_flags
    from tf_autoseg.cli import train  # noqa: F401 - defines the training flags, as the program

    flagfile = tmp_path / "old.cfg"
    flagfile.write_text("--classes=5\n--crop=48\n")
    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile={flagfile}", "--run_dir=x"])
        parsed = run_flags.run_config()
        assert (parsed.num_classes, parsed.tile) == (5, 48)
        assert flags.FLAGS["num_classes"].present  # evaluate: "given on the command line"
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", "--crop=40", "--run_dir=x"])
        assert run_flags.run_config().tile == 40
    finally:
        flags.FLAGS.unparse_flags()


def test_a_flag_added_later_resumes_older_runs_only_at_its_old_behaviour(tmp_path):
    from tf_autoseg.training.config import ADDED

    saved = tmp_path / "flags.json"
    saved.write_text(json.dumps({"dataset": "dubai", "steps": 10}))  # recorded before --downsample
    runs.check_same_flags(saved, {"dataset": "dubai", "downsample": 1}, added=ADDED)
    with pytest.raises(ValueError, match="--downsample was 1, now 2"):
        runs.check_same_flags(saved, {"dataset": "dubai", "downsample": 2}, added=ADDED)
    with pytest.raises(ValueError, match="--downsample was None, now 1"):
        runs.check_same_flags(saved, {"dataset": "dubai", "downsample": 1})


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--steps=25", "--checkpoint_every=10"],
            "`checkpoint_every` must divide `steps`. Received: checkpoint_every=10, steps=25",
        ),
        (["--num_classes=9"], "for dataset='synthetic'. Received: num_classes=9"),
        (["--overclustering=2"], "Received: overclustering=2, num_classes=3"),
        (
            ["--dataset=potsdam", "--data_dir=/nonexistent/potsdam"],
            "`data_dir` is no directory. Received: data_dir='/nonexistent/potsdam'",
        ),
        (["--num_orderings=12"], "Received: num_orderings=12"),
        (["--stride=3"], "`stride` must be one of (1, 2, 4). Received: stride=3"),
        (
            ["--attention_blocks=4"],
            "`attention_blocks` must be an int in [1, 1]. Received: attention_blocks=4",
        ),
        (["--attention_blocks=a"], "--attention_blocks=['a']: a comma-separated list"),
        (["--dropout=1.5"], "`dropout` must be a number in [0, 1). Received: dropout=1.5"),
        (["--width=0"], "`width` must be a positive int. Received: width=0"),
        (["--ar_blocks=-3"], "`ar_blocks` must be a non-negative int. Received: ar_blocks=-3"),
        (
            ["--downsample=2"],
            "`downsample` applies to folder, dubai, camvid, not synthetic. Received: downsample=2",
        ),
        (
            ["--data_service=localhost:5050"],
            "--data_service must be grpc://host:port (the dispatcher). Received: 'localhost:5050'",
        ),
        (
            ["--data_service=grpc://h:1", "--pipeline=memory"],
            "`data_service` needs pipeline='stream' or 'auto'",
        ),
        (["--prepared_dir=/nonexistent"], "Received: prepared_dir='/nonexistent'"),
        (
            ["--labels_from=overclustering"],
            "`labels_from='overclustering'` needs an `overclustering` head",
        ),
        (["--downsample=0"], "`downsample` must be a positive int. Received: downsample=0"),
        (
            ["--dataset=camvid", "--data_dir=.", "--train_sequences=0016E6"],
            "`sequences` must be one of ('0001TP', '0006R0', '0016E5')",
        ),
        (["--eval_tiles=a"], "--eval_tiles=['a']: a comma-separated list of tile numbers"),
        (["--num_orderings=3"], "`num_orderings` must be 2, 4, 8 or 16"),
        (["--num_orderings=1"], "Received: num_orderings=1"),
        (["--num_orderings=16"], "(16 needs ordering_types='both'). Received: num_orderings=16"),
        (["--minutes=0"], "`minutes` must be a positive number. Received: minutes=0"),
    ],
)
def test_bad_flags_fail_before_any_work(tmp_path, args, message):
    # In this process, as the program runs them (tests/cli/test_commands.py checks that such an
    # error is one line and exit status 2 in the program itself; the first case does here).
    from absl import flags

    from tf_autoseg.cli import commands

    run_dir = tmp_path / "run"
    paths = [f"--run_dir={run_dir}", f"--export_dir={tmp_path / 'saved'}"]
    with pytest.raises((ValueError, flags.Error)) as caught:
        _main([*QUICK, *args, *paths])
    text = commands.one_line(caught.value).removeprefix("ERROR:: ")
    assert message in text, text
    assert not run_dir.exists() and not (tmp_path / "saved").exists()


def test_a_bad_flag_is_one_line_and_exit_2_in_the_program(tmp_path):
    code, output = _train([*QUICK, "--steps=25", "--checkpoint_every=10"], tmp_path / "run",
                          tmp_path / "saved")  # fmt: skip
    assert code == 2 and output == (
        "error: `checkpoint_every` must divide `steps`. Received: checkpoint_every=10, steps=25\n"
    )
    assert not (tmp_path / "run").exists()


def test_unwritable_output_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, output = _train(QUICK, blocker / "run", tmp_path / "saved")
    assert code == 2 and "cannot create or write" in output
    code, output = _train(QUICK, tmp_path / "run", blocker / "saved")
    assert code == 2 and "--export_dir" in output
    assert not (tmp_path / "run").exists()


FLAGFILES = sorted((ROOT / "experiments").glob("*.cfg"))
# The datasets whose flagfiles need data: conftest's fixtures (../shared/data's, else generated
# replicas in their layouts); the others (synthetic, folder) are generated here.
FIXTURES = {"potsdam": "potsdam_crops", "cocostuff": "cocostuff_mini", "dubai": "dubai_aerial",
            "camvid": "camvid_trainval"}  # fmt: skip


def test_the_experiments_folder_holds_the_flagfiles():
    assert len(FLAGFILES) > 20
    assert ROOT / "experiments" / "quickstart.cfg" in FLAGFILES


@pytest.mark.parametrize("path", FLAGFILES, ids=[p.stem for p in FLAGFILES])
def test_experiment_flagfile_parses_and_builds(tmp_path, path, request):
    from absl import flags

    from tf_autoseg.cli import run_flags
    from tf_autoseg.cli import train
    from tf_autoseg.training import experiment
    from tf_autoseg.training import inputs
    from tf_autoseg.training import sections

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile={path}", f"--run_dir={tmp_path / path.stem}"])
        recipe = run_flags.run_config().replace(export_dir=str(tmp_path / "saved"))
        if recipe.dataset in FIXTURES:  # real, else generated (conftest)
            data_dir = str(request.getfixturevalue(FIXTURES[recipe.dataset]))
            # 13 COCO images cannot pass IIC's curation: keep them all here.
            recipe = recipe.replace(data_dir=data_dir, min_side=0, min_target_share=0.0)
        if recipe.dataset == "folder":  # the user's own images: a few generated ones
            recipe = recipe.replace(data_dir=str(tmp_path / "images"))
            os.mkdir(recipe.data_dir)
            for i in range(recipe.batch_size // 4):
                pixels = np.random.default_rng(i).integers(0, 256, (2 * recipe.tile,) * 2 + (3,))
                Image.fromarray(pixels.astype(np.uint8)).save(f"{recipe.data_dir}/{i}.png")
        run = sections.experiment_config(recipe)  # every section checked
        train.check_outputs(run.output)
        # The training pipeline: the fixtures are too small for every held-out split.
        train_set = inputs.build(run.train_data)[0]
        images = next(iter(train_set.take(1)))
        assert images.dtype == tf.uint8 and images.shape[0] == recipe.batch_size
        shape = train_set.element_spec.shape[1:]
        model = experiment.build_model(run.model, shape, run.optimisation)
        assert model.num_classes == recipe.num_classes
    finally:
        flags.FLAGS.unparse_flags()
        os.chdir(cwd)


def test_segment_tiles_have_no_seams():
    keras.utils.set_random_seed(1)
    model = AutoSegModel(4, (32, 32, 3), width=8, stride=2, ar_blocks=1)
    image = np.random.default_rng(2).integers(0, 255, (112, 136, 3), dtype=np.uint8)
    predict = lambda batch: model(tf.constant(batch)).numpy()  # noqa: E731
    tiled = segment.segment_probabilities(predict, image, tile=64, overlap=16)
    assert tiled.shape == (112, 136, 4)
    # Tiles start at 0, 32, 64 (and the last, aligned); borders lie at 48, 80, ...
    for top, left in [(16, 16), (32, 48), (48, 64)]:
        crop = image[top : top + 64, left : left + 64]
        direct = predict(crop[None])[0]
        inner = (slice(16, 48), slice(16, 48))
        np.testing.assert_array_equal(
            tiled[top + 16 : top + 48, left + 16 : left + 48].argmax(-1), direct[inner].argmax(-1)
        )
        np.testing.assert_allclose(
            tiled[top + 16 : top + 48, left + 16 : left + 48], direct[inner], atol=1e-5
        )
    small = image[:40, :50]
    np.testing.assert_allclose(
        segment.segment_probabilities(predict, small, 64, 16), predict(small[None])[0]
    )


def test_segment_rejects_bad_inputs(tmp_path):
    from PIL import Image

    with pytest.raises(ValueError, match="--input=.*No image files"):
        segment.list_inputs(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot decode the image file .*broken.png"):
        segment.check_inputs([tmp_path / "broken.png"], 3)
    with pytest.raises(FileNotFoundError, match="holds no model.keras, no saved_model.pb"):
        paths.resolve(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="Expected a 4-band image .*b.png has 3 band"):
        segment.check_inputs([tmp_path / "b.png"], 4)
    with pytest.raises(ValueError, match="`tile` must be a multiple of 16"):
        segment.segment_probabilities(lambda x: x, np.zeros((8, 8, 3)), tile=50, overlap=8)


def test_random_variant_is_evaluated_and_exported_but_never_trained(tmp_path):
    run_dir = tmp_path / "run"
    args = [*QUICK, "--variant=random", "--steps=10", "--checkpoint_every=10"]
    code, output = _train(args, run_dir, tmp_path / "saved")
    assert code == 0, output[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 0 and "pixel_accuracy" in metrics["evaluation"]["main"]
    assert Path(metrics["export"]).is_dir()


def _main(args):
    """Runs the training program in this process, as `python -m tf_autoseg.train <args>` would
    (errors are raised rather than printed)."""
    from absl import flags

    from tf_autoseg.cli import train

    cwd = os.getcwd()
    os.chdir(ROOT)  # flagfiles name each other relative to the repository
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", "--verbosity=0", *args])  # INFO lines, as under app.run
        train.main(["train"])
    finally:
        flags.FLAGS.unparse_flags()
        os.chdir(cwd)


def test_a_dataset_registered_from_the_test_tree_trains_and_evaluates(tmp_path):
    from support import toy_dataset  # its module is all it needs: importing it registers "toy"

    _main([_tiny_flagfile(tmp_path), "--dataset=toy", "--num_classes=2", "--eval_mode=same",
           "--noexport"])  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 10
    assert metrics["dataset"]["train"]["num_examples"] == 24  # the toy's own part
    assert metrics["dataset"]["evaluation"]["class_names"] == ["dark", "bright"]
    assert 0 <= metrics["evaluation"]["main"]["mean_iou"] <= 1
    with pytest.raises(ValueError, match=r"one of \(2,\) for dataset='toy'. .*num_classes=3"):
        _main([_tiny_flagfile(tmp_path), "--dataset=toy", "--num_classes=3"])
    assert toy_dataset.NUM_CLASSES == (2,)


def _tiny_flagfile(tmp_path, steps=10):
    path = tmp_path / "tiny.cfg"
    lines = [f"--flagfile={ROOT / 'experiments' / 'quickstart.cfg'}", *QUICK[1:],
             f"--steps={steps}", "--checkpoint_every=10", f"--run_dir={tmp_path / 'run'}",
             f"--export_dir={tmp_path / 'saved'}"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return f"--flagfile={path}"


def _snapshot(*folders):
    return {
        path: path.read_bytes()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def absl_info(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    return caplog


def test_rerunning_a_finished_run_changes_nothing_and_says_so(tmp_path, absl_info):
    flagfile = _tiny_flagfile(tmp_path)
    _main([flagfile])
    before = _snapshot(tmp_path / "run", tmp_path / "saved")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["export"] == str(tmp_path / "saved" / "quickstart" / "1")
    absl_info.clear()
    _main([flagfile])
    assert _snapshot(tmp_path / "run", tmp_path / "saved") == before, "export or metrics rewritten"
    said = absl_info.text
    assert "is already finished at step 10 of 10" in said, said
    assert str(tmp_path / "run" / "model.keras") in said and metrics["export"] in said
    assert "python -m tf_autoseg.export" in said


def test_raising_steps_continues_a_run_and_removes_what_a_kill_left(tmp_path, absl_info):
    _main([_tiny_flagfile(tmp_path)])
    run_dir, saved = tmp_path / "run", tmp_path / "saved"
    # What SIGKILL leaves midway through a checkpoint, model or metrics write and an export.
    (run_dir / "checkpoints" / ".ckpt-00000020.keras.k3j4h5g6.tmp.keras").write_bytes(b"PK\x03")
    (run_dir / ".model.keras.a1b2c3d4.tmp.keras").write_bytes(b"")
    (run_dir / ".metrics.json.a1b2c3d4.tmp").write_text('{"steps": ')
    (saved / "quickstart" / f".export-{'0' * 32}").mkdir()
    (saved / "quickstart" / f".export-{'1' * 32}" / "variables").mkdir(parents=True)
    (saved / "quickstart" / f".export-{'1' * 32}" / "saved_model.pb").write_bytes(b"\x08")
    (saved / f".models.config.{'2' * 32}").write_text("model_config_list {")
    absl_info.clear()
    _main([_tiny_flagfile(tmp_path, steps=20)])
    assert "resuming at step 10 of 20" in absl_info.text, absl_info.text
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["export"] == str(saved / "quickstart" / "2")
    assert [step for step, _ in checkpoints.checkpoints(run_dir)] == [10, 20]
    hidden = [p for p in [*run_dir.rglob(".*"), *saved.rglob(".*")] if p.parent.name != "logs"]
    assert hidden == [], hidden
    assert sorted(p.name for p in (saved / "quickstart").iterdir()) == ["1", "2"]


def test_a_run_whose_clusters_were_named_exports_class_ids(tmp_path):
    _main([_tiny_flagfile(tmp_path)])
    run_dir, saved = tmp_path / "run", tmp_path / "saved"
    assert not (saved / "quickstart" / "1" / "assets.extra").exists()  # no mapping, as before
    mapping = {"classes": [{"name": "a", "clusters": [0, 2]}, {"name": "b", "clusters": [1]}]}
    (run_dir / "classes.json").write_text(json.dumps(mapping))
    _main([_tiny_flagfile(tmp_path, steps=20)])
    baked = json.loads((saved / "quickstart" / "2" / "assets.extra" / "classes.json").read_text())
    assert [(c["name"], c["clusters"]) for c in baked["classes"]] == [("a", [0, 2]), ("b", [1])]


_KILLER = """
import os, signal, sys
from absl import flags
from tf_autoseg import atomic
from tf_autoseg.serving import export
from tf_autoseg.cli import train
where = sys.argv.pop(1)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if where == "checkpoint":  # dies inside the second checkpoint's write, its file half written
    real = atomic.write
    def write(path, writer, suffix=""):
        if str(path).endswith("ckpt-00000020.keras"):
            return real(path, lambda tmp: (open(tmp, "wb").write(b"PK"), die()), suffix)
        return real(path, writer, suffix)
    atomic.write = write
else:  # dies inside the export, the SavedModel half written
    def write_archive(model, directory, classes=None):
        (directory / "saved_model.pb").write_bytes(b"\x08")
        die()
    export._write_archive = write_archive
flags.FLAGS(sys.argv)
train.main(["train"])
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["checkpoint", "export"])
def test_a_kill_during_a_checkpoint_or_an_export_leaves_nothing_after_the_rerun(tmp_path, where):
    run_dir, saved = tmp_path / "run", tmp_path / "saved"
    args = [*QUICK, "--steps=20", "--checkpoint_every=10", f"--run_dir={run_dir}",
            f"--export_dir={saved}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", _KILLER, where, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftovers = [*run_dir.rglob(".*.tmp*"), *saved.rglob(".export-*")]
    assert leftovers, "the kill left nothing to clean: it came at the wrong moment"
    assert not (run_dir / "metrics.json").exists()
    code, output = _train(args, run_dir, saved)
    assert code == 0, output[-3000:]
    assert not [*run_dir.rglob(".*.tmp*"), *saved.rglob(".export-*")]
    assert json.loads((run_dir / "metrics.json").read_text())["export"] == str(
        saved / "quickstart" / "1"
    )


def test_skipped_and_converted_files_are_named_in_metrics_and_the_log(tmp_path, absl_info):
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(data / "big.png")
    Image.new("RGB", (8, 8)).save(data / "small.png")
    Image.new("RGBA", (40, 40), (10, 10, 200, 128)).save(data / "rgba.png")
    _main(["--dataset=folder", f"--data_dir={data}", "--tile=16", "--num_classes=3", "--width=8",
           "--ar_blocks=1", "--batch_size=2", "--steps=2", "--checkpoint_every=2",
           "--summary_images=1", "--noexport", f"--run_dir={tmp_path / 'run'}"])  # fmt: skip
    train = json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"]["train"]
    assert train["skipped"] == {str(data / "small.png"): "8x8 is smaller than the 16x16 tile"}
    assert train["adjusted"] == {str(data / "rgba.png"): "alpha dropped"}
    said = absl_info.text
    assert f"skipped 1 file(s): {data / 'small.png'} (8x8 is smaller" in said, said
    assert f"converted 1 file(s): {data / 'rgba.png'} (alpha dropped)" in said, said


def test_errors_name_the_argument_a_flag_feeds(tmp_path):
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    Image.new("RGB", (32, 32)).save(data / "a.png")  # a colour mask given without --colours
    with pytest.raises(ValueError) as raised:
        _main(["--dataset=folder", f"--data_dir={data}", f"--masks_dir={data}", "--tile=16",
               "--width=8", "--steps=2", "--checkpoint_every=2", "--noexport",
               f"--run_dir={tmp_path / 'run'}"])  # fmt: skip
    message = str(raised.value)
    assert "`colours`" in message and "mask_format" not in message, message
    assert str(data / "a.png") in message


def _evaluate(*args):
    return subprocess.run(
        [sys.executable, "-m", "tf_autoseg.evaluate", *args], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_labels_from_features_fits_centres_that_the_export_serves(tmp_path, absl_info):
    _main([_tiny_flagfile(tmp_path), "--labels_from=features", "--refine_iterations=0"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labels_from"] == "features"
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    scale = float(model.centres.scale.numpy())
    assert scale > 0
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8))
    features = model.network.forward(images).features.numpy()
    centres = model.centres.centres.numpy()
    nearest = ((features[..., None, :] - centres) ** 2).sum(-1)
    expected = tf.image.resize(tf.nn.softmax(-nearest / scale), (32, 32))
    served = tf.saved_model.load(metrics["export"]).signatures["serving_default"](images=images)
    np.testing.assert_array_equal(served["labels"].numpy(), expected.numpy().argmax(-1))


def test_precision_auto_trains_in_the_policy_its_probe_timed_faster(tmp_path, absl_info):
    from tf_autoseg.training import precision

    timed = {}
    original = precision.probe

    def probe(*args, **kwargs):
        timed.update(original(*args, **kwargs, rounds=1))
        timed["batch_size"] = args[2]  # the run's own batch is timed
        return {k: v for k, v in timed.items() if k != "batch_size"}

    precision.probe = probe
    try:
        _main([_tiny_flagfile(tmp_path), "--precision=auto", "--steps=10"])
    finally:
        precision.probe = original
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert timed.pop("batch_size") == 4
    assert set(timed) == {"float32", "mixed_bfloat16"}
    assert metrics["precision"] == precision.choose(timed)
    assert metrics["precision_timings"] == pytest.approx(timed)
    assert "--precision=auto: " + metrics["precision"] in absl_info.text
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert (
        model.network.head.compute_dtype
        == keras.mixed_precision.Policy(metrics["precision"]).compute_dtype
    )


def test_evaluate_a_run_directory_alone_reads_its_data_flags(tmp_path):
    run_dir = tmp_path / "run"
    _main([*QUICK, "--num_classes=4", "--steps=10", "--checkpoint_every=10", "--noexport",
           f"--run_dir={run_dir}"])  # fmt: skip
    result = _evaluate(f"--model={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])["main"]
    recorded = json.loads((run_dir / "metrics.json").read_text())["evaluation"]["main"]
    assert scores["pixel_accuracy"] == pytest.approx(recorded["pixel_accuracy"])
    wrong = _evaluate(f"--model={run_dir}", "--num_classes=3")  # the command line wins
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    assert wrong.stderr.strip() == (
        "error: --num_classes=3 but the model's run was trained with --num_classes=4."
    )


def test_evaluate_refuses_holdout_on_a_folder(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")
    result = _evaluate("--dataset=folder", f"--data_dir={tmp_path}", f"--masks_dir={tmp_path}",
                       "--eval_mode=holdout", f"--model={tmp_path / 'm.keras'}")  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip() == (
        "error: `eval_mode='holdout'`: dataset='folder' has no held-out split; use "
        "eval_mode='same'."
    )


def test_minutes_stops_training_on_the_clock_and_records_the_steps_it_reached(
    tmp_path, absl_info, monkeypatch
):
    from tf_autoseg.training import callbacks

    # A clock that advances 3 s a call: a 0.5-minute budget is spent after a few steps.
    clock = iter(range(0, 10**6, 3))
    monkeypatch.setattr(callbacks.TimeBudget, "clock", staticmethod(lambda: float(next(clock))))
    flagfile = _tiny_flagfile(tmp_path, steps=40)
    _main([flagfile, "--minutes=0.5"])
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["steps"] < 40 and metrics["train_seconds"] >= 30, metrics
    assert metrics["minutes"] == 0.5
    # Checkpoints only at whole intervals: a resumed run lines up with its data and epochs.
    assert all(step % 10 == 0 for step, _ in checkpoints.checkpoints(run_dir))
    model = keras.saving.load_model(run_dir / "model.keras")
    assert int(model.optimizer.iterations) == metrics["steps"]
    absl_info.clear()
    _main([flagfile, "--minutes=0.5"])  # the budget is spent: finished, nothing changes
    assert f"is already finished at step {metrics['steps']}" in absl_info.text
    _main([flagfile, "--minutes=1000"])  # a larger budget continues it, to --steps
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 40


def test_a_diverged_run_stops_with_one_line_and_exports_nothing(tmp_path):
    run_dir, saved = tmp_path / "run", tmp_path / "saved"
    args = [*QUICK, "--steps=20", "--checkpoint_every=10", "--learning_rate=1e9"]
    code, output = _train(args, run_dir, saved)
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged: the loss is nan" in errors[0], output[-3000:]
    assert "--learning_rate" in errors[0] and "Traceback" not in output
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.keras").exists()
    assert not saved.exists() or not any(saved.rglob("saved_model.pb"))


def test_a_run_resumed_after_its_last_step_reports_the_recorded_loss_not_zero(tmp_path):
    _main([_tiny_flagfile(tmp_path)])
    run_dir = tmp_path / "run"
    first = json.loads((run_dir / "metrics.json").read_text())
    # As if killed during evaluation or export: the last checkpoint is there, no metrics.
    (run_dir / "metrics.json").unlink()
    _main([_tiny_flagfile(tmp_path)])
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["steps"] == first["steps"] == 10
    assert again["loss"] == pytest.approx(first["loss"], abs=1e-5) and again["loss"] != 0.0
    assert again["mutual_information"] == pytest.approx(first["mutual_information"], abs=1e-5)


def test_a_run_directory_is_held_by_one_process_at_a_time(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # What the holder is writing: a checkpoint half-replaced as the second process looks.
    unfinished = checkpoints.checkpoint_path(run_dir, 10)
    unfinished.parent.mkdir()
    unfinished.write_bytes(b"PK\x03\x04 being replaced")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (run_dir / runs.LOCK).write_text(json.dumps({"pid": holder.pid, "host": os.uname()[1]}))
        code, output = _train([*QUICK, "--steps=20", "--checkpoint_every=10"], run_dir, tmp_path)
        assert code == 2, output[-3000:]
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        # Refused before anything in the run directory is read: never "corrupt ... move it away".
        assert len(errors) == 1 and f"is in use by process {holder.pid}" in errors[0], errors
        assert "corrupt" not in output and "Traceback" not in output
        assert not (run_dir / "flags.json").exists()
        assert unfinished.read_bytes() == b"PK\x03\x04 being replaced"
    finally:
        holder.kill()
        holder.wait()
    unfinished.unlink()
    # The holder died without removing its lock: the next run takes it over, and lets it go.
    code, output = _train([*QUICK, "--steps=10", "--checkpoint_every=10"], run_dir, tmp_path)
    assert code == 0, output[-3000:]
    assert f"taking over the lock of process {holder.pid}" in output
    assert not (run_dir / runs.LOCK).exists()


def test_a_checkpoint_replaced_while_it_is_read_is_not_called_corrupt(tmp_path, monkeypatch):
    from tf_autoseg.modeling import saving

    path = checkpoints.checkpoint_path(tmp_path, 10)
    path.parent.mkdir()
    path.write_bytes(b"not a keras file")
    with pytest.raises(ValueError, match="is corrupt or incompatible"):  # a damaged file is
        checkpoints.load_checkpoint(path)

    def replaced_meanwhile(source, compile=True):  # another process renames a newer one onto it
        Path(source).write_bytes(b"the next checkpoint, written whole")
        raise OSError("truncated zip")

    monkeypatch.setattr(saving, "load", replaced_meanwhile)
    with pytest.raises(ValueError, match="removed or replaced by another process") as caught:
        checkpoints.load_checkpoint(path)
    assert "corrupt" not in str(caught.value) and "Move it away" not in str(caught.value)

    def removed_meanwhile(source, compile=True):
        Path(source).unlink()
        raise FileNotFoundError(source)

    monkeypatch.setattr(saving, "load", removed_meanwhile)
    with pytest.raises(ValueError, match="removed or replaced by another process"):
        checkpoints.load_checkpoint(path)


def test_the_chief_holds_the_run_directory_as_the_strategy_decides():
    def config(task, chief=False):
        cluster = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if chief else {})}
        return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}

    assert runs.is_chief("auto", {})
    assert runs.is_chief("none", config({"type": "worker", "index": 1}))
    assert runs.is_chief("auto", config({"type": "worker", "index": 0}))
    assert not runs.is_chief("multiworker", config({"type": "worker", "index": 1}))
    assert runs.is_chief("auto", config({"type": "chief", "index": 0}, chief=True))
    assert not runs.is_chief("auto", config({"type": "worker", "index": 0}, chief=True))


def test_a_lock_is_held_once_per_process_and_leaves_no_folder_it_made(tmp_path):
    run_dir = tmp_path / "new" / "run"
    with runs.held(run_dir):
        with runs.held(run_dir):  # the program, then the library: not refused by itself
            assert (run_dir / runs.LOCK).exists()
        assert (run_dir / runs.LOCK).exists()  # the outer hold still holds it
    assert not (tmp_path / "new").exists()  # made for the lock, empty: removed again


def test_a_batch_beyond_the_data_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    args = [*QUICK, "--steps=10", "--checkpoint_every=10", "--batch_size=100000"]
    code, output = _train(args, run_dir, tmp_path)
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert "--batch_size=100000 is more than the 16 training examples" in errors[0], errors
    assert not run_dir.exists()


def test_ctrl_c_says_where_the_same_command_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*QUICK, "--steps=100000", "--checkpoint_every=10", "--noexport"]
    process = _train(args, run_dir, tmp_path / "saved", wait=False)
    try:
        deadline = time.monotonic() + 300
        while not checkpoints.checkpoints(run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoints.checkpoints(run_dir), "no checkpoint written"
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    last = [line for line in output.splitlines() if line.strip()][-1]
    assert last.startswith("stopped at step ") and "the same command resumes from step" in last


def test_ctrl_c_stops_fit_at_the_end_of_the_step_in_progress():
    from tf_autoseg.training import callbacks

    model = AutoSegModel(3, (16, 16, 3), width=8, stride=2, ar_blocks=1)
    model.compile(optimizer="adam")
    images = tf.data.Dataset.from_tensors(tf.zeros((2, 16, 16, 3))).repeat()

    class CtrlCAtStep3(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    # As from a terminal (see _terminal_signals): Python's own Ctrl-C handler in place.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ctrl_c = callbacks.StopOnCtrlC()
        model.fit(images, epochs=1, steps_per_epoch=10, callbacks=[CtrlCAtStep3(), ctrl_c],
                  verbose=0)  # fmt: skip
        assert ctrl_c.requested and int(model.optimizer.iterations) == 3  # no KeyboardInterrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, before)


def test_evaluating_a_saved_model_prints_no_grappler_error(tmp_path):
    code, output = _train([*QUICK, "--steps=10", "--checkpoint_every=10"], tmp_path / "run",
                          tmp_path / "saved")  # fmt: skip
    assert code == 0, output[-3000:]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "tf_autoseg.evaluate", *QUICK,
         f"--model={tmp_path / 'saved' / 'quickstart' / '1'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remapper failed" not in result.stderr and "E0000" not in result.stderr, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["main"]["pixel_accuracy"] > 0


def _two_colour_scenes(count, left, right, size=32):
    """(images, labels): each image's left half one colour, its right half another, jittered;
    label 0 on the left, 1 on the right."""
    rng = np.random.default_rng(count)
    images = np.empty((count, size, size, 3), np.uint8)
    images[:, :, : size // 2] = left
    images[:, :, size // 2 :] = right
    noise = rng.integers(-4, 5, images.shape)
    images = np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)
    labels = np.zeros((count, size, size), np.int32)
    labels[:, :, size // 2 :] = 1
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def test_evaluate_adapts_the_label_free_stage_to_the_images_it_scores():
    """Fitted on bright scenes, the mixture puts a dark scene's two halves in one component; an
    adapted evaluation refits it on the dark scene's own images and separates them."""
    from tf_autoseg.training import experiment

    keras.utils.set_random_seed(0)
    model = AutoSegModel(num_classes=2, input_shape=(32, 32, 3), width=8, ar_blocks=1,
                         labels_from="mixture")  # fmt: skip
    bright = _two_colour_scenes(16, (250, 240, 230), (200, 250, 200))
    dark = _two_colour_scenes(8, (20, 10, 40), (60, 10, 10))
    model.fit_labelling(bright, seed=0)
    served = experiment.evaluate(model, dark, None, 2)
    assert served["labelling"] == {"labels_from": "mixture", "adapted": False}
    adapted = experiment.evaluate(model, dark, None, 2, adapt=True, seed=0)
    assert adapted["labelling"] == {"labels_from": "mixture", "adapted": True}
    assert served["main"]["mean_iou"] < 0.6 < 0.95 < adapted["main"]["mean_iou"], (
        served["main"]["mean_iou"], adapted["main"]["mean_iou"])  # fmt: skip
    # The head answers a model without a stage: nothing to adapt, nothing said.
    head = AutoSegModel(num_classes=2, input_shape=(32, 32, 3), width=8, ar_blocks=1)
    assert "labelling" not in experiment.evaluate(head, dark, None, 2, adapt=True)
