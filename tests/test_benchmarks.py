"""The benchmarks run in tiny configurations and print complete JSON; their times are not asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import speed

ROOT = Path(__file__).resolve().parents[1]
SPEED_FIELDS = {
    "model", "precision", "shape", "parameters", "forward_gflop_per_image", "train_step_s",
    "train_images_per_s", "train_gflops", "train_fraction_of_matmul", "infer_images_per_s",
    "infer_saved_model_images_per_s", "loss_ms", "loss_fraction_of_step", "peak_rss_mb",
}  # fmt: skip


def _json_of(*args):
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_flop_count_matches_a_hand_count_for_one_layer():
    layer = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
    spec = tf.TensorSpec([1, 10, 12, 4], tf.float32)
    assert speed.forward_flops(layer, spec) == 2 * 10 * 12 * 3 * 3 * 4 * 8


@pytest.mark.slow  # 106 s on 2 busy CPU cores: subprocesses, each importing TF
def test_speed_benchmark_prints_every_field():
    report = _json_of(
        "benchmarks.speed", "--quick", "--models=f2,peer_net4", "--precisions=float32"
    )
    assert report["matmul_fp32_gflops"] > 0
    assert [r["model"] for r in report["results"]] == ["f2", "f2", "peer_net4"]
    for result in report["results"]:
        assert SPEED_FIELDS <= set(result), SPEED_FIELDS - set(result)
        assert result["train_images_per_s"] > 0 and result["forward_gflop_per_image"] > 0


def test_peer_net4_has_the_published_size():
    from benchmarks.peer_net4 import PeerNet4

    model = PeerNet4((128, 128, 3))
    assert abs(model.count_params() - 13.2e6) < 0.05e6
    flops = speed.forward_flops(lambda x: model(x), tf.TensorSpec([1, 128, 128, 3]))
    assert abs(flops / 1e9 - 27.1) < 0.1


@pytest.mark.slow  # 65 s on 2 busy CPU cores: subprocesses, each importing TF
def test_small_benchmarks_print_their_figures():
    overhead = _json_of("benchmarks.masking_overhead", "--size=16", "--channels=8", "--repeats=1")
    assert overhead["masked_over_plain"] > 0
    loss = _json_of("benchmarks.loss_speed", "--size=6", "--repeats=1", "--displacements=1,2")
    assert [r["displacement"] for r in loss["results"]] == [1, 2]
    for result in loss["results"]:  # the box filter and the offset loop agree
        assert abs(result["loss_box"] - result["loss_loop"]) < 1e-5
        assert result["box_ms_median"] > 0 and result["loop_ms_median"] > 0
    evaluation = _json_of("benchmarks.evaluation_speed", "--pixels=1e6", "--repeats=1")
    assert evaluation["pixels"] >= 1e6
    # Independent uniform labels and clusters (K=6): the best matching scores
    # chance, 1/6, plus a little (0.1677 for this seed); a broken matching or
    # count would not.
    assert abs(evaluation["pixel_accuracy"] - 1 / 6) < 0.005
    latency = _json_of(
        "benchmarks.serving_latency", "--size=32", "--crop=32", "--repeats=2", "--warmup=1"
    )
    assert latency["latency_s_median"] > 0 and latency["saved_model_bytes"] > 0
    staged = _json_of(
        "benchmarks.serving_latency", "--size=32", "--crop=32", "--repeats=2", "--warmup=1",
        "--labels_from=mixture", "--refine_iterations=1", "--against_head",
    )  # fmt: skip
    assert staged["labels_from"] == "mixture" and staged["head_latency_s_median"] > 0
    ratio = staged["latency_s_median"] / staged["head_latency_s_median"]
    assert staged["over_head"] == pytest.approx(ratio, rel=0.05, abs=0.01)  # rounded medians


def test_example_figure_draws_a_camvid_frame_with_a_tiny_model(tmp_path):
    from PIL import Image

    from tf_autoseg import AutoSegModel
    from tf_autoseg import visualize
    from tf_autoseg.data import images
    from tf_autoseg.evaluation import metrics

    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp_path / "camvid" / folder).mkdir(parents=True)
    frame = tmp_path / "camvid" / "images" / "val-a.jpg"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(frame)
    ids = rng.integers(0, 11, (40, 48)).astype(np.uint8)
    Image.fromarray(ids).save(tmp_path / "camvid" / "labels" / "val-a.png")
    keras.utils.set_random_seed(0)
    model = AutoSegModel(3, (16, 16, 3), width=8, stride=2, ar_blocks=1, input_downsample=2)
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    report = _json_of(
        "benchmarks.example_figure", "--dataset=camvid", f"--data_dir={tmp_path / 'camvid'}",
        f"--run={tmp_path / 'run'}", "--index=0", "--scale=2", f"--output={tmp_path / 'f.png'}",
    )  # fmt: skip
    drawn = np.asarray(Image.open(tmp_path / "f.png"))
    assert drawn.shape == (20, 3 * 24 + 2 * 6, 3) and report["shape"] == list(drawn.shape)
    assert report["mapping"] == "hungarian on the drawn frame"
    image = images.read_image(frame)[0]
    truth = np.array([0, 255, 255, 1, 1, 2, 255, 255, 255, 255, 255], np.uint8)[ids]  # 3 classes
    clusters = model.predict_labels(image[None]).numpy()[0]
    mapping = metrics.hungarian_match(metrics.confusion_matrix(truth, clusters, 3, 3))
    panels = [image, visualize.colorize(mapping[clusters]).numpy(), visualize.colorize(truth)]
    np.testing.assert_array_equal(drawn[:, :24], panels[0][::2, ::2])
    np.testing.assert_array_equal(drawn[:, 30:54], panels[1][::2, ::2])
    np.testing.assert_array_equal(drawn[:, 60:], np.asarray(panels[2])[::2, ::2])
    assert (drawn[:, 24:30] == 255).all()


def test_example_figure_puts_the_head_beside_a_stage_refitted_on_the_frames(tmp_path):
    from PIL import Image

    from tf_autoseg import AutoSegModel
    from tf_autoseg import visualize
    from tf_autoseg.data import images
    from tf_autoseg.evaluation import metrics

    rng = np.random.default_rng(1)
    for folder in ("images", "labels"):
        (tmp_path / "camvid" / folder).mkdir(parents=True)
    frames = []
    for name in ("val-a", "val-b"):
        frames.append(tmp_path / "camvid" / "images" / f"{name}.jpg")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(frames[-1])
        ids = rng.integers(0, 11, (32, 32)).astype(np.uint8)
        Image.fromarray(ids).save(tmp_path / "camvid" / "labels" / f"{name}.png")
    keras.utils.set_random_seed(0)
    model = AutoSegModel(3, (16, 16, 3), width=8, stride=2, ar_blocks=1, labels_from="mixture")
    model.fit_labelling([np.full((2, 16, 16, 3), 200, np.uint8) + rng.integers(0, 9, (2, 16, 16, 3)).astype(np.uint8)])  # fmt: skip
    model.save(tmp_path / "mixture.keras")
    report = _json_of(
        "benchmarks.example_figure", "--dataset=camvid", f"--data_dir={tmp_path / 'camvid'}",
        f"--run={tmp_path / 'mixture.keras'}", "--index=0", "--scale=1", "--adapt",
        "--with_head", f"--output={tmp_path / 'f.png'}",
    )  # fmt: skip
    drawn = np.asarray(Image.open(tmp_path / "f.png"))
    assert drawn.shape == (32, 4 * 32 + 3 * 6, 3)
    assert set(report["frame_miou_mapped_here"]) == {"head", "labels"}
    image = images.read_image(frames[0])[0]
    truth = np.asarray(Image.open(tmp_path / "camvid" / "labels" / "val-a.png"))
    truth = np.array([0, 255, 255, 1, 1, 2, 255, 255, 255, 255, 255], np.uint8)[truth]
    model.labelling.reset()  # the head's panel: the stage set aside
    head = model.predict_labels(image[None]).numpy()[0]
    mapping = metrics.hungarian_match(metrics.confusion_matrix(truth, head, 3, 3))
    np.testing.assert_array_equal(drawn[:, 38:70], visualize.colorize(mapping[head]).numpy())
    # The stage's panel: refitted on the two frames (labels unread), as evaluate does.
    model.fit_labelling([images.read_image(path)[0][None] for path in frames], seed=0)
    stage = model.predict_labels(image[None]).numpy()[0]
    mapping = metrics.hungarian_match(metrics.confusion_matrix(truth, stage, 3, 3))
    np.testing.assert_array_equal(drawn[:, 76:108], visualize.colorize(mapping[stage]).numpy())


def test_quality_table_takes_means_over_seeds_and_says_whether_mi_picked_the_best():
    from benchmarks import quality_table

    def seed(number, head, mi, rgb=0.5, untrained=0.4):
        score = lambda v: {"pixel_accuracy": v, "mean_iou": v}  # noqa: E731
        return {"seed": number, "final": {"head": score(head), "labels": score(head), "held_out_mi": mi},
                "baselines": {"kmeans_rgb": score(rgb), "untrained_kmeans": score(untrained)}}  # fmt: skip

    report = {"task": "t", "recipe": "r", "seeds": [seed(0, 0.6, 0.9), seed(1, 0.8, 0.5)]}
    line = quality_table.row(report)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["t", "r", "2"]
    assert cells[3] == cells[4] == "70.0 ± 14.1 / 70.0 ± 14.1"  # sample std of 60 and 80
    assert cells[-2] == "+20.0"  # 70 - max(50, 40)
    assert cells[-1] == "no"  # MI prefers seed 0, labels seed 1


@pytest.mark.slow  # about 30 s: one seed of 20 steps on Dubai tiles, and its baselines
def test_quality_benchmark_trains_scores_and_reports_a_task(tmp_path, dubai_aerial):
    (tmp_path / "dubai-aerial").symlink_to(dubai_aerial)  # the task's folder under --data_root
    report = _json_of(
        "benchmarks.quality", "--task=dubai", f"--data_root={tmp_path}",
        "--flagfile=experiments/dubai.cfg", "--steps=20", "--checkpoint_every=10",
        "--eval_every=10", "--seeds=0", "--quick", "--out=",
    )  # fmt: skip
    assert report["config"]["num_classes"] == 5 and report["config"]["train_tiles"] == list("1234")
    (seed,) = report["seeds"]
    assert [point["steps"] for point in seed["curve"]] == [10, 20]
    for scores in (seed["final"]["head"], *seed["baselines"].values()):
        assert 0 <= scores["mean_iou"] <= 1 and 0 <= scores["pixel_accuracy"] <= 1
    assert {"kmeans_rgb", "untrained_kmeans"} <= set(seed["baselines"])


@pytest.mark.slow  # about a minute: 20 steps on Dubai tiles, then the saved model scored again
def test_quality_benchmark_scores_the_stage_served_and_adapted_and_rescores_saved_models(
    tmp_path, dubai_aerial
):
    (tmp_path / "dubai-aerial").symlink_to(dubai_aerial)
    common = ["benchmarks.quality", "--task=dubai", f"--data_root={tmp_path}",
              "--flagfile=experiments/dubai.cfg", "--seeds=0", "--quick", "--out=",
              "--labels_from=mixture", "--refine_iterations=0", "--nobaselines",
              "--nofeature_kmeans", "--recipe=r"]  # fmt: skip
    trained = _json_of(*common, "--steps=20", "--checkpoint_every=10", "--eval_every=20",
                       f"--save_models={tmp_path / 'models'}")  # fmt: skip
    final = trained["seeds"][0]["final"]
    assert final["labels_from"] == "mixture"
    assert (tmp_path / "models" / "dubai-r-seed0.keras").is_file()
    rescored = _json_of(*common, f"--from_models={tmp_path / 'models'}")["seeds"][0]["final"]
    # The saved network under the same flags: the head and the served stage score the same.
    for name in ("head", "labels", "labels_adapted"):
        assert rescored[name]["mean_iou"] == pytest.approx(final[name]["mean_iou"], abs=1e-6), name
    assert "labels_adapted_final" in trained["summary"]


def test_grid_ceiling_keeps_what_a_cell_holds_and_loses_a_line_thinner_than_a_cell():
    from benchmarks import grid_ceiling

    labels = np.zeros((16, 16), np.int64)
    labels[:, 4:8] = 1  # a band one cell wide, on the cells' edges: kept whole
    labels[:, 13] = 2  # a line of one pixel: a quarter of its cells, lost
    labels[0, 0] = 255  # void is not counted in a cell's fractions
    fractions = grid_ceiling.cell_fractions(labels, 3, 4)
    assert fractions.shape == (4, 4, 3) and np.allclose(fractions.sum(-1), 1)
    np.testing.assert_allclose(fractions[0, 0], [1, 0, 0])  # 15 background pixels of 15 counted
    np.testing.assert_allclose(fractions[:, 3], [[0.75, 0, 0.25]] * 4)
    bilinear, nearest = grid_ceiling.ceilings(labels, 3, 4)
    for labelled in (bilinear, nearest):
        assert (labelled[:, 4:8] == 1).all() and not (labelled == 2).any()
