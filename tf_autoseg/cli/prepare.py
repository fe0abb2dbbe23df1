"""`python -m tf_autoseg.prepare`: decodes a dataset once into TFRecord shards.

The library is `tf_autoseg.training.prepare`; this module holds the flags and `main`.
"""

import json
import sys

from tf_autoseg import datasets
from tf_autoseg.cli import commands
from tf_autoseg.cli import run_flags
from tf_autoseg.training import sections
from tf_autoseg.training.config import RunConfig

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
        known = [n for n in datasets.names() if datasets.get(n).prepared is not None]
        if name is not None and name not in known:
            raise flags.ValidationError(f"--dataset must be one of {', '.join(known)}")
        return True

    flags.register_validator("dataset", prepared)
    flags.adopt_module_key_flags(run_flags)
    flags.DEFINE_string("output_dir", None, "Folder for the shards and manifest.json.")
    flags.DEFINE_float("scale", 1 / 3, "cocostuff: image scale (IIC: 1/3).")
    flags.DEFINE_integer("shard_size", 512, "Examples per shard file (MultiWorker: >= 1 shard "
                         "per worker; about 100-200 MB a shard reads well).")  # fmt: skip
    flags.DEFINE_integer("jobs", 1, "Shards written at once, in separate processes (>= 1).")
    for name in ("jobs", "shard_size"):  # checked at parsing, before anything is read
        flags.register_validator(
            name, lambda value: value >= 1, message=f"--{name} must be a positive int"
        )
    flags.mark_flags_as_required(["dataset", "data_dir", "output_dir"])


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    given = run_flags.values(DATA)
    if given["num_classes"] is None:  # the dataset's first accepted count, if it has any
        accepted = datasets.get(given["dataset"]).num_classes
        if not accepted:
            raise ValueError(
                f"--num_classes is required for --dataset={given['dataset']}: the number of "
                "classes you will train with (--num_classes of tf_autoseg.train)."
            )
        given["num_classes"] = accepted[0]
    scale, output_dir = flags.FLAGS.scale, flags.FLAGS.output_dir
    chosen = RunConfig.from_mapping(given)
    train, held_out = (sections.data_config(chosen, part).replace(scale=scale)
                       for part in ("train", "eval"))  # fmt: skip
    commands.check_writable("output_dir", output_dir)  # before TensorFlow, named
    commands.start_tensorflow()
    from tf_autoseg.training.prepare import prepare

    # A ValueError (a rerun with other flags, a bad file) is one line and exit 2 (commands.run).
    manifest = prepare(
        train, held_out, output_dir, shard_size=flags.FLAGS.shard_size, jobs=flags.FLAGS.jobs
    )
    counts = {name: part["examples"] for name, part in manifest["parts"].items()}
    print(json.dumps({"output_dir": output_dir, "examples": counts}))


def run():
    """Defines the flags and runs `main` as the program."""
    _define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
