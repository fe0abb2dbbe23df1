"""The data flags the programs share (train, evaluate through train's, prepare), defined once.

`--dataset` and `--classes` stay with each program: they accept and default differently.
"""

from absl import flags


def define():
    """Defines the shared data flags (once per process: a program calls it when it defines its
    own); the caller adopts them as its key flags, so that its `--help` lists them."""
    flags.DEFINE_string("data_dir", None, "Root folder of the dataset (not used by synthetic).")
    flags.DEFINE_integer(
        "crop", 128, "Square crop or tile side in pixels (dubai, camvid and folder tiles; "
        "COCO-Stuff's training crop).",
    )  # fmt: skip
    flags.DEFINE_integer(
        "downsample", 1,
        "dubai, camvid, folder: shrink images this many times (block mean; masks: block "
        "majority) before cutting tiles. Segment new imagery at the same scale.",
    )  # fmt: skip
    flags.DEFINE_integer(
        "min_side", 360, "cocostuff: keep images whose shorter side is at least this."
    )
    flags.DEFINE_float(
        "min_target_share",
        0.75,
        "cocostuff: keep images with at least this share of target pixels.",
    )
    flags.DEFINE_string("masks_dir", None, "folder: masks with the images' stems (optional).")
    flags.DEFINE_string("colours", None, "folder: JSON mapping mask colours to class ids.")
    flags.DEFINE_list("train_tiles", ["1", "2", "3", "4", "5", "6"], "dubai: training tiles.")
    flags.DEFINE_list("eval_tiles", ["7", "8"], "dubai: held-out tiles (holdout mode).")
    flags.DEFINE_list("train_sequences", [], "camvid: train on these video sequences' frames "
                      "(0001TP, 0006R0, 0016E5; empty: the train-* frames).")  # fmt: skip
    flags.DEFINE_list(
        "eval_sequences", [], "camvid: score on these sequences' frames (empty: val-*)."
    )
