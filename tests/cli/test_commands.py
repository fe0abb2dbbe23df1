"""The command-line programs: --help, TensorFlow's start-up noise, one-line errors (exit 2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tf_autoseg.cli import commands

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ("train", "evaluate", "segment", "export", "prepare", "data_service", "name_clusters")
TINY = ["--synthetic_images=16", "--synthetic_size=32", "--width=8", "--ar_blocks=1",
        "--batch_size=4", "--steps=10", "--checkpoint_every=10"]  # fmt: skip


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("TF_CPP_MIN_LOG_LEVEL", commands.VERBOSE_ENV):  # the programs' own defaults
        if name not in extra:
            env.pop(name, None)
    return env


def _run(args, **env):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _assert_one_line_error(result, *names):
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], lines[0]


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_exits_0_before_tensorflow_loads(program):
    result = _run(["-m", f"tf_autoseg.{program}", "--help"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--" in result.stdout and "Traceback" not in result.stderr
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['prog', '--help']\n"
        "try:\n"
        f"    runpy.run_module('tf_autoseg.{program}', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    print('exit', exit_.code, 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    result = _run(["-c", probe])
    assert result.stderr.strip().splitlines()[-1] == "exit 0 False", result.stderr[-3000:]


def test_no_program_imports_another():
    import ast

    programs = {f"tf_autoseg.cli.{p}" for p in PROGRAMS}
    for program in PROGRAMS:
        tree = ast.parse((ROOT / "tf_autoseg" / "cli" / f"{program}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     for a in n.names}  # fmt: skip
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & (programs - {f"tf_autoseg.cli.{program}"}), program


def test_a_package_registers_its_dataset_through_the_entry_point_group(tmp_path):
    # An installed distribution, as pip leaves it: a module and its entry point.
    (tmp_path / "thirdparty_ds.py").write_text(
        "from tf_autoseg import datasets\n\n\n"
        "def read(data, labels, options):\n"
        "    raise AssertionError('not read: the flags are refused first')\n\n\n"
        "datasets.register(datasets.Dataset('thirdparty', read, num_classes=(2,), files=False))\n"
    )
    info = tmp_path / "thirdparty_ds-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-ds\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[tf_autoseg.datasets]\nthirdparty = thirdparty_ds\n")
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['train', '--dataset=thirdparty', '--num_classes=3', '--run_dir=unused']\n"
        "try:\n"
        "    runpy.run_module('tf_autoseg.train', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    print('exit', exit_.code, 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    result = _run(["-c", probe], PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "exit 2 False", result.stderr[-3000:]
    assert "one of (2,) for dataset='thirdparty'. Received: num_classes=3" in lines[0], lines


def test_evaluate_help_lists_its_flags_and_the_data_flags_it_reads():
    result = _run(["-m", "tf_autoseg.evaluate", "--help"])
    for flag in ("--model", "--dataset", "--data_dir", "--num_classes", "--eval_mode"):
        assert f"  {flag}:" in result.stdout, flag


# Lines TensorFlow 2.21 writes while it loads on a machine without a GPU.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796191746.893444    4159 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "I0000 00:00:1796191746.978517    4159 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.\n",
    "E0000 00:00:1796192513.868779    7925 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]


def test_noise_is_told_apart_from_other_lines():
    assert all(commands.is_noise(line) for line in NOISE)
    kept = [
        "E0000 00:00:1796192513.868779    7925 op_kernel.cc:1] Out of memory\n",
        "error: --num_classes=9: synthetic accepts (2, 3, 4, 5, 6).\n",
        "/usr/lib/python3/dist-packages/x.py:3: DeprecationWarning: y\n",
    ]
    assert not any(commands.is_noise(line) for line in kept)


def test_tensorflow_start_up_is_quiet_by_default_and_verbose_on_request():
    probe = (
        "import sys\n"
        "from tf_autoseg.cli import commands\n"
        "print('before', file=sys.stderr, flush=True)\n"
        "commands.start_tensorflow()\n"
        "print('after', file=sys.stderr)\n"
    )
    quiet = _run(["-c", probe])
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.split() == ["before", "after"], quiet.stderr[-3000:]
    loud = _run(["-c", probe], **{commands.VERBOSE_ENV: "1"})
    lines = loud.stderr.splitlines(True)
    assert lines[0] == "before\n" and lines[-1] == "after\n"
    assert any(commands.is_noise(line) for line in lines), "TensorFlow said nothing while loading"


def test_check_writable_leaves_no_trace(tmp_path):
    commands.check_writable("run_dir", tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out='.*file/x': cannot create or write"):
        commands.check_writable("out", str(tmp_path / "file" / "x"))


@pytest.fixture
def blocker(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("")
    return path


@pytest.mark.parametrize("flag", ["run_dir", "export_dir"])
@pytest.mark.parametrize("where", ["proc", "under_file"])
def test_train_refuses_unwritable_folders_before_training(tmp_path, blocker, flag, where):
    folder = "/proc/tf_autoseg_test" if where == "proc" else str(blocker / "x")
    folders = {"run_dir": str(tmp_path / "run"), "export_dir": str(tmp_path / "saved")}
    folders[flag] = folder
    args = [f"--{name}={value}" for name, value in folders.items()]
    result = _run(["-m", "tf_autoseg.train", *TINY, *args])
    _assert_one_line_error(result, f"--{flag}='{folder}'", "cannot create or write")
    assert not (tmp_path / "run").exists() and not (tmp_path / "saved").exists()


def test_train_refuses_what_would_stop_its_export_before_training(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "models.config").write_text("garbage {{{")
    run = ["-m", "tf_autoseg.train", *TINY, f"--run_dir={tmp_path / 'run'}"]
    result = _run([*run, f"--export_dir={saved}"])
    _assert_one_line_error(result, str(saved / "models.config"), "not a text-format")
    result = _run([*run, f"--export_dir={tmp_path / 'other'}", "--export_name=_hidden"])
    _assert_one_line_error(result, "--export_name='_hidden'")
    assert not (tmp_path / "run").exists() and not (tmp_path / "other").exists()


def test_export_refuses_an_output_dir_under_a_file(tmp_path, blocker):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")  # never read: the output is refused first
    out = blocker / "saved"
    result = _run(["-m", "tf_autoseg.export", f"--model={tmp_path / 'run'}", "--name=m",
                   f"--output_dir={out}"])  # fmt: skip
    _assert_one_line_error(result, f"--output_dir='{out}'", f"{blocker}: not a folder")


def test_export_names_a_corrupt_models_config(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "models.config").write_text("garbage {{{")
    result = _run(["-m", "tf_autoseg.export", f"--model={tmp_path / 'run'}", "--name=m",
                   f"--output_dir={tmp_path / 'saved'}"])  # fmt: skip
    _assert_one_line_error(result, str(tmp_path / "saved" / "models.config"), "not a text-format")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["models.config"]


@pytest.mark.parametrize("where", ["proc", "under_file"])
def test_segment_refuses_an_unwritable_output(tmp_path, blocker, where):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    (tmp_path / "m.keras").write_bytes(b"")  # never read: the output is refused first
    out = "/proc/tf_autoseg_test" if where == "proc" else str(blocker / "x")
    result = _run(["-m", "tf_autoseg.segment", f"--model={tmp_path / 'm.keras'}",
                   f"--input={tmp_path / 'in.png'}", f"--output={out}"])  # fmt: skip
    _assert_one_line_error(result, f"--output='{out}'", "cannot create or write")


def test_one_line_names_the_path_of_an_os_error():
    error = FileNotFoundError(2, "No such file or directory", "/proc/x")
    assert commands.one_line(error) == "/proc/x: No such file or directory"
    assert commands.one_line(ValueError("a\n  b")) == "a b"


def test_prepare_names_a_bad_output_folder_and_a_folder_without_classes(tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    (tmp_path / "file").write_text("")
    result = _run(["-m", "tf_autoseg.prepare", "--dataset=folder", f"--data_dir={source}",
                   f"--output_dir={tmp_path / 'out'}"])  # fmt: skip
    _assert_one_line_error(result, "--num_classes is required for --dataset=folder")
    result = _run(["-m", "tf_autoseg.prepare", "--dataset=dubai", f"--data_dir={source}",
                   f"--output_dir={tmp_path / 'file' / 'out'}"])  # fmt: skip
    _assert_one_line_error(result, "--output_dir=", "not a folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(
    "arg, named",
    [("--no_such_flag=1", "no_such_flag"), ("--flagfile=/no/such.cfg", "/no/such.cfg")],
)
def test_flag_parsing_errors_are_one_line_and_exit_2(program, arg, named):
    _assert_one_line_error(_run(["-m", f"tf_autoseg.{program}", arg]), named)


def test_a_typo_in_a_flagfile_is_one_line(tmp_path):
    flagfile = tmp_path / "typo.cfg"
    flagfile.write_text("--dataset=synthetic\n--stepz=10\n")
    _assert_one_line_error(_run(["-m", "tf_autoseg.train", f"--flagfile={flagfile}"]), "stepz")
    _assert_one_line_error(_run(["-m", "tf_autoseg.train", "--steps=abc"]), "--steps=abc")


@pytest.mark.parametrize(
    "arg",
    ["--num_classes=1", "--width=0", "--stride=3", "--minutes=0", "--tile=1", "--eval_batches=-3"],
)
def test_range_checks_answer_before_tensorflow_loads(arg, tmp_path):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['prog', '--flagfile=experiments/quickstart.cfg', '{arg}',"
        f" '--run_dir={tmp_path / 'run'}']\n"
        "try:\n"
        "    runpy.run_module('tf_autoseg.train', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    print('exit', exit_.code, 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    result = _run(["-c", probe])
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "exit 2 False", result.stderr[-3000:]
    assert lines[0].startswith("error: `" + arg[2:].split("=")[0] + "`"), lines


@pytest.mark.parametrize(
    "program, args, named",
    [
        ("prepare", ["--jobs=0"], "--jobs=0: --jobs must be a positive int"),
        ("prepare", ["--jobs=-3"], "--jobs=-3: --jobs must be a positive int"),
        ("prepare", ["--shard_size=0"], "--shard_size=0: --shard_size must be a positive int"),
        ("evaluate", ["--model={model}", "--eval_batches=-3"], "Received: eval_batches=-3"),
        ("evaluate", ["--model={model}", "--tile=1"], "Received: tile=1"),
    ],
)
def test_nonsense_counts_are_refused_before_any_work(program, args, named, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"")  # refused before it is read
    args = [arg.format(model=tmp_path / "run") for arg in args]
    data = ["--dataset=folder", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}",
            "--num_classes=3"] if program == "prepare" else []  # fmt: skip
    _assert_one_line_error(_run(["-m", f"tf_autoseg.{program}", *data, *args]), named)
    assert not (tmp_path / "out").exists()


def test_every_program_has_a_console_script_that_runs_it():
    import configparser
    import importlib

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = dict(
        line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].split("\n")
        if line.strip()
    )  # fmt: skip
    assert sorted(scripts) == sorted(f"tf-autoseg-{p.replace('_', '-')}" for p in PROGRAMS)
    for name, target in scripts.items():
        module, function = target.split(":")
        program = name.removeprefix("tf-autoseg-").replace("-", "_")
        assert module == f"tf_autoseg.cli.{program}" and function == "run", target
        assert callable(getattr(importlib.import_module(module), function))
