"""What the cluster-naming page shows and serves: clusters over a sample of a user's images.

`python -m tf_autoseg.name_clusters` (the program is `tf_autoseg.cli.name_clusters`) labels a
seeded sample of a folder's images with one head of a model, once, and serves a local page:
per cluster its share of the pixels, example patches with the cluster outlined, and whole
images with a colour overlay that follows the names and colours typed on the page. Saving
writes a `classes.json` (`tf_autoseg.serving.classes`).

- `ClusterSample` computes and holds everything the page needs, in memory: display-size
  images and label maps (at most `display_side` pixels a side), pixel counts, patch places.
  It is filled by `compute` (in a background thread, so the page answers at once with its
  progress), then read only; PNGs are encoded on request and memoised.
- `make_server` is a threading HTTP server (`tf_autoseg.serving.page_server`: bounded
  connections, idle ones closed) with a fixed route table: no URL names a file, so nothing
  outside the sample can be served (anything else is 404). It answers only requests whose
  `Host` names it (`page_server.host_names`: the address it was asked to bind, and off
  loopback the machine's own names; a DNS-rebinding page gets 403), and a save must be a
  same-origin JSON POST from one of those names.

Long (about 380 lines) because the page's server and the data it serves change together;
the page itself is `naming_page.html`, the mapping `tf_autoseg.serving.classes`.
"""

import functools
import io
import json
import re
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from absl import logging

from tf_autoseg.serving import classes as named_classes
from tf_autoseg.serving import page_server

PATCHES = 6  # example patches per cluster
PATCH = 96  # their side, in display pixels
PAGE = Path(__file__).with_name("naming_page.html")
_MAX_BODY = 1 << 20


def sample_files(files, count, seed=0):
    """`count` of `files` (all when fewer), chosen with `seed`, in their listed order."""
    if count >= len(files):
        return list(files)
    chosen = np.random.default_rng(seed).choice(len(files), count, replace=False)
    return [files[i] for i in sorted(chosen)]


def _shrink(array, side, labels=False):
    """`array` (H, W[, C]) scaled so that its longer side is at most `side`."""
    from PIL import Image

    height, width = array.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if labels:  # cluster ids: nearest, from int32 ('I' mode)
        return np.asarray(Image.fromarray(array.astype(np.int32)).resize(size, Image.NEAREST))
    return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR))


def _png(array):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _box_mean(mask, size):
    """Mean of `mask` over `size` x `size` windows, at each window's top-left corner."""
    total = np.pad(mask.astype(np.float32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (total[size:, size:] - total[:-size, size:] - total[size:, :-size] + total[:-size, :-size]) / (size * size)  # fmt: skip


class ClusterSample:
    """The sampled images, their cluster maps and per-cluster summaries (see the module doc).

    Args:
        files: the sampled image paths.
        num_clusters: the head's cluster count.
        display_side: longest side of the images kept for the page.
    """

    def __init__(self, files, num_clusters, display_side=384):
        self.files = list(files)
        self.num_clusters = num_clusters
        self.display_side = display_side
        self.images = []  # (h, w, 3) uint8, display size
        self.labels = []  # (h, w) int32 cluster ids, display size
        self.counts = np.zeros(num_clusters, np.int64)  # pixels, at the model's resolution
        self.skipped = []  # (path, reason)
        self.patches = None  # cluster -> [(image index, top, left)], once done
        self.done = 0
        self.ready = False
        self.error = None
        self.seconds = None

    def add(self, path, image, labels):
        """Adds one image (H, W, C) and its (H, W) cluster ids, at the model's resolution."""
        self.counts += np.bincount(labels.ravel(), minlength=self.num_clusters)[: self.num_clusters]
        rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
        self.images.append(_shrink(np.ascontiguousarray(rgb), self.display_side))
        self.labels.append(_shrink(labels, self.display_side, labels=True).astype(np.int32))

    def finish(self):
        """Chooses the example patches: for each cluster, the images where it is densest."""
        patches = {k: [] for k in range(self.num_clusters)}
        for index, labels in enumerate(self.labels):
            size = min(PATCH, *labels.shape)
            for k in np.unique(labels):
                density = _box_mean(labels == k, size)
                top, left = np.unravel_index(int(density.argmax()), density.shape)
                patches[int(k)].append((float(density[top, left]), index, int(top), int(left)))
        self.patches = {
            k: [place[1:] for place in sorted(found, reverse=True)[:PATCHES]]
            for k, found in patches.items()
        }
        self.ready = True

    def summary(self):
        """The JSON-ready progress and, once ready, each cluster's share and patch count."""
        total = max(int(self.counts.sum()), 1)
        state = {
            "ready": self.ready,
            "done": self.done,
            "images": len(self.files),
            "skipped": [f"{path}: {reason}" for path, reason in self.skipped],
            "error": self.error,
            "seconds": self.seconds,
        }
        if self.ready:
            state["clusters"] = [
                {
                    "id": k,
                    "share": float(self.counts[k] / total),
                    "patches": len(self.patches[k]),
                    "colour": named_classes.default_colour(k),
                }
                for k in range(self.num_clusters)
            ]
            state["sizes"] = [list(labels.shape) for labels in self.labels]
        return state

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one sample per process, kept for its life
    def png(self, kind, index, number=0):
        """PNG bytes of "image" / "labels" (ids as R + 256 G) / "patch" (cluster, number)."""
        if kind == "image":
            return _png(self.images[index])
        if kind == "labels":
            ids = self.labels[index]
            rgb = np.stack([ids & 255, (ids >> 8) & 255, np.zeros_like(ids)], -1)
            return _png(rgb.astype(np.uint8))
        image_index, top, left = self.patches[index][number]
        labels = self.labels[image_index]
        size = min(PATCH, *labels.shape)
        window = np.s_[top : top + size, left : left + size]
        return _png(outlined(self.images[image_index][window], labels[window] == index))


def outlined(image, mask):
    """`image` with the pixels outside `mask` dimmed and the mask's border drawn in yellow."""
    out = image.astype(np.float32)
    out[~mask] *= 0.45
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    out[mask & ~inner] = (255, 230, 0)
    return out.astype(np.uint8)


def compute(sample, read, predict):
    """Fills `sample`: `read(path)` -> (H, W, C) image, `predict(image)` -> (H, W) ids.

    A file that fails to read or to label is skipped and listed; the sample is ready once
    all are done.
    """
    start = time.perf_counter()
    try:
        for path in sample.files:
            try:
                image = read(path)
                labels = predict(image)
            except Exception as error:  # noqa: BLE001 - one image (unreadable, too large) is
                # skipped and listed on the page; the others are still labelled
                sample.skipped.append((str(path), f"{type(error).__name__}: {error}"))
                logging.warning("Skipped %s: %s", path, error)
            else:
                sample.add(path, image, labels)
            sample.done += 1
        sample.finish()
    except Exception as error:  # noqa: BLE001 - shown on the page and logged, not lost
        sample.error = f"{type(error).__name__}: {error}"
        logging.exception("Labelling the sample failed")
    sample.seconds = round(time.perf_counter() - start, 1)


class Session:
    """What one page serves: the model's description, the sample, and the mapping's file.

    `baked`: the mapping an export carries (`SavedModelSegmenter.classes`), shown until a
    mapping is saved beside it.
    """

    def __init__(self, sample, head, model_name, classes_path, folder, baked=None):
        self.sample = sample
        self.head = head
        self.model_name = model_name
        self.classes_path = Path(classes_path)
        self.folder = folder
        self.baked = baked
        self.lock = threading.Lock()  # one save at a time

    def current(self):
        """(the mapping now: saved beside the model, else baked, else None; a problem)."""
        if not self.classes_path.is_file():
            return self.baked, None
        try:
            mapped = named_classes.read(
                self.classes_path, num_clusters=self.sample.num_clusters, head=self.head
            )
        except ValueError as error:
            return None, str(error)
        return mapped, None

    def state(self):
        mapped, problem = self.current()
        saved = None if mapped is None else mapped.to_json()
        return {
            "model": self.model_name,
            "head": self.head,
            "num_clusters": self.sample.num_clusters,
            "folder": self.folder,
            "classes_path": str(self.classes_path),
            "saved": saved,
            "saved_problem": problem,
            **self.sample.summary(),
        }

    def save(self, payload):
        """Writes the page's choices as the next version of the mapping; returns it (JSON)."""
        entries = payload.get("clusters") if isinstance(payload, dict) else None
        if not isinstance(entries, list) or len(entries) != self.sample.num_clusters:
            raise ValueError(
                f"expected {{'clusters': [...]}} with {self.sample.num_clusters} entries"
            )
        with self.lock:
            previous = self.current()[0]  # its class ids and ignore id are kept
            mapped = named_classes.from_clusters(
                entries, self.sample.num_clusters, self.head, previous
            )
            return named_classes.save(self.classes_path, mapped).to_json()


_ROUTES = {
    "image": re.compile(r"^/image/(\d+)\.png$"),
    "labels": re.compile(r"^/labels/(\d+)\.png$"),
    "patch": re.compile(r"^/patch/(\d+)/(\d+)\.png$"),
}


def make_server(host="127.0.0.1", port=0, session=None):
    """A `ThreadingHTTPServer` on (`host`, `port`), bound, not yet serving.

    It serves its `session` attribute (a `Session`; `session` here, or set before serving),
    so the port is taken (and a port in use reported) before the sample is computed.

    Raises:
        OSError: the address cannot be bound (a port in use: errno EADDRINUSE).
    """
    page = PAGE.read_bytes()
    allowed = page_server.host_names(host)

    class Handler(BaseHTTPRequestHandler):
        server_version = "tf_autoseg-name_clusters"
        timeout = (
            page_server.IDLE_SECONDS
        )  # a silent connection (no request, a body that stops) ends

        @property
        def session(self):
            return self.server.session

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            logging.debug("%s %s", self.address_string(), format % args)

        def _send(self, status, body, content_type="application/json"):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _host_allowed(self):
            return page_server.name_of(self.headers.get("Host")) in allowed

        def _same_origin(self):
            origin = self.headers.get("Origin")
            if origin is None:  # not a browser's cross-origin request
                return True
            parts = urllib.parse.urlsplit(origin)
            return parts.netloc.lower() == (self.headers.get("Host") or "").lower() and (
                (parts.hostname or "") in allowed
            )

        def do_GET(self):  # noqa: N802 - http.server's name
            if not self._host_allowed():
                return self._send(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            if path == "/api/state":
                return self._send(HTTPStatus.OK, self.session.state())
            body = self._picture(path)
            if body is None:
                return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return self._send(HTTPStatus.OK, body, "image/png")

        def _picture(self, path):
            sample = self.session.sample
            if not sample.ready:
                return None
            for kind, pattern in _ROUTES.items():
                match = pattern.match(path)
                if not match:
                    continue
                numbers = [int(n) for n in match.groups()]
                if kind == "patch":
                    cluster, number = numbers
                    if cluster < sample.num_clusters and number < len(sample.patches[cluster]):
                        return sample.png(kind, cluster, number)
                elif numbers[0] < len(sample.images):
                    return sample.png(kind, numbers[0])
            return None

        def do_POST(self):  # noqa: N802 - http.server's name
            if not self._host_allowed():
                return self._send(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"})
            if self.path != "/api/classes":
                return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            if not self._same_origin():
                return self._send(HTTPStatus.FORBIDDEN, {"error": "cross-origin save refused"})
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON"})
            length = self.headers.get("Content-Length") or "0"
            length = int(length) if length.isdigit() else 0
            if not 0 < length <= _MAX_BODY:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": "empty or too large"})
            body = self.rfile.read(length)
            if len(body) < length:  # the client stopped mid-body: no one to answer
                self.close_connection = True
                return None
            try:
                saved = self.session.save(json.loads(body))
            except RecursionError:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": "JSON nested too deeply"})
            except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
                return self._send(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except OSError as error:
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(error)})
            logging.info("Saved version %d of %s", saved["version"], self.session.classes_path)
            return self._send(
                HTTPStatus.OK, {"saved": saved, "path": str(self.session.classes_path)}
            )

    server = page_server.bind(host, port, Handler)
    server.session = session
    return server
