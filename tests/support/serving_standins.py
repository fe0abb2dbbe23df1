"""TEST STAND-INS for TensorFlow Serving (its binary cannot be installed here).

Two local servers on 127.0.0.1 that answer the documented predict APIs of
TensorFlow Serving by running the exported SavedModel through TensorFlow's own
loader (`tf.saved_model.load`) and its signatures:

- `serve_grpc`: a gRPC server implementing `PredictionServiceServicer.Predict`
  from the `tensorflow-serving-api` protos;
- `serve_rest`: an `http.server` answering `POST /v1/models/<name>[/versions/<n>]:predict`
  in the row (`instances` -> `predictions`) and columnar (`inputs` -> `outputs`)
  JSON forms, errors as `{"error": ...}` with the HTTP status TensorFlow
  Serving uses (400 invalid argument, 404 not found).

They stand in for the server in tests of the clients; they are not a server
to deploy. `SavedModelPredictor.delay_s` delays every answer (timeout tests)
and `.batch_sizes` records the images per request (batching tests).
"""

import contextlib
import json
import re
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

MAX_MESSAGE_BYTES = 1 << 30
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "INTERNAL": 500}


class StandInError(Exception):
    """A predict failure with the canonical status code name TensorFlow Serving would use."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class SavedModelPredictor:
    """TEST STAND-IN for TensorFlow Serving's model manager: loads and runs exports.

    Args:
        models: dict model name -> base path holding numbered version folders
            (the `models.config` layout).
    """

    def __init__(self, models):
        self._versions = {
            name: {int(p.name): p for p in Path(base).iterdir() if p.name.isdigit()}
            for name, base in models.items()
        }
        self._loaded = {}
        self._lock = threading.Lock()
        self.delay_s = 0.0
        self.batch_sizes = []

    def _load(self, name, version):
        if name not in self._versions or not self._versions[name]:
            raise StandInError("NOT_FOUND", f"Servable not found for request: Latest({name})")
        versions = self._versions[name]
        version = max(versions) if version is None else version
        if version not in versions:
            raise StandInError(
                "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
            )
        with self._lock:
            if (name, version) not in self._loaded:
                self._loaded[name, version] = tf.saved_model.load(str(versions[version]))
        return version, self._loaded[name, version]

    def input_dtypes(self, name, version, signature_name):
        """Input name -> NumPy dtype of a signature."""
        signature = self._signature(name, version, signature_name)[1]
        return {
            k: v.dtype.as_numpy_dtype for k, v in signature.structured_input_signature[1].items()
        }

    def _signature(self, name, version, signature_name):
        version, loaded = self._load(name, version)
        signature_name = signature_name or "serving_default"
        if signature_name not in loaded.signatures:
            raise StandInError(
                "INVALID_ARGUMENT",
                f'Serving signature name: "{signature_name}" not found in signature def',
            )
        return version, loaded.signatures[signature_name]

    def predict(self, name, version, signature_name, inputs, output_filter=()):
        """Runs a signature; returns (version, dict output name -> NumPy array)."""
        time.sleep(self.delay_s)
        version, signature = self._signature(name, version, signature_name)
        expected = set(signature.structured_input_signature[1])
        if set(inputs) != expected:
            raise StandInError(
                "INVALID_ARGUMENT",
                f"input keys {sorted(inputs)} do not match the signature's {sorted(expected)}",
            )
        self.batch_sizes.append(len(next(iter(inputs.values()))))
        try:
            outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
            message = getattr(error, "message", None) or str(error)
            raise StandInError("INVALID_ARGUMENT", message) from error
        unknown = set(output_filter) - set(outputs)
        if unknown:
            raise StandInError("INVALID_ARGUMENT", f"output_filter names unknown outputs {unknown}")
        names = output_filter or list(outputs)
        return version, {k: outputs[k].numpy() for k in names}


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TEST STAND-IN for TensorFlow Serving's gRPC PredictionService (Predict only)."""

    def __init__(self, predictor):
        self.predictor = predictor

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            version, outputs = self.predictor.predict(
                spec.name, version, spec.signature_name, inputs, list(request.output_filter)
            )
        except StandInError as error:
            context.abort(getattr(grpc.StatusCode, error.code), str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


@contextlib.contextmanager
def serve_grpc(predictor):
    """TEST STAND-IN gRPC server on 127.0.0.1; yields its "127.0.0.1:<port>"."""
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _PredictionService(predictor), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


_PREDICT_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?:predict$")


def _to_array(value, dtype, what):
    array = np.asarray(value)
    if array.dtype == object or (
        np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer)
    ):
        raise StandInError(
            "INVALID_ARGUMENT", f"{what}: JSON values do not form a {np.dtype(dtype).name} tensor"
        )
    return array.astype(dtype)


def _parse_body(body, dtypes):
    """The inputs of a predict request body and whether it is the row format."""
    if ("instances" in body) == ("inputs" in body):
        raise StandInError(
            "INVALID_ARGUMENT", "JSON body must hold exactly one of 'instances' and 'inputs'"
        )
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise StandInError("INVALID_ARGUMENT", "'instances' must be a list")
        if instances and all(isinstance(i, dict) for i in instances):
            inputs = {k: [i.get(k) for i in instances] for k in dtypes}
        elif len(dtypes) == 1:
            inputs = {next(iter(dtypes)): instances}
        else:
            raise StandInError("INVALID_ARGUMENT", "'instances' must name the inputs")
        return inputs, True
    inputs = body["inputs"]
    if not isinstance(inputs, dict):
        inputs = {next(iter(dtypes)): inputs}
    return inputs, False


class _RestHandler(BaseHTTPRequestHandler):
    """TEST STAND-IN for TensorFlow Serving's REST predict API."""

    predictor = None  # set on the subclass made by serve_rest

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
        del format, args  # quiet test output

    def _answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's method name)
        match = _PREDICT_PATH.match(self.path)
        try:
            if not match:
                raise StandInError("NOT_FOUND", f"Malformed request: POST {self.path}")
            name, version = match["name"], match["version"]
            version = None if version is None else int(version)
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as error:
                raise StandInError("INVALID_ARGUMENT", f"JSON Parse error: {error}") from error
            signature_name = body.get("signature_name", "serving_default")
            dtypes = self.predictor.input_dtypes(name, version, signature_name)
            inputs, row = _parse_body(body, dtypes)
            inputs = {k: _to_array(v, dtypes.get(k, np.float32), k) for k, v in inputs.items()}
            _, outputs = self.predictor.predict(name, version, signature_name, inputs)
        except StandInError as error:
            self._answer(HTTP_STATUS.get(error.code, 500), {"error": str(error)})
            return
        if row:
            count = len(next(iter(outputs.values())))
            predictions = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(count)]
            self._answer(200, {"predictions": predictions})
        else:
            self._answer(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})


@contextlib.contextmanager
def serve_rest(predictor):
    """TEST STAND-IN REST server on 127.0.0.1 (port 0); yields its "http://127.0.0.1:<port>"."""
    handler = type("Handler", (_RestHandler,), {"predictor": predictor})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
