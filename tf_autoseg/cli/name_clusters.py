"""`python -m tf_autoseg.name_clusters`: a local page to name, merge and ignore clusters.

    python -m tf_autoseg.name_clusters --model=runs/mine --images=my_images/
    python -m tf_autoseg.name_clusters --model=runs/mine --check_classes=runs/mine/classes.json

The first labels a sample of the folder's images (`--sample`, seeded) with the model's head
(`--head`), then serves a page on http://127.0.0.1:<port>/ (`--host` and `--allow_network` to
listen where other machines reach it; the page still answers only the names of this machine):
per cluster its share of the pixels and example patches with the cluster outlined, and whole
images coloured by class. Type a name per cluster (the same name merges clusters into one
class), pick colours, tick "ignore" for noise, and save: `classes.json` is written beside the
model (`--classes_json` to choose), each save kept as a version in `classes.history/`.
`export` then bakes the names into the SavedModel and `segment` draws them.

The second checks a mapping written by hand against the model and prints its classes.

Everything is checked before anything is written or served: the model, the images (at least
one of the sample must be readable), the mapping's folder and the port.
"""

import errno
import signal
import socket
import sys
import threading
from pathlib import Path

from absl import flags

from tf_autoseg.cli import commands
from tf_autoseg.data import images
from tf_autoseg.serving import classes as named_classes
from tf_autoseg.serving import loading
from tf_autoseg.serving import naming
from tf_autoseg.serving import page_server
from tf_autoseg.serving import paths

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags, defined only when it runs as a program (importing stays free)."""
    flags.DEFINE_string("model", None, "A training run directory, a .keras file or a SavedModel.")
    flags.DEFINE_string("images", None, "A folder of images, or a glob pattern ('**' recurses).")
    flags.DEFINE_enum(
        "head", "main", named_classes.HEADS, "Which head's clusters to name (an export has one)."
    )
    flags.DEFINE_integer("sample", 60, "Images labelled for the page, chosen with --seed.")
    flags.DEFINE_integer("seed", 0, "Seed of the sample.")
    flags.DEFINE_integer("display_side", 384, "Longest side of the images the page shows.")
    flags.DEFINE_string(
        "host", "127.0.0.1",
        "Address to listen on (loopback by default; another needs --allow_network).",
    )  # fmt: skip
    flags.DEFINE_bool(
        "allow_network", False,
        "Serve the page on a --host other machines can reach: anyone who reaches it sees the "
        "sampled images and can save names.",
    )  # fmt: skip
    flags.DEFINE_integer("port", 8765, "Port to listen on; 0 takes a free one.")
    flags.DEFINE_string(
        "classes_json",
        None,
        "Where the page saves the mapping. Default: classes.json beside the model (in a run "
        "directory; beside an export's version folders).",
    )
    flags.DEFINE_string(
        "check_classes",
        None,
        "Check this mapping (written by hand or by the page) against --model, print its "
        "classes and exit: no page.",
    )
    flags.register_validator("sample", lambda v: v >= 1, message="--sample must be positive")
    flags.register_validator(
        "display_side", lambda v: v >= 32, message="--display_side must be at least 32"
    )
    flags.register_validator(
        "port", lambda v: 0 <= v <= 65535, message="--port must be in [0, 65535]"
    )


def describe(mapped):
    """The lines `--check_classes` prints for a checked mapping."""
    lines = [
        f"ok: {len(mapped.classes)} classes over the {mapped.num_clusters} clusters of the "
        f"{mapped.head} head ({len(mapped.ignored)} ignored, as class id {mapped.ignore_id})"
    ]
    for named in mapped.classes:
        clusters = ", ".join(str(c) for c in named.clusters)
        lines.append(f"  {named.id}: {named.name} {named.colour} <- clusters {clusters}")
    if mapped.ignored:
        lines.append(f"  ignored: clusters {', '.join(str(c) for c in mapped.ignored)}")
    return "\n".join(lines)


def _head(model, asked):
    """The head the page names: an export holds only the head it was exported with."""
    if isinstance(model, loading.SavedModelSegmenter):
        if asked != "main" and asked != model.exported_head:
            raise ValueError(
                f"--head={asked}: {model.path} is an export holding only its "
                f"{model.exported_head} head; give the run directory for the other head."
            )
        return model.exported_head
    if not named_classes.head_clusters(model, asked):
        raise ValueError(f"--head={asked}: the model has no overclustering head.")
    return asked


def _predictor(model, head):
    """image (H, W, C) -> (H, W) int32 cluster ids of `head`, tiled like `segment`."""
    from tf_autoseg.modeling.model import cluster_ids
    from tf_autoseg.serving.segment import segment_probabilities

    probabilities = loading.probabilities(model, head)
    return lambda image: cluster_ids(segment_probabilities(probabilities, image)).numpy()


def _check(path):
    paths.resolve(FLAGS.model)  # a path that names no model stops before TensorFlow
    named_classes.read(path)  # and so does a broken mapping
    commands.start_tensorflow()
    model = loading.load(FLAGS.model)
    print(describe(named_classes.for_model(model, path)))


def _check_other_head(path, head):
    """Refuses to replace a saved mapping of the other head (export and segment take the
    file beside the model by default): that needs a --classes_json of its own."""
    if not path.is_file():
        return
    try:
        saved = named_classes.read(path).head
    except ValueError:
        return  # a broken file: the page shows why, and a save replaces it
    if saved != head:
        raise ValueError(
            f"{path} holds the {saved} head's mapping: name the {head} head's clusters into "
            f"another file (--classes_json=<path>), or move that one away."
        )


def _first_readable(files, channels):
    for path in files:
        try:
            images.read_image(path, channels)
            return path
        except (OSError, ValueError):
            continue
    return None


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise ValueError(
            "--model is required: a training run directory, .keras file or SavedModel."
        )
    if FLAGS.check_classes:
        return _check(FLAGS.check_classes)
    if not FLAGS.images:
        raise ValueError("--images is required: a folder of images or a glob pattern.")
    try:
        files = images.list_files(FLAGS.images)
    except ValueError as error:
        raise ValueError(f"--images={FLAGS.images!r}: {error}.") from None
    paths.resolve(FLAGS.model)
    classes_path = Path(FLAGS.classes_json or named_classes.default_path(FLAGS.model))
    commands.check_writable("classes_json", classes_path.parent)
    if classes_path.exists() and not classes_path.is_file():
        raise ValueError(f"--classes_json={str(classes_path)!r} is a folder; expected a file.")
    chosen = naming.sample_files(files, FLAGS.sample, FLAGS.seed)
    server = _listen(FLAGS.host, FLAGS.port)
    try:
        serve(server, files, chosen, classes_path)
    finally:
        server.server_close()


def _listen(host, port):
    """The page's server bound to (`host`, `port`); a ValueError naming the flag at fault."""
    if not page_server.is_loopback(host) and not FLAGS.allow_network:
        raise ValueError(
            f"--host={host} is not a loopback address: the page (the sampled images, and saving "
            "names) would be reachable from the network. Add --allow_network to serve it "
            "there, or leave --host out (127.0.0.1)."
        )
    try:
        return naming.make_server(host, port)
    except OSError as error:
        if isinstance(error, socket.gaierror) or error.errno in (
            errno.EADDRNOTAVAIL,
            errno.EAFNOSUPPORT,
        ):
            raise ValueError(
                f"--host={host}: not an address of this machine ({commands.one_line(error)}); "
                "give one of its addresses or names, or leave --host out (127.0.0.1)."
            ) from None
        raise ValueError(
            f"--port={port}: cannot listen on {host}:{port} "
            f"({commands.one_line(error)}); pick another --port, or 0 for a free one."
        ) from None


def serve(server, files, chosen, classes_path):
    """Loads the model, checks the sample, then serves until Ctrl-C or SIGTERM."""
    commands.start_tensorflow()
    model = loading.load(FLAGS.model)
    head = _head(model, FLAGS.head)
    channels = model.image_shape[-1]
    if _first_readable(chosen, channels) is None:
        raise ValueError(
            f"--images={FLAGS.images!r}: none of the {len(chosen)} sampled images (of "
            f"{len(files)}) can be read as a {channels}-channel image."
        )
    _check_other_head(classes_path, head)
    sample = naming.ClusterSample(
        chosen, named_classes.head_clusters(model, head), FLAGS.display_side
    )
    baked = getattr(model, "classes", None)  # an export's own mapping: the starting point
    server.session = naming.Session(
        sample, head, str(FLAGS.model), classes_path, FLAGS.images, baked=baked
    )
    read = lambda path: images.read_image(path, channels)[0]  # noqa: E731
    worker = threading.Thread(
        target=naming.compute, args=(sample, read, _predictor(model, head)), daemon=True
    )
    worker.start()
    host, port = server.server_address[:2]
    network = not page_server.is_loopback(host)
    if host in ("0.0.0.0", "::"):  # every address: the machine's name is the one to open
        host = socket.getfqdn()
    shown = f"[{host}]" if ":" in host else host
    reach = (
        "REACHABLE FROM THE NETWORK: whoever reaches this machine sees the sampled images and "
        "can save names; Ctrl-C stops" if network else "Ctrl-C stops"
    )  # fmt: skip
    print(
        f"Naming the {sample.num_clusters} clusters of the {head} head on {len(chosen)} of "
        f"{len(files)} images: open http://{shown}:{port}/ ({reach}).",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    print("stopped", flush=True)


def run():
    """Defines the flags and runs `main` as the program."""
    define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
