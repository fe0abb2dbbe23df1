"""`python -m tf_autoseg.prepare`: decodes a dataset once into TFRecord shards.

The library is `tf_autoseg.training.prepare`; this module holds the flags and `main`.
"""

import json
import sys

from tf_autoseg import datasets
from tf_autoseg.cli import commands
from tf_autoseg.cli import run_flags

# ------------------------------------------------------------------ command line
# The training flags that choose and cut the data, defined from the training table.
DATA = ("dataset", "data_dir", "num_classes", "tile", "downsample", "min_side", "min_target_share",
        "masks_dir", "colours", "train_tiles", "eval_tiles", "train_sequences", "eval_sequences")  # fmt: skip


def _define_flags():
    from absl import flags

    run_flags.define(
        DATA,
        defaults={"dataset": None, "num_classes": None},
        helps={
            "dataset": f"<{'|'.join(datasets.PREPARED)}>, or a registered dataset with "
            "prepared parts: the dataset to prepare.",
            "num_classes": "Classes: potsdam 6 (default; 3 is chosen when training), cocostuff "
            "15 (default) or 3, camvid 3 (default) or 11, dubai 5; folder: required, the "
            "classes you will train with.",
        },
    )

    def prepared(name):
        # At parsing: datasets registered after this module was imported are accepted.
        known = [n for n in datasets.names() if datasets.get(n).prepared]
        if name is not None and name not in known:
            raise flags.ValidationError(f"--dataset must be one of {', '.join(known)}")
        return True

    flags.register_validator("dataset", prepared)
    flags.adopt_module_key_flags(run_flags)
    flags.DEFINE_string("output_dir", None, "Folder for the shards and manifest.json.")
    flags.DEFINE_float("scale", 1 / 3, "cocostuff: image scale (IIC: 1/3).")
    flags.DEFINE_integer("shard_size", 512, "Examples per shard file (MultiWorker: >= 1 shard "
                         "per worker; about 100-200 MB a shard reads well).")  # fmt: skip
    flags.DEFINE_integer("jobs", 1, "Shards written at once, in separate processes.")
    flags.mark_flags_as_required(["dataset", "data_dir", "output_dir"])


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = run_flags.values(DATA)
    config.update(
        {name: flags.FLAGS[name].value for name in ("output_dir", "scale", "shard_size", "jobs")}
    )
    config["train_tiles"] = [int(t) for t in config["train_tiles"]]
    config["eval_tiles"] = [int(t) for t in config["eval_tiles"]]
    if config["num_classes"] is None:  # the dataset's first accepted count, if it has any
        accepted = datasets.get(config["dataset"]).classes()
        if not accepted:
            raise ValueError(
                f"--num_classes is required for --dataset={config['dataset']}: the number of "
                "classes you will train with (--num_classes of tf_autoseg.train)."
            )
        config["num_classes"] = accepted[0]
    commands.check_writable("output_dir", config["output_dir"])  # before TensorFlow, named
    commands.start_tensorflow()
    from tf_autoseg.training.prepare import prepare

    manifest = prepare(config)  # a ValueError is one line and exit 2 (commands.run)
    counts = {name: part["examples"] for name, part in manifest["parts"].items()}
    print(json.dumps({"output_dir": config["output_dir"], "examples": counts}))


def run():
    """Defines the flags and runs `main` as the program."""
    _define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
