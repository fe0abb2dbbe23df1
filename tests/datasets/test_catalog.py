"""The dataset catalog: datasets registered as objects, their checks of a DataConfig, and the
DataConfig's own (tests/cli/test_commands.py registers one through an entry point)."""

import pytest

from tf_autoseg import datasets
from tf_autoseg.datasets import DataConfig
from tf_autoseg.datasets import camvid


def test_built_in_datasets_are_objects_with_their_modules_callables():
    assert datasets.NAMES == ("synthetic", "potsdam", "cocostuff", "folder", "dubai", "camvid")
    assert datasets.get("camvid") is camvid.DATASET
    assert camvid.DATASET.read is camvid.read_part and camvid.DATASET.checks is camvid.check_part
    assert datasets.PREPARED == ("potsdam", "cocostuff", "folder", "dubai", "camvid")
    assert datasets.get("cocostuff").streamed is None  # streams only once prepared
    with pytest.raises(ValueError, match="`read` must be a callable. Received: read='my.module'"):
        datasets.Dataset("mine", "my.module")


def test_a_dataset_checks_the_data_config_before_any_file_is_read(tmp_path):
    camvid_data = DataConfig(dataset="camvid", data_dir=str(tmp_path), sequences=("0016E6",))
    with pytest.raises(ValueError, match=r"`sequences` must be one of .*Received: sequences="):
        datasets.get("camvid").check(camvid_data)
    with pytest.raises(ValueError, match="`data_dir` is required for dataset='dubai'"):
        datasets.get("dubai").check(DataConfig(dataset="dubai", num_classes=5))
    datasets.get("dubai").check(DataConfig(dataset="dubai", num_classes=5, prepared_dir=None,
                                           data_dir=str(tmp_path)))  # fmt: skip
    with pytest.raises(ValueError, match=r"one of \(5,\) for dataset='dubai'"):
        datasets.get("dubai").check(DataConfig(dataset="dubai", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="`downsample` applies to folder, dubai, camvid, not"):
        datasets.get("synthetic").check(DataConfig(downsample=2))
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        DataConfig(batch_size=0)
    assert DataConfig(tiles=[1, 2]).tiles == (1, 2)  # frozen all the way down
