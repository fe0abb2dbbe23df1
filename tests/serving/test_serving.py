"""Serving clients against TEST STAND-INS of TensorFlow Serving (tests/support/serving_standins.py).

The stand-ins run the export through TensorFlow's own SavedModel loader and
answer the documented gRPC and REST predict APIs; TensorFlow Serving's binary
cannot be installed here.
"""

import grpc
import numpy as np
import pytest
from support import serving_standins

from tf_autoseg import AutoSegModel
from tf_autoseg.serving import export
from tf_autoseg.serving.model_server import GrpcClient
from tf_autoseg.serving.model_server import RestClient
from tf_autoseg.serving.model_server import ServingError
from tf_autoseg.serving.model_server import ServingTimeout
from tf_autoseg.serving.model_server import check_images

NAME = "tiny"
# Labels are compared where the top two probabilities differ by more than this
# (elsewhere float rounding may break the tie either way).
TIE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = AutoSegModel.variant(
        "F2", 3, (16, 16, 3), width=8, attention_heads=2, stride=2, ar_blocks=2
    )
    base = tmp_path_factory.mktemp("saved_models")
    export.export_model(model, NAME, base)
    return model, base / NAME


@pytest.fixture(scope="module")
def predictor(exported):
    return serving_standins.SavedModelPredictor({NAME: exported[1]})


@pytest.fixture(scope="module")
def grpc_target(predictor):
    with serving_standins.serve_grpc(predictor) as target:
        yield target


@pytest.fixture(scope="module")
def rest_url(predictor):
    with serving_standins.serve_rest(predictor) as url:
        yield url


@pytest.fixture(autouse=True)
def _reset(request):
    if "predictor" in request.fixturenames:
        stand_in = request.getfixturevalue("predictor")
        stand_in.delay_s = 0.0
        stand_in.batch_sizes.clear()


def _images(shape=(3, 17, 23, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _assert_matches_model(model, images, labels, probabilities=None):
    expected = model(images).numpy()
    top2 = np.sort(expected, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > TIE
    assert clear.mean() > 0.9, "too many ties to compare labels"
    assert labels.dtype == np.int32 and labels.shape == expected.shape[:3]
    np.testing.assert_array_equal(labels[clear], expected.argmax(-1)[clear])
    if probabilities is not None:
        assert probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_grpc_client_labels_equal_the_model_in_batches(exported, predictor, grpc_target):
    model, _ = exported
    images = _images()
    with GrpcClient(grpc_target, NAME, batch_size=2, channels=3) as client:
        labels, probabilities = client.predict(images, probabilities=True)
        assert predictor.batch_sizes == [2, 1]
        only_labels = client.predict(images[:1])
    _assert_matches_model(model, images, labels, probabilities)
    np.testing.assert_array_equal(only_labels, labels[:1])


@pytest.mark.parametrize("request_format", ["row", "columnar"])
def test_rest_client_labels_equal_the_model(exported, predictor, rest_url, request_format):
    model, _ = exported
    images = _images((3, 9, 40, 3), seed=1)
    client = RestClient(rest_url, NAME, version=1, request_format=request_format, batch_size=2)
    labels, probabilities = client.predict(images, probabilities=True)
    assert predictor.batch_sizes == [2, 1]
    _assert_matches_model(model, images, labels, probabilities)


def test_float_signature_through_both_clients(exported, grpc_target, rest_url):
    model, _ = exported
    images = _images((2, 12, 12, 3), seed=2).astype(np.float32) / 255.0
    with GrpcClient(grpc_target, NAME, signature_name="serving_float") as client:
        grpc_labels = client.predict(images)
    rest_labels = RestClient(rest_url, NAME, signature_name="serving_float").predict(images)
    _assert_matches_model(model, images, grpc_labels)
    np.testing.assert_array_equal(rest_labels, grpc_labels)


BAD_IMAGES = [
    (np.zeros((1, 8, 8, 3), np.float32), TypeError, "must have dtype uint8"),
    (np.zeros((8, 8, 3), np.uint8), ValueError, "must be rank 4"),
    (np.zeros((1, 8, 8, 4), np.uint8), ValueError, "must have 3 channels"),
    (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty batch"),
]


@pytest.mark.parametrize("images,error,match", BAD_IMAGES)
def test_clients_refuse_bad_images_before_sending(
    predictor, grpc_target, rest_url, images, error, match
):
    with GrpcClient(grpc_target, NAME, channels=3) as client:
        with pytest.raises(error, match=match):
            client.predict(images)
    with pytest.raises(error, match=match):
        RestClient(rest_url, NAME, channels=3).predict(images)
    assert predictor.batch_sizes == [], "nothing may reach the server"


def test_float_images_outside_unit_range_are_refused():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_images(np.full((1, 4, 4, 3), 1.5, np.float32), np.float32)


def test_signature_errors_reach_the_caller_with_the_servers_message(grpc_target, rest_url):
    wrong_channels = np.zeros((1, 8, 8, 4), np.uint8)  # no channels given: the server checks
    with GrpcClient(grpc_target, NAME) as client:
        with pytest.raises(ServingError, match="INVALID_ARGUMENT") as grpc_error:
            client.predict(wrong_channels)
    assert "[?,?,?,3]" in grpc_error.value.details
    with pytest.raises(ServingError, match="HTTP 400") as rest_error:
        RestClient(rest_url, NAME).predict(wrong_channels)
    assert rest_error.value.code == 400 and "[?,?,?,3]" in rest_error.value.details


def test_unknown_model_and_version_are_not_found(grpc_target, rest_url):
    images = _images((1, 8, 8, 3))
    # The package's part: the status as a ServingError, with the server's own details passed
    # on (whatever its wording).
    with GrpcClient(grpc_target, "missing") as client:
        with pytest.raises(ServingError, match="NOT_FOUND") as grpc_error:
            client.predict(images)
    assert grpc_error.value.details
    with pytest.raises(ServingError, match="HTTP 404") as error:
        RestClient(rest_url, NAME, version=7).predict(images)
    assert error.value.code == 404 and error.value.details


def test_slow_server_raises_timeout(predictor, grpc_target, rest_url):
    predictor.delay_s = 1.0
    images = _images((1, 8, 8, 3))
    with GrpcClient(grpc_target, NAME, timeout=0.2) as client:
        with pytest.raises(ServingTimeout, match="timeout=0.2"):
            client.predict(images)
    with pytest.raises(TimeoutError, match="timeout=0.2"):
        RestClient(rest_url, NAME, timeout=0.2).predict(images)


def test_unreachable_server_is_named():
    with pytest.raises(ServingError, match="could not reach.*127.0.0.1:9"):
        RestClient("http://127.0.0.1:9", NAME, timeout=2).predict(_images((1, 4, 4, 3)))
    with GrpcClient("127.0.0.1:9", NAME, timeout=2) as client:
        with pytest.raises(ServingError, match="could not reach.*127.0.0.1:9") as error:
            client.predict(_images((1, 4, 4, 3)))
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(model_name=""), "`model_name` must be a non-empty string"),
        (dict(version=0), "`version` must be None or a positive int"),
        (dict(signature_name="predict"), "`signature_name` must be one of"),
        (dict(timeout=0), "`timeout` must be a positive number"),
        (dict(channels=0), "`channels` must be None or a positive int"),
        (dict(batch_size=0), "`batch_size` must be a positive int"),
        (dict(batch_size=True), "`batch_size` must be a positive int"),
        (dict(request_format="csv"), "`request_format` must be one of"),
        (dict(url="localhost:8501"), "`url` must be http"),
    ],
)
def test_bad_client_arguments_are_named(kwargs, match):
    arguments = dict(url="http://localhost:8501", model_name=NAME)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RestClient(**arguments)
