"""The training run's configuration: one table of its flags, parsed once into a frozen config.

`RunConfig` is the table. Each field is one flag of `python -m tf_autoseg.train` (the same
name, its type, default, help and choices) with what the programs need to know of it, as field
metadata:

- `resumable`: the flag may change when a run resumes (the others must match `flags.json`);
- `added`: the flag came after runs were first recorded; a `flags.json` without it is read as
  holding this value, the one that trains as before;
- `formerly`: the flag's older name, still accepted on command lines, in flagfiles and in
  older runs' `flags.json` (`--classes` is `--num_classes`, `--crop` is `--tile`);
- `unset`: the value that meant "not given" before the flag defaulted to None;
- `evaluate`: `python -m tf_autoseg.evaluate` reads the flag (the data and its scoring).

A flag's name is the name of the argument it feeds (`--num_classes` is
`AutoSegModel(num_classes=)` and the loaders' `num_classes`). `RunConfig` is frozen and reads
like the mapping `flags.json` holds; it is the parsing layer only: the libraries take the
sections the flags become (`tf_autoseg.training.sections`), and the model's
`tf_autoseg.modeling.config.ModelConfig`, exactly `AutoSegModel`'s arguments, is made by
`model_config` alone. No TensorFlow: the programs parse and check flags before it loads
(`tf_autoseg.cli.run_flags` defines them with absl).
"""

import collections.abc
import dataclasses

from tf_autoseg.layers import orderings
from tf_autoseg.modeling.config import VARIANTS
from tf_autoseg.modeling.config import ModelConfig

_NOT_ADDED = object()


def _flag(kind, default, help, *, choices=None, resumable=False, added=_NOT_ADDED, formerly=None,
          unset=None, evaluate=False):  # fmt: skip
    meta = dict(kind=kind, help=help, choices=choices, resumable=resumable, formerly=formerly,
                unset=unset, evaluate=evaluate)  # fmt: skip
    if added is not _NOT_ADDED:
        meta["added"] = added
    return dataclasses.field(default=default, metadata=meta)


def integer(default, help, **meta):
    return _flag("integer", default, help, **meta)


def real(default, help, **meta):
    return _flag("float", default, help, **meta)


def string(default, help, **meta):
    return _flag("string", default, help, **meta)


def boolean(default, help, **meta):
    return _flag("bool", default, help, **meta)


def enum(default, choices, help, **meta):
    return _flag("enum", default, help, choices=tuple(choices), **meta)


def listing(default, help, **meta):
    return _flag("list", tuple(default), help, **meta)


class _Mapping(collections.abc.Mapping):
    """Read access by name, as in `flags.json`; `replace` for a changed copy."""

    def __getitem__(self, name):
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    @classmethod
    def _names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class RunConfig(_Mapping):
    """Every flag of a training run (see the module's docstring for the metadata)."""

    # Data.
    dataset: str = string(
        "synthetic", "the embedded synthetic scenes, ISPRS Potsdam, COCO-Stuff, a folder of "
        "images (with optional masks), the Dubai aerial set, CamVid street scenes; or a dataset "
        "registered with tf_autoseg.datasets.register.", evaluate=True,
    )  # fmt: skip
    data_dir: str = string(
        None, "Root folder of the dataset (not used by synthetic).", resumable=True, evaluate=True
    )
    num_classes: int = integer(
        3, "Classes K of the labels and the main head: Potsdam 6 or 3, COCO-Stuff 15 or 3, "
        "synthetic 2-6, Dubai 5, CamVid 3 or 11, folder: as many as its masks use.",
        formerly="classes", evaluate=True,
    )  # fmt: skip
    tile: int = integer(
        128, "Square tile side in pixels (dubai, camvid and folder tiles; COCO-Stuff's random "
        "training crop).", formerly="crop", evaluate=True,
    )  # fmt: skip
    downsample: int = integer(
        1, "dubai, camvid, folder: shrink images this many times (block mean; masks: block "
        "majority) before cutting tiles. Segment new imagery at the same scale.",
        added=1, evaluate=True,
    )  # fmt: skip
    min_side: int = integer(
        360, "cocostuff: keep images whose shorter side is at least this.", evaluate=True
    )
    min_target_share: float = real(
        0.75, "cocostuff: keep images with at least this share of target pixels.", evaluate=True
    )
    masks_dir: str = string(None, "folder: masks with the images' stems (optional).", evaluate=True)
    colours: str = string(None, "folder: JSON mapping mask colours to class ids.", evaluate=True)
    train_tiles: tuple = listing(
        ["1", "2", "3", "4", "5", "6"], "dubai: training tiles.", evaluate=True
    )
    eval_tiles: tuple = listing(["7", "8"], "dubai: held-out tiles (holdout mode).", evaluate=True)
    train_sequences: tuple = listing(
        [], "camvid: train on these video sequences' frames (0001TP, 0006R0, 0016E5; empty: "
        "the train-* frames).", added=[], evaluate=True,
    )  # fmt: skip
    eval_sequences: tuple = listing(
        [], "camvid: score on these sequences' frames (empty: val-*).", added=[], evaluate=True
    )
    synthetic_images: int = integer(64, "synthetic: number of training images.", evaluate=True)
    synthetic_size: int = integer(64, "synthetic: image height and width.", evaluate=True)

    # Input.
    pipeline: str = enum(
        "auto", ["auto", "memory", "stream"],
        "Training input: decoded into memory; streamed from the files inside tf.data (the same "
        "batches; folder, dubai, camvid, Potsdam crops); auto: streamed past 1 GiB of decoded "
        "pixels or with --data_service.", resumable=True, added="auto",
    )  # fmt: skip
    file_check: str = enum(
        "decode", ["decode", "header"],
        "Streamed input: decode every file once before training, with the in-memory reader, so "
        "that a file damaged in its middle is refused as in memory (decode), or read headers and "
        "file ends only (header: faster, for sets already checked).", resumable=True,
    )  # fmt: skip
    prepared_dir: str = string(
        "", "A folder written by `python -m tf_autoseg.prepare`: every part is read from its "
        "TFRecord shards (Potsdam TIFFs, COCO-Stuff; needed to stream those).", added="",
    )  # fmt: skip
    data_service_timeout: float = real(
        60.0, "Seconds to wait for the --data_service dispatcher to answer before giving up "
        "(with one line, exit 2).", resumable=True, added=60.0,
    )  # fmt: skip
    data_service: str = string(
        "", "grpc://host:port of a tf.data service dispatcher (`python -m "
        "tf_autoseg.data_service`) that runs the training input.", resumable=True, added="",
    )  # fmt: skip

    # Model: F = h o g_ar o d.
    variant: str = enum(
        "F2", ["F1", "F2", "F3", "F4", "F5", "random"],
        "Model variant of the slides' table (random: F2, never trained).",
    )  # fmt: skip
    width: int = integer(64, "Channels of the stem and of the autoregressive blocks.")
    stride: int = integer(4, "Output stride of the stem (1, 2 or 4).")
    ar_blocks: int = integer(None, "Masked residual blocks (default: the variant's).", unset=-1)
    front_blocks: int = integer(
        None, "Residual blocks of the front (default: the variant's).", unset=-1
    )
    attention_blocks: tuple = listing([], "Insert masked attention after these blocks (1-based).")
    attention_heads: int = integer(4, "Heads of each attention block.")
    dropout: float = real(0.0, "Dropout p inside the masked blocks.")
    overclustering: int = integer(
        None, "Clusters of the overclustering head (default: no such head).", unset=0
    )

    # Objective and views.
    objective: str = enum("ac", ["ac", "arl"], "AC (mutual information) or ARL (InfoNCE).")
    entropy_weight: float = real(1.0, "lambda of the AC loss (1 = mutual information).")
    over_entropy_weight: float = real(
        None, "lambda of the overclustering head's term (default: the same as "
        "--entropy_weight).", added=None, unset=-1.0,
    )  # fmt: skip
    marginal_momentum: float = real(
        0.0, "Moving average of the cluster marginals across steps in [0, 1) (0: each batch's "
        "own).", added=0.0,
    )  # fmt: skip
    labels_from: str = enum(
        "head", ["head", "mixture", "features", "overclustering"],
        "What the K labels of inference are: the main head's argmax (the paper's); mixture: a "
        "Gaussian mixture over the features and the pixels' colour, fitted without labels on "
        "training images after training (what the export serves), and again by evaluate "
        "(--adapt_labelling) and segment --adapt_labelling on the images they label; or K "
        "k-means centres on the autoregressive features or the overclustering head's "
        "probabilities.", added="head",
    )  # fmt: skip
    mixture_dims: int = integer(
        3, "--labels_from=mixture: the features' principal axes in the mixture's space.",
        added=3,
    )  # fmt: skip
    mixture_colour: bool = boolean(
        True, "--labels_from=mixture: the pixels' colour joins the features in the mixture's "
        "space.", added=True,
    )  # fmt: skip
    refine_iterations: int = integer(
        3, "Mean-field steps of the edge-aware refinement at full resolution after a "
        "labelling fitted without labels (0: none; the head is never refined).", added=0,
    )  # fmt: skip
    sobel: bool = boolean(
        False, "Sobel gradients of the grey level beside the input channels.", added=False
    )
    displacement: int = integer(0, "Half side of the AC displacement window.")
    per_offset: bool = boolean(
        False, "AC: one joint per offset of the displacement window, their mutual information "
        "averaged (IIC's uncollapsed loss), instead of one joint pooled over the window.",
        added=False,
    )  # fmt: skip
    ordering_types: str = enum(
        "raster", ["raster", "zigzag", "both"], "Which scans make up the set O of orderings."
    )
    num_orderings: int = integer(8, "|O|: 2, 4, 8 or 16 (16 needs --ordering_types=both).")
    sampling: str = enum("random", ["random", "no_repeat", "hard"], "How pairs are drawn.")
    photometric: bool = boolean(False, "Colour jitter per view.")
    geometric: str = enum(
        "none", ["none", "flip", "rotate", "flip_rotate"],
        "Transform of the second view, inverted on its output.",
    )  # fmt: skip
    temperature: float = real(0.1, "ARL temperature.")
    num_negatives: int = integer(255, "ARL negatives per positive.")

    # Optimisation.
    batch_size: int = integer(8, "Global batch size.", evaluate=True)
    steps: int = integer(1000, "Training steps in all.", resumable=True)
    checkpoint_every: int = integer(100, "Steps between checkpoints (divides --steps).")
    minutes: float = real(
        None, "Training budget in minutes of training time, summed over resumes: training "
        "stops after the step that spends it (--steps stays the cap and the length of the "
        "schedule). The run records the steps it reached.", resumable=True, added=None,
    )  # fmt: skip
    learning_rate: float = real(1e-4, "Adam learning rate.")
    lr_schedule: str = enum(
        "constant", ["constant", "cosine"], "constant, or cosine decay to 0 over --steps.",
        added="constant",
    )  # fmt: skip
    weight_ema: float = real(
        0.0, "Momentum of an exponential moving average of the weights, used for evaluation "
        "and export (0: none).", added=0.0,
    )  # fmt: skip
    precision: str = enum(
        "float32", ["float32", "mixed_bfloat16", "auto"],
        "Keras dtype policy; auto: time a few steps of this model in both on this machine and "
        "train in the faster.",
    )  # fmt: skip
    seed: int = integer(
        0, "Seeds initialisation, data order, orderings, augmentations.", evaluate=True
    )
    deterministic: bool = boolean(False, "TensorFlow op determinism (slower, reproducible).")
    distribution: str = enum(
        "auto", ["auto", "none", "mirrored", "multiworker"],
        "auto: multiworker when TF_CONFIG is set, mirrored on several GPUs.", resumable=True,
    )  # fmt: skip

    # Evaluation and outputs.
    run_dir: str = string(None, "Run directory: flags, checkpoints, logs, metrics.", resumable=True)
    eval_mode: str = enum(
        "same", ["same", "holdout"],
        "same: mapping fitted and scored on the evaluation set (IIC); holdout: fitted on "
        "labelled training data, scored on the held-out split.", resumable=True, evaluate=True,
    )  # fmt: skip
    eval_batches: int = integer(
        0, "Batches to evaluate (0: the whole evaluation set).", resumable=True, evaluate=True
    )
    log_every: int = integer(10, "Steps between TensorBoard loss and MI points.", resumable=True)
    summary_images: int = integer(4, "Images in each TensorBoard image summary.", resumable=True)
    export: bool = boolean(True, "Export a SavedModel after training.", resumable=True)
    export_dir: str = string("saved_models", "Folder of exported models.", resumable=True)
    export_name: str = string(
        None, "Exported model name (default: the run folder's name).", resumable=True
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):  # lists as tuples: frozen all the way down
            if field.metadata["kind"] == "list":
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))

    @classmethod
    def from_mapping(cls, values):
        """A config from flag values by name (a flags.json, a dict): older names and "not
        given" values read as today's; names it does not know are refused."""
        values = upgrade(values)
        unknown = set(values) - set(cls._names())
        if unknown:
            raise ValueError(f"unknown training flags: {', '.join(sorted(unknown))}")
        return cls(**values)


def model_config(flags):
    """The `ModelConfig` of training flags (a `RunConfig` or a mapping of its names): the
    variant's blocks unless given, the ordering set, attention blocks as numbers."""
    if not all(str(block).isdigit() for block in flags["attention_blocks"]):
        raise ValueError(
            f"--attention_blocks={list(flags['attention_blocks'])}: a comma-separated list of "
            "block numbers (1-based)."
        )
    count, types = flags["num_orderings"], flags["ordering_types"]
    if count not in (2, 4, 8, 16) or (count == 16 and types != "both"):
        raise ValueError(
            "`num_orderings` must be 2, 4, 8 or 16 (16 needs ordering_types='both'). "
            f"Received: num_orderings={count!r}, ordering_types={types!r}"
        )
    same = set(ModelConfig.names()) & set(RunConfig._names())
    blocks = {
        name: flags[name] for name in ("ar_blocks", "front_blocks") if flags[name] is not None
    }
    return ModelConfig.from_arguments(
        **{name: flags[name] for name in same - {"ar_blocks", "front_blocks", "attention_blocks"}},
        **{**VARIANTS[flags["variant"]], **blocks},
        attention_blocks=tuple(int(b) for b in flags["attention_blocks"]),
        input_downsample=flags["downsample"],
        orderings=tuple(orderings.default_set(types, count)),
    )


def fields(**metadata):
    """The fields of `RunConfig` whose metadata has these values (all, with none given)."""
    return [
        field for field in dataclasses.fields(RunConfig)
        if all(field.metadata.get(key) == value for key, value in metadata.items())
    ]  # fmt: skip


FIELDS = {field.name: field for field in fields()}
# What the metadata says, by name (what runs.py and the programs read).
RESUMABLE = frozenset(field.name for field in fields(resumable=True))
ADDED = {field.name: field.metadata["added"] for field in fields() if "added" in field.metadata}
EVALUATE = tuple(field.name for field in fields(evaluate=True))


def upgrade(values):
    """Flag values by name as today's flags read them: older names (`formerly`) renamed
    (`classes` -> `num_classes`), and the values that meant "not given" (`unset`) as None."""
    renamed = {f.metadata["formerly"]: f.name for f in fields() if f.metadata["formerly"]}
    unset = {f.name: f.metadata["unset"] for f in fields() if f.metadata["unset"] is not None}
    values = {renamed.get(name, name): value for name, value in values.items()}
    return {
        name: None if name in unset and value == unset[name] else value
        for name, value in values.items()
    }
