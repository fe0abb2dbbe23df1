"""Clients for a model exported by `tf_autoseg.export` and run by TensorFlow Serving.

`RestClient` posts to `/v1/models/<name>[/versions/<n>]:predict` in the
documented row (`instances`) or columnar (`inputs`) JSON form; `GrpcClient`
calls `tensorflow.serving.PredictionService/Predict` with the official
protos of the `tensorflow-serving-api` package. Both check the images before
sending (dtype, rank, channels, empty batch), split big batches into requests
of at most `batch_size` images, and turn timeouts and server errors into
`ServingError` (`ServingTimeout` for timeouts) carrying the HTTP status or
gRPC status code and the server's message.

Example (a server started as in README.md's "Deployment"):

    client = GrpcClient("localhost:8500", "autoseg", channels=3)
    labels = client.predict(images)  # uint8 (B, H, W, 3) -> int32 (B, H, W)
    labels, probabilities = client.predict(images, probabilities=True)

Long (about 400 lines) because it is the one owner of talking to TensorFlow Serving: the REST
and gRPC clients share the input checks, batching and error mapping kept here.
"""

import json
import re
import urllib.error
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tf_autoseg import arguments

# Input dtype of each signature that `tf_autoseg.export` writes.
SIGNATURE_DTYPES = {"serving_default": np.dtype(np.uint8), "serving_float": np.dtype(np.float32)}
INPUT = "images"
OUTPUTS = ("labels", "probabilities")
REQUEST_FORMATS = ("row", "columnar")
# gRPC refuses messages over 4 MiB by default; one 512x512 image with K=6
# probabilities is 6 MiB.
MAX_GRPC_MESSAGE_BYTES = 1 << 30


class ServingError(RuntimeError):
    """TensorFlow Serving answered with an error, or could not be reached.

    Attributes:
        code: the HTTP status (int) or the `grpc.StatusCode`, None if the
            server was not reached.
        details: the server's error message (the REST `error` field or the
            gRPC status details), None if there was none.
    """

    def __init__(self, message, code=None, details=None):
        super().__init__(message)
        self.code = code
        self.details = details


class ServingTimeout(ServingError, TimeoutError):
    """No answer within the client's `timeout`."""


def check_images(images, dtype=np.uint8, channels=None):
    """Returns `images` as a NumPy array after the checks the server would make.

    Args:
        images: array-like, (batch, height, width, channels).
        dtype: the dtype the signature takes (uint8 for `serving_default`,
            float32 in [0, 1] for `serving_float`).
        channels: the model's channels, or None not to check them.

    Returns:
        The images as a NumPy array of `dtype`.

    Raises:
        TypeError: another dtype.
        ValueError: not rank 4, other channels, an empty batch or empty
            images, or float values outside [0, 1].
    """
    array = np.asarray(images)
    dtype = np.dtype(dtype)
    if array.dtype != dtype:
        hint = (
            " (float32 images in [0, 1] go to signature_name='serving_float')"
            if dtype == np.uint8
            else ""
        )
        raise TypeError(
            f"`images` must have dtype {dtype.name}{hint}. Received: dtype={array.dtype.name}"
        )
    if array.ndim != 4:
        raise ValueError(
            "`images` must be rank 4, (batch, height, width, channels); for one image use "
            f"images[None]. Received: shape={array.shape}"
        )
    if channels is not None and array.shape[-1] != channels:
        raise ValueError(
            f"`images` must have {channels} channels (the model's). Received: shape={array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"`images` is an empty batch. Received: shape={array.shape}")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"`images` must be at least 1x1 pixels. Received: shape={array.shape}")
    if dtype.kind == "f" and not (np.all(array >= 0.0) and np.all(array <= 1.0)):
        raise ValueError("float `images` must be in [0, 1] (NaN is not)")
    return array


class _Client:
    """What both clients share: argument checks, validation, batching."""

    def __init__(self, model_name, version, signature_name, timeout, batch_size, channels):
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(
                f"`model_name` must be a non-empty string. Received: model_name={model_name!r}"
            )
        version = arguments.optional_integer("version", version)
        arguments.choice("signature_name", signature_name, tuple(SIGNATURE_DTYPES))
        timeout = arguments.positive("timeout", timeout)
        batch_size = arguments.integer("batch_size", batch_size)
        channels = arguments.optional_integer("channels", channels)
        self.model_name = model_name
        self.version = version
        self.signature_name = signature_name
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.channels = channels

    def predict(self, images, probabilities=False):
        """Label maps (and optionally probabilities) of `images` from the server.

        Args:
            images: (batch, height, width, channels), uint8 for
                `serving_default`, float32 in [0, 1] for `serving_float`;
                sent in requests of at most `batch_size` images.
            probabilities: also return the probabilities.

        Returns:
            int32 labels (batch, height, width); with `probabilities=True`, a
            tuple (labels, float32 probabilities (batch, height, width, K)).

        Raises:
            TypeError, ValueError: `images` fails the checks of `check_images`.
            ServingError: the server answered with an error or could not be
                reached; `ServingTimeout` when it did not answer in time.
        """
        images = check_images(images, SIGNATURE_DTYPES[self.signature_name], self.channels)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            outputs = self._predict(chunk, probabilities)
            results.append(self._checked(outputs, chunk.shape, probabilities))
        labels = np.concatenate([r[0] for r in results])
        if not probabilities:
            return labels
        return labels, np.concatenate([r[1] for r in results])

    def _checked(self, outputs, shape, probabilities):
        names = OUTPUTS if probabilities else OUTPUTS[:1]
        missing = [name for name in names if name not in outputs]
        if missing:
            raise ServingError(
                f"{self._where()} answered without outputs {missing} "
                f"(got {sorted(outputs)}): is it a tf_autoseg export?"
            )
        labels = np.asarray(outputs["labels"]).astype(np.int32, copy=False)
        if labels.shape != shape[:3]:
            raise ServingError(
                f"{self._where()} answered labels of shape {labels.shape} for images of "
                f"shape {shape}; expected {shape[:3]}"
            )
        if not probabilities:
            return (labels,)
        probs = np.asarray(outputs["probabilities"], np.float32)
        if probs.shape[:3] != shape[:3] or probs.ndim != 4:
            raise ServingError(
                f"{self._where()} answered probabilities of shape {probs.shape} for images of "
                f"shape {shape}; expected {shape[:3]} + (K,)"
            )
        return labels, probs

    def _predict(self, images, probabilities):
        raise NotImplementedError

    def _where(self):
        raise NotImplementedError


class RestClient(_Client):
    """Client of TensorFlow Serving's REST predict API.

    Args:
        url: the server's REST root, e.g. "http://localhost:8501".
        model_name: the name the model is served under.
        version: a version number, or None for the server's choice (the latest).
        signature_name: "serving_default" (uint8 images) or "serving_float".
        request_format: "row" (`{"instances": [...]}`) or "columnar"
            (`{"inputs": {"images": [...]}}`).
        timeout: seconds to wait to connect and for each read of an answer.
        batch_size: most images per request.
        channels: the model's channels, checked before sending; None not to check.

    Example:

        client = RestClient("http://localhost:8501", "autoseg", channels=3)
        labels = client.predict(np.zeros((2, 64, 48, 3), np.uint8))  # (2, 64, 48) int32
    """

    def __init__(
        self,
        url,
        model_name,
        version=None,
        signature_name="serving_default",
        request_format="row",
        timeout=30.0,
        batch_size=8,
        channels=None,
    ):
        super().__init__(model_name, version, signature_name, timeout, batch_size, channels)
        if not isinstance(url, str) or not re.match(r"^https?://[^/]+", url):
            raise ValueError(
                f"`url` must be http(s)://host:port of the REST API. Received: url={url!r}"
            )
        if request_format not in REQUEST_FORMATS:
            raise ValueError(
                f"`request_format` must be one of {REQUEST_FORMATS}. "
                f"Received: request_format={request_format!r}"
            )
        self.url = url.rstrip("/")
        self.request_format = request_format

    @property
    def predict_url(self):
        """The URL requests are posted to."""
        version = "" if self.version is None else f"/versions/{self.version}"
        return f"{self.url}/v1/models/{self.model_name}{version}:predict"

    def _where(self):
        return f"TensorFlow Serving at {self.predict_url}"

    def _predict(self, images, probabilities):
        body = {"signature_name": self.signature_name}
        if self.request_format == "row":
            body["instances"] = images.tolist()
        else:
            body["inputs"] = {INPUT: images.tolist()}
        request = urllib.request.Request(
            self.predict_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            details = _error_field(error.read())
            raise ServingError(
                f"{self._where()} answered HTTP {error.code}: {details}",
                code=error.code,
                details=details,
            ) from error
        except TimeoutError as error:
            raise ServingTimeout(
                f"{self._where()} did not answer within timeout={self.timeout} s"
            ) from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise ServingTimeout(
                    f"{self._where()} did not answer within timeout={self.timeout} s"
                ) from error
            raise ServingError(f"could not reach {self._where()}: {error.reason}") from error
        try:
            answer = json.loads(text)
        except ValueError as error:
            raise ServingError(f"{self._where()} answered with invalid JSON: {error}") from error
        if "outputs" in answer and isinstance(answer["outputs"], dict):
            return answer["outputs"]
        predictions = answer.get("predictions")
        if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
            raise ServingError(
                f"{self._where()} answered neither 'predictions' (a list of objects with "
                f"{OUTPUTS}) nor 'outputs'. Received keys: {sorted(answer)}"
            )
        return {name: [p.get(name) for p in predictions] for name in predictions[0]}


def _error_field(body):
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:1000] or "(empty body)"


class GrpcClient(_Client):
    """Client of TensorFlow Serving's gRPC `PredictionService.Predict`.

    Args:
        target: the server's gRPC address, e.g. "localhost:8500".
        model_name: the name the model is served under.
        version: a version number, or None for the server's choice (the latest).
        signature_name: "serving_default" (uint8 images) or "serving_float".
        timeout: seconds to wait for each request (the gRPC deadline).
        batch_size: most images per request.
        channels: the model's channels, checked before sending; None not to check.
        credentials: `grpc.ChannelCredentials` for a TLS channel; None for an
            insecure one.

    Use as a context manager, or call `close()`, to release the channel.

    Example:

        with GrpcClient("localhost:8500", "autoseg", channels=3) as client:
            labels, probs = client.predict(images, probabilities=True)
    """

    def __init__(
        self,
        target,
        model_name,
        version=None,
        signature_name="serving_default",
        timeout=30.0,
        batch_size=8,
        channels=None,
        credentials=None,
    ):
        super().__init__(model_name, version, signature_name, timeout, batch_size, channels)
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(f"`target` must be 'host:port'. Received: target={target!r}")
        self.target = target
        options = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _where(self):
        version = "" if self.version is None else f" version {self.version}"
        return f"TensorFlow Serving at {self.target} (model {self.model_name!r}{version})"

    def _predict(self, images, probabilities):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(images))
        request.output_filter.extend(OUTPUTS if probabilities else OUTPUTS[:1])
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeout(
                    f"{self._where()} did not answer within timeout={self.timeout} s",
                    code=code,
                    details=details,
                ) from error
            if code == grpc.StatusCode.UNAVAILABLE:
                message = f"could not reach {self._where()}: {details}"
            else:
                message = f"{self._where()} answered {code.name}: {details}"
            raise ServingError(message, code=code, details=details) from error
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self):
        """Closes the channel."""
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
