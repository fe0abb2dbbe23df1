"""How the cluster-naming page copes with a large folder: time to first page, to labels, memory.

    python -m benchmarks.name_clusters --images=10000 --sample=60

Writes `--images` JPEGs (`--size`, street-like bands with noise) into a temporary folder,
saves an untrained model of the folder recipe's shape (F2, width 64, 4 AR blocks, 12
clusters; its weights do not change the cost), starts `python -m tf_autoseg.name_clusters`
on them, and prints, measured from the program's start:

- `first_page_s`: until `/` answers 200 (the page shows the labelling's progress);
- `ready_s`: until `/api/state` says the sample is labelled (what a user waits for);
- `state_ms`: the median of 20 `/api/state` requests once ready;
- `peak_rss_mib`: the program's peak resident memory (VmHWM) once ready.

Name the CPU with the figures: `grep -m1 'model name' /proc/cpuinfo`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def _write_images(folder, count, size, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    height, width = size
    for i in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        horizon = int(rng.integers(height // 4, height // 2))
        image[:horizon] = rng.integers(120, 230, 3)
        image[horizon:] = rng.integers(30, 120, 3)
        left = int(rng.integers(0, width - 8))
        image[:, left : left + 6] = rng.integers(0, 255, 3)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=85)


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="name-clusters-bench-"))
    try:
        folder = work / "images"
        folder.mkdir()
        start = time.perf_counter()
        _write_images(folder, args.images, args.size)
        print(f"wrote {args.images} images of {args.size[0]}x{args.size[1]} in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        from tf_autoseg import AutoSegModel

        model = AutoSegModel.variant("F2", 12, (64, 64, 3), width=64, stride=4, ar_blocks=4)
        model(np.zeros((1, 64, 64, 3), np.float32))
        (work / "run").mkdir()
        model.save(work / "run" / "model.keras")

        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "tf_autoseg.name_clusters", f"--model={work / 'run'}",
             f"--images={folder}", f"--sample={args.sample}", "--port=0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        url = None
        while url is None:
            line = process.stdout.readline()
            if not line:
                raise SystemExit("the program stopped before serving")
            if "open http://" in line:
                url = line.split("open ", 1)[1].split()[0]
        while True:
            try:
                if _get(url)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        first_page = time.perf_counter() - started
        while not json.loads(_get(url + "api/state")[1])["ready"]:
            time.sleep(0.1)
        ready = time.perf_counter() - started
        timings = []
        for _ in range(20):
            tick = time.perf_counter()
            _get(url + "api/state")
            timings.append(1000 * (time.perf_counter() - tick))
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(
            next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]
        )
        process.terminate()
        process.wait(timeout=30)
        figures = {
            "images_in_folder": args.images,
            "sample": args.sample,
            "image_size": list(args.size),
            "first_page_s": round(first_page, 2),
            "ready_s": round(ready, 2),
            "state_ms": round(float(np.median(timings)), 2),
            "peak_rss_mib": round(peak / 1024, 1),
        }
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
