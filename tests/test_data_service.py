"""tf.data service: the launcher's dispatcher and two workers on loopback serve a prepared set
to training, each example of an epoch once."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tf_autoseg import AutoSegModel
from tf_autoseg.data import records
from tf_autoseg.data import service
from tf_autoseg.training import prepare

ROOT = Path(__file__).resolve().parents[1]


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
    options = dict(dataset="folder", data_dir=str(source), output_dir=str(tmp_path / "out"),
                   classes=3, crop=16, downsample=1, shard_size=8, jobs=1)  # fmt: skip
    prepare.prepare(options, log=lambda line: None)
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


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
