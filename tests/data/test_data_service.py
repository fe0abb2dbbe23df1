"""tf.data service: the launcher's dispatcher and two workers on loopback serve a prepared set
to training, each example of an epoch once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tf_autoseg import AutoSegModel
from tf_autoseg.data import records
from tf_autoseg.data import service
from tf_autoseg.datasets import DataConfig
from tf_autoseg.training import prepare

ROOT = Path(__file__).resolve().parents[2]


def id_images(folder, count, size=16):
    """Image k holds k in channel 0 of every pixel, and noise in the others."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[..., 0] = k
        Image.fromarray(image).save(folder / f"im{k:03d}.png")
    return folder


@pytest.fixture
def launcher():
    """`python -m tf_autoseg.data_service --port=0 --workers=2`, and the address it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tf_autoseg.data_service", "--port=0", "--workers=2"],
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "2 worker(s) for grpc://" in line, line
        yield line.split(" for ")[1].strip()
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_two_service_workers_serve_each_example_of_an_epoch_once_and_training_runs(
    tmp_path, launcher
):
    source = id_images(tmp_path / "src", 48)
    part = DataConfig(dataset="folder", data_dir=str(source), tile=16)
    prepare.prepare(part, part, tmp_path / "out", shard_size=8, log=lambda line: None)
    dataset, info = records.load(tmp_path / "out", batch_size=8, seed=0, repeat=True, augment=True)
    served = service.distribute(dataset, launcher, job_name="test")
    batches = [np.asarray(b)[:, 0, 0, 0] for b in served.take(12)]  # two epochs' worth
    # Each worker runs whole epochs of its own (DYNAMIC sharding): no batch is served twice.
    # Two workers replaying the same epochs would serve every batch of the seed twice.
    assert len({tuple(b) for b in batches}) == 12
    assert set(np.concatenate(batches)) == set(range(48))
    keras.utils.set_random_seed(0)
    model = AutoSegModel(
        3, (16, 16, 3), front="residual", front_blocks=1, ar_blocks=2, width=8, stride=2,
        orderings=(0, 3, 9, 14),
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(served, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    assert np.isfinite(np.asarray(history.history["loss"])).all()


def test_service_address_must_be_grpc_host_port():
    for bad in ("localhost:5050", "grpc://localhost", "http://h:1"):
        with pytest.raises(ValueError, match=r"--data_service must be grpc://host:port"):
            service.check_address(bad)
    service.check_address("grpc://localhost:5050")


def test_a_missing_dispatcher_is_named_within_the_timeout_and_leaves_no_run(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tf_autoseg.train", "--flagfile=experiments/quickstart.cfg",
               "--dataset=folder", f"--data_dir={id_images(tmp_path / 'src', 8)}", "--tile=16",
               "--batch_size=4", "--steps=2", "--checkpoint_every=2",
               f"--data_service=grpc://127.0.0.1:{port}", "--data_service_timeout=3",
               f"--run_dir={run_dir}", f"--export_dir={tmp_path / 'saved'}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert time.monotonic() - start < 60
    assert "Waiting up to 3 s for the tf.data service dispatcher" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no dispatcher answered within 3 s" in errors[0], errors
    assert not run_dir.exists()
    with pytest.raises(ValueError, match="does not resolve"):
        service.wait_for_dispatcher("grpc://no-such-host.invalid:5050", 1.0, log=lambda _: 0)


def test_the_service_program_stops_cleanly_on_sigterm_and_ctrl_c():
    import signal

    for number in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen(
            [sys.executable, "-m", "tf_autoseg.data_service", "--port=0", "--workers=1"],
            env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert "1 worker(s) for grpc://" in process.stdout.readline()
            process.send_signal(number)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 0, err[-2000:]
        assert "stopped" in out and "Traceback" not in err


@pytest.mark.parametrize(
    "args, named",
    [
        (["--port=70000"], "--port must be a port in [1, 65535]"),  # gRPC took 70000 mod 65536
        (["--port=-1"], "--port must be a port in [1, 65535]"),  # was a traceback
        (["--workers=-2"], "Received: workers=-2"),  # ran with 0 workers
        (["--dispatcher=localhost:5050", "--workers=0"], "Received: workers=0"),  # serves nothing
        (["--dispatcher=localhost"], "--dispatcher must be host:port"),
    ],
)
def test_bad_flags_are_one_line_before_anything_starts(args, named):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['prog', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('tf_autoseg.data_service', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    print('exit', exit_.code, 'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "exit 2 False", result.stderr[-3000:]  # nothing started, no TensorFlow
    assert len(lines) == 2 and lines[0].startswith("error: ") and named in lines[0], lines


def test_a_second_service_on_a_taken_port_is_refused_and_start_up_is_quiet():
    import signal
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the program's own default, as a user runs it
    command = [sys.executable, "-m", "tf_autoseg.data_service", f"--port={port}", "--workers=1"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert f"1 worker(s) for grpc://localhost:{port}" in first.stdout.readline()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"--port={port}: the port is in use" in lines[0], lines
        assert "worker(s) for" not in second.stdout  # it reported no success
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0 and "stopped" in out, err[-2000:]
    # TensorFlow's start-up log (cuInit, CPU features, oneDNN) is hidden as by every program.
    assert not [line for line in err.splitlines() if line.strip()], err[-2000:]
