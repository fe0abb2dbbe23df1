"""`DataConfig`: one part of a dataset as a run reads it (which examples, and how), no TensorFlow.

A training run holds two, Model Garden's `train_data` and `validation_data`: the training
part (images only) and the evaluation part (with labels). A dataset's callables
(`tf_autoseg.datasets.Dataset`) take the fields they need from it, each named as the argument
of the dataset's own `load`; `tf_autoseg.training.inputs.build` reads it in memory, streamed,
from prepared records or through tf.data service. The training flags become DataConfigs in
`tf_autoseg.training.sections.data_config`.
"""

import dataclasses

from tf_autoseg import arguments
from tf_autoseg.data import service
from tf_autoseg.data.images import MIN_TILE

PARTS = ("train", "eval")
PIPELINES = ("auto", "memory", "stream")
FILE_CHECKS = ("decode", "header")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """One part of a dataset, checked when made: a bad value is a ValueError naming it.

    Which examples:
        dataset: a registered name (`tf_autoseg.datasets.names()`).
        part: "train" or "eval", the dataset's own split for each (CamVid's val frames,
            Potsdam's test crops, ...); a dataset without an evaluation split has "train" only.
        data_dir: the dataset's folder (None for generated data, or read from `prepared_dir`).
        num_classes: classes of the labels.
        tile: side of the square tiles (or training crops) in pixels, at least `MIN_TILE` (8).
        downsample: shrink images (block mean; labels block majority) this many times first.
        tiles: dubai: the `tile-N` folders of the part.
        sequences: camvid: the video sequences of the part (empty: the split's frames).
        masks_dir, colours: folder: masks with the images' stems, and a JSON file mapping mask
            colours to class ids (without it masks hold class ids).
        min_side, min_target_share, scale: cocostuff: IIC's curation and image scale.
        synthetic_images, synthetic_size: synthetic: number of scenes and their side.

    How they are read:
        batch_size, seed: batches, and the seed of their order, crops and flips.
        pipeline: the training part in memory, streamed from its files ("stream"), or
            streamed past 1 GiB of decoded pixels or with `data_service` ("auto").
        file_check: streamed: decode every file once before training ("decode"), or read
            headers and file ends only ("header").
        prepared_dir: a folder of `python -m tf_autoseg.prepare`: the part is read from it.
        data_service, data_service_timeout: grpc://host:port of a tf.data service dispatcher
            that runs the training part, and the seconds to wait for it to answer.
    """

    dataset: str = "synthetic"
    part: str = "train"
    data_dir: str | None = None
    num_classes: int = 3
    tile: int = 128
    downsample: int = 1
    tiles: tuple = ()
    sequences: tuple = ()
    masks_dir: str | None = None
    colours: str | None = None
    min_side: int = 360
    min_target_share: float = 0.75
    scale: float = 1 / 3
    synthetic_images: int = 64
    synthetic_size: int = 64
    batch_size: int = 8
    seed: int = 0
    pipeline: str = "auto"
    file_check: str = "decode"
    prepared_dir: str | None = None
    data_service: str | None = None
    data_service_timeout: float = 60.0

    def __post_init__(self):
        arguments.choice("part", self.part, PARTS)
        arguments.integer("num_classes", self.num_classes, 2)
        arguments.integer("tile", self.tile, MIN_TILE)
        for name in ("downsample", "synthetic_images", "synthetic_size", "batch_size"):
            arguments.integer(name, getattr(self, name))
        arguments.integer("seed", self.seed, 0)
        arguments.choice("pipeline", self.pipeline, PIPELINES)
        arguments.choice("file_check", self.file_check, FILE_CHECKS)
        arguments.positive("data_service_timeout", self.data_service_timeout)
        if self.data_service:
            service.check_address(self.data_service)
            if self.pipeline == "memory" and not self.prepared_dir:
                raise ValueError(
                    "`data_service` needs pipeline='stream' or 'auto' (or a `prepared_dir`): an "
                    "in-memory pipeline ships every pixel to the dispatcher in its graph. "
                    f"Received: data_service={self.data_service!r}, pipeline='memory'"
                )
        for name in ("tiles", "sequences"):  # frozen all the way down
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def replace(self, **changes):
        """A copy with `changes`, checked as the original was."""
        return dataclasses.replace(self, **changes)
