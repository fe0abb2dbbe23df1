"""model.fit under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy (2 processes).

Each run happens in a fresh process (tests/support/distributed_worker.py): logical
devices and TF_CONFIG must be set before TensorFlow initialises.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).resolve().parents[1] / "support" / "distributed_worker.py"
ROOT = WORKER.parents[2]
STEPS = 3
# Stated tolerance: the global joint is all-reduced, so only float summation
# order differs between one device and two replicas.
TOLERANCE = 1e-5


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run(mode, out, **env):
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(out), str(STEPS)],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


def _weights(path):
    data = np.load(path)
    return data, [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "single.npz"
    _finish(_run("single", out))
    return _weights(out)


@pytest.mark.slow  # 51 s + 19 s (its one-device run) on 2 busy CPU cores
def test_mirrored_two_replicas_matches_one_device(single_run, tmp_path):
    out = tmp_path / "mirrored.npz"
    _finish(_run("mirrored", out))
    (single, single_weights), (mirrored, mirrored_weights) = single_run, _weights(out)
    assert int(mirrored["replicas"]) == 2 and int(single["replicas"]) == 1
    assert float(single["moved"]) > 1e-3, "training must change the weights"
    np.testing.assert_allclose(mirrored["losses"], single["losses"], atol=TOLERANCE)
    for a, b in zip(mirrored_weights, single_weights):
        np.testing.assert_allclose(a, b, atol=TOLERANCE)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # 78 s on 2 busy CPU cores: two worker processes
def test_multi_worker_run_ends_with_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            _run("multiworker", tmp_path / f"worker{index}.npz", TF_CONFIG=json.dumps(config))
        )
    try:
        for process in processes:
            _finish(process)
    finally:
        for process in processes:
            process.kill()
    (first, first_weights), (second, second_weights) = (
        _weights(tmp_path / f"worker{i}.npz") for i in range(2)
    )
    assert int(first["replicas"]) == 2
    assert float(first["moved"]) > 1e-3, "training must change the weights"
    np.testing.assert_array_equal(first["losses"], second["losses"])
    assert np.isfinite(first["losses"]).all()
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)
