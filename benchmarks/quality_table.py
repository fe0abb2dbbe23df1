"""A markdown table of `benchmarks.quality` reports: AC against its baselines, over seeds.

    python -m benchmarks.quality_table benchmarks/results/camvid_0006R0-*.json

One row per report (task, recipe, seeds): mean ± sample standard deviation over seeds of
accuracy / mIoU (in %) for the labels the model serves (its export: the head, or the
label-free centres of `--labels_from`), the AC head, k-means on the trained features and on
the overclustering head (fitted on the scored images, when scored), RGB k-means and the
untrained network + k-means; then the served labels' mIoU margin over the best baseline, and
whether the label-free choice (the held-out mutual information) picked the seed that labels
rank best.
"""

import json
import sys

import numpy as np

COLUMNS = (
    ("served labels", lambda s: s["final"]["labels"]),
    ("AC head", lambda s: s["final"]["head"]),
    ("k-means on features", lambda s: s["final"].get("feature_kmeans")),
    ("k-means on overclustering", lambda s: s["final"].get("overclustering_kmeans")),
    ("RGB k-means", lambda s: s.get("baselines", {}).get("kmeans_rgb")),
    ("untrained + k-means", lambda s: s.get("baselines", {}).get("untrained_kmeans")),
)


def _cell(entries):
    if any(e is None for e in entries):
        return "", None
    acc = 100 * np.array([e["pixel_accuracy"] for e in entries])
    miou = 100 * np.array([e["mean_iou"] for e in entries])
    spread = (lambda v: v.std(ddof=1)) if len(entries) > 1 else (lambda v: 0.0)
    text = f"{acc.mean():.1f} ± {spread(acc):.1f} / {miou.mean():.1f} ± {spread(miou):.1f}"
    return text, miou.mean()


def row(report):
    seeds = report["seeds"]
    cells, means = [], {}
    for name, get in COLUMNS:
        text, mean = _cell([get(s) for s in seeds])
        cells.append(text)
        means[name] = mean
    baselines = [means[n] for n in ("RGB k-means", "untrained + k-means") if means[n] is not None]
    margin = f"{means['served labels'] - max(baselines):+.1f}" if baselines else ""
    by_labels = max(seeds, key=lambda s: s["final"]["head"]["mean_iou"])["seed"]
    by_mi = max(seeds, key=lambda s: s["final"]["held_out_mi"])["seed"]
    picked = "yes" if by_mi == by_labels else "no"
    name = f"{report['task']} | {report['recipe']} | {len(seeds)}"
    return f"| {name} | " + " | ".join(cells) + f" | {margin} | {picked} |"


def main(paths):
    header = ["task", "recipe", "seeds", *(n for n, _ in COLUMNS), "served - best baseline, mIoU",
              "MI picks the best seed"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in paths:
        with open(path) as file:
            print(row(json.load(file)))


if __name__ == "__main__":
    main(sys.argv[1:])
