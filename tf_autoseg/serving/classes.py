"""Names for a model's clusters: the `classes.json` format, its checks, where it lives.

An unsupervised model answers cluster ids; a user names them: several clusters may become
one class ("road" = clusters 7 and 19), some are ignored (noise). `classes.json` holds that
mapping for one head of one model, and is what `name_clusters` writes, `export
--classes_json` bakes into a SavedModel and `segment` draws a legend from:

    {
      "format": "tf_autoseg.classes",
      "head": "main",               # or "overclustering"
      "num_clusters": 12,           # the head's cluster count
      "ignore_id": 255,             # the class id of ignored clusters
      "classes": [
        {"id": 0, "name": "road", "colour": "#804080", "clusters": [7, 19]},
        {"id": 1, "name": "sky", "colour": "#4682b4", "clusters": [3]}
      ],
      "ignored": [12],
      "version": 3                  # written by `save`: the n-th save beside the model
    }

Every cluster 0 .. num_clusters - 1 is in exactly one class or in `ignored`; class ids are
distinct and below `ignore_id`; names are distinct (ignoring case and surrounding spaces);
colours are `#rrggbb`. `parse` checks all of it and names the first problem in one line.
Standard library and NumPy only: checking a mapping loads no TensorFlow.

Long (about 430 lines) because it is the format's one owner: the checks with their one-line
errors, the lookup and palette, the page's choices, where a mapping lives and its versioned
saves; the page, the export and segment only call it.
"""

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_autoseg.serving import paths

FORMAT = "tf_autoseg.classes"
FILE = "classes.json"
HEADS = ("main", "overclustering")
IGNORE_ID = 255
MAX_CLUSTERS = 65536  # cluster ids: 16-bit label maps at most
# Where an export carries its mapping, inside the version folder (TensorFlow Serving reads
# only warm-up requests from assets.extra).
IN_EXPORT = "assets.extra/classes.json"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class NamedClass:
    """One class: its id, name, `#rrggbb` colour and the clusters it gathers."""

    id: int
    name: str
    colour: str
    clusters: tuple


@dataclass(frozen=True)
class Classes:
    """A checked mapping of one head's clusters to named classes (see the module docstring)."""

    head: str
    num_clusters: int
    classes: tuple
    ignored: tuple = ()
    ignore_id: int = IGNORE_ID
    version: int = 0

    def lookup(self):
        """(num_clusters,) int32: the class id of each cluster, `ignore_id` for ignored ones."""
        table = np.full(self.num_clusters, self.ignore_id, np.int32)
        for named in self.classes:
            table[list(named.clusters)] = named.id
        return table

    def palette(self):
        """(ignore_id + 1, 3) uint8 class colours by class id, for `visualize.colorize`;
        black for `ignore_id` and unused ids."""
        table = np.zeros((self.ignore_id + 1, 3), np.uint8)
        for named in self.classes:
            table[named.id] = [int(named.colour[i : i + 2], 16) for i in (1, 3, 5)]
        return table

    def to_json(self):
        """The JSON-ready dict of `classes.json`."""
        return {
            "format": FORMAT,
            "head": self.head,
            "num_clusters": self.num_clusters,
            "ignore_id": self.ignore_id,
            "classes": [
                {"id": c.id, "name": c.name, "colour": c.colour, "clusters": list(c.clusters)}
                for c in self.classes
            ],
            "ignored": list(self.ignored),
            "version": self.version,
        }

    def dumps(self):
        """`to_json()` as indented JSON text."""
        return json.dumps(self.to_json(), indent=2) + "\n"


def _key(name):
    """Names that are one class: the same after stripping spaces and lower-casing (the
    naming page's rule, `name.trim().toLowerCase()`)."""
    return name.strip().lower()


def _fail(source, message):
    raise ValueError(f"{source}: {message}")


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def parse(value, num_clusters=None, head=None, source=FILE):
    """The `Classes` a decoded `classes.json` describes, checked.

    Args:
        value: the decoded JSON (a dict).
        num_clusters: the model head's cluster count; given, the mapping must be for it.
        head: the head of the model the mapping is used with; given, it must match.
        source: how errors name the mapping (its path).

    Raises:
        ValueError: one line naming `source` and the first problem (an unknown cluster id, a
            cluster in two classes or in none, duplicate names or ids, a class with no
            cluster, a bad colour, another head or cluster count than the model's).
    """
    if not isinstance(value, dict):
        _fail(source, f"expected a JSON object, found {type(value).__name__}")
    _known_keys(source, "the mapping", value, _KEYS)
    if value.get("format", FORMAT) != FORMAT:
        _fail(source, f'"format" must be "{FORMAT}", found {value.get("format")!r}')
    file_head = value.get("head", "main")
    if file_head not in HEADS:
        _fail(source, f'"head" must be one of {", ".join(HEADS)}; found {file_head!r}')
    if head is not None and file_head != head:
        _fail(source, f"the mapping is for the {file_head} head, not the {head} head asked for")
    count = value.get("num_clusters", num_clusters)
    inferred = count is None
    if inferred:  # written by hand without a count: `for_model` checks it against a model
        count = 1 + max(_claimed(value), default=0)
    if not _int(count) or not 1 <= count <= MAX_CLUSTERS:
        _fail(source, f'"num_clusters" must be an int in [1, {MAX_CLUSTERS}], found {count!r}')
    if num_clusters is not None and count != num_clusters:
        _fail(
            source,
            f"the mapping is for {count} clusters but the model's {file_head} head has "
            f"{num_clusters}",
        )
    ignore_id = value.get("ignore_id", IGNORE_ID)
    if not _int(ignore_id) or not 1 <= ignore_id <= 255:  # label maps are 8-bit PNGs
        _fail(source, f'"ignore_id" must be an int in [1, 255], found {ignore_id!r}')
    entries = value.get("classes")
    if not isinstance(entries, list) or not entries:
        _fail(source, '"classes" must be a non-empty list of {"name", "clusters", ...} objects')
    owner = {}  # cluster -> where it went, for "in two classes"

    def claim(cluster, where):
        if not _int(cluster):
            _fail(source, f"{where}: cluster ids must be ints, found {cluster!r}")
        if not 0 <= cluster < count:
            _fail(
                source,
                f"{where} names cluster {cluster}, which the model lacks "
                f"(its {file_head} head has clusters 0-{count - 1})",
            )
        if cluster in owner:
            _fail(source, f"cluster {cluster} is in both {owner[cluster]} and {where}")
        owner[cluster] = where

    named, names, ids = [], {}, set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            _fail(source, f"classes[{index}] must be an object, found {type(entry).__name__}")
        _known_keys(source, f"classes[{index}]", entry, _CLASS_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            _fail(source, f'classes[{index}] needs a non-empty "name", found {name!r}')
        name = name.strip()
        where = f'class "{name}"'
        if _key(name) in names:
            _fail(source, f'two classes are named "{name}" (classes[{names[_key(name)]}] '
                  f"and classes[{index}]): merge their clusters into one class")  # fmt: skip
        names[_key(name)] = index
        class_id = entry.get("id", index)
        if not _int(class_id) or not 0 <= class_id < ignore_id:
            _fail(source, f"{where}: \"id\" must be an int in [0, {ignore_id - 1}], "
                  f"found {class_id!r}")  # fmt: skip
        if class_id in ids:
            _fail(source, f"{where}: class id {class_id} is used twice")
        ids.add(class_id)
        colour = entry.get("colour", default_colour(class_id))
        if not isinstance(colour, str) or not _COLOUR.match(colour):
            _fail(source, f'{where}: "colour" must be "#rrggbb", found {colour!r}')
        clusters = entry.get("clusters")
        if not isinstance(clusters, list) or not clusters:
            _fail(source, f"{where} has no cluster: give it at least one, or remove it")
        for cluster in clusters:
            claim(cluster, where)
        named.append(NamedClass(class_id, name, colour.lower(), tuple(sorted(clusters))))
    ignored = value.get("ignored", [])
    if not isinstance(ignored, list):
        _fail(source, f'"ignored" must be a list of cluster ids, found {ignored!r}')
    for cluster in ignored:
        claim(cluster, '"ignored"')
    missing = [] if inferred else [c for c in range(count) if c not in owner]
    if missing:
        _fail(
            source,
            f"cluster {missing[0]} is in no class and not ignored "
            f'({len(missing)} such): add each cluster to a class or to "ignored"',
        )
    version = value.get("version", 0)
    return Classes(
        file_head,
        count,
        tuple(named),
        tuple(sorted(ignored)),
        ignore_id,
        version if _int(version) else 0,
    )


_KEYS = ("format", "head", "num_clusters", "ignore_id", "classes", "ignored", "version")
_CLASS_KEYS = ("id", "name", "colour", "clusters")
_SPELLINGS = {"color": "colour", "ignore": "ignored", "cluster": "clusters", "title": "name"}


def _known_keys(source, where, value, known):
    """Fails on a key outside `known`: a misspelt one ("color") would otherwise be silently
    ignored and its value replaced by the default."""
    for key in value:
        if key not in known:
            hint = f'write "{_SPELLINGS[key]}"' if _SPELLINGS.get(key) in known else (
                "expected " + ", ".join(f'"{k}"' for k in known)
            )  # fmt: skip
            _fail(source, f'{where} has the key "{key}", which a mapping does not take: {hint}')


def head_clusters(model, head):
    """The cluster count of `model`'s `head` ("main" or "overclustering"), 0 if it lacks it.

    `model` is an `AutoSegModel` or a loaded SavedModel (`loading.SavedModelSegmenter`),
    which holds the one head it was exported with (`exported_head`).
    """
    exported = getattr(model, "exported_head", None)
    if exported is not None:
        return model.num_classes if head == exported else 0
    if head == "overclustering":
        return model.overclustering or 0
    return model.num_classes


def check_model(model, classes, source=None):
    """Raises a ValueError unless `classes` maps the clusters of one of `model`'s heads."""
    where = f"{source}: " if source else ""
    count = head_clusters(model, classes.head)
    if not count:
        raise ValueError(
            f"{where}the mapping is for the {classes.head} head, which the model lacks"
        )
    if count != classes.num_clusters:
        raise ValueError(
            f"{where}the mapping is for {classes.num_clusters} clusters but the model's "
            f"{classes.head} head has {count}"
        )


def _claimed(value):
    """The int cluster ids a decoded mapping names (to infer a count it does not give)."""
    ignored = value.get("ignored")
    ids = list(ignored) if isinstance(ignored, list) else []
    entries = value.get("classes")
    for entry in entries if isinstance(entries, list) else []:
        clusters = entry.get("clusters") if isinstance(entry, dict) else None
        ids += clusters if isinstance(clusters, list) else []
    return [c for c in ids if _int(c)]


def for_model(model, mapping):
    """`mapping` (a `Classes`, or the path of a `classes.json`) checked against `model`.

    A file is checked with the cluster count of the model's head (a hand-written file may
    leave `num_clusters` out); errors name the file.
    """
    if isinstance(mapping, Classes):
        check_model(model, mapping)
        return mapping
    path = Path(mapping)
    value = _load(path)
    head = value.get("head", "main") if isinstance(value, dict) else "main"
    count = head_clusters(model, head) if head in HEADS else 1
    if not count:
        raise ValueError(f"{path}: the mapping is for the {head} head, which the model lacks")
    return parse(value, count, source=str(path))


def _load(path):
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a mapping") from None


def read(path, num_clusters=None, head=None):
    """The checked `Classes` of the file at `path` (see `parse`).

    Raises:
        ValueError: the file is missing, not JSON, or fails `parse`'s checks; named.
    """
    return parse(_load(path), num_clusters, head, source=str(path))


def default_colour(index):
    """`#rrggbb` of the package's palette (the colours `segment` gives cluster ids)."""
    from tf_autoseg.visualize import PALETTE

    return "#" + "".join(f"{int(v):02x}" for v in PALETTE[index % len(PALETTE)])


def from_clusters(entries, num_clusters, head="main", previous=None):
    """The `Classes` of per-cluster choices, as the naming page sends them.

    Args:
        entries: one dict per cluster: `cluster` (its id), `name`, `colour`, `ignored`.
            Clusters given the same name (ignoring case and surrounding spaces) become one
            class, with the colour of its lowest cluster.
        num_clusters: the head's cluster count.
        head: "main" or "overclustering".
        previous: the mapping saved before (a `Classes`) or None. A class keeps its id when
            its name was there (so an export's class ids stay what they were), as does
            `ignore_id`; new names take the lowest free ids, in the order of their lowest
            cluster.

    Raises:
        ValueError: a malformed entry, a cluster neither named nor ignored, or any `parse`
            problem.
    """
    groups, ignored = {}, []
    for entry in entries:
        if not isinstance(entry, dict) or not _int(entry.get("cluster")):
            raise ValueError(f'each entry needs an int "cluster"; found {entry!r}')
    for entry in sorted(entries, key=lambda e: e["cluster"]):
        cluster = entry["cluster"]
        if entry.get("ignored"):
            ignored.append(cluster)
            continue
        name = str(entry.get("name") or "").strip()
        if not name:
            raise ValueError(f"cluster {cluster} has no name: name it, or mark it ignored")
        group = groups.setdefault(
            _key(name), {"name": name, "colour": entry.get("colour"), "clusters": []}
        )
        group["clusters"].append(cluster)
    if not groups:
        raise ValueError("every cluster is ignored: name at least one")
    kept = {_key(c.name): c.id for c in previous.classes} if previous is not None else {}
    ignore_id = previous.ignore_id if previous is not None else IGNORE_ID
    taken = {kept[key] for key in groups if key in kept}
    free = (i for i in range(ignore_id) if i not in taken)
    classes = []
    for key, group in groups.items():
        class_id = kept[key] if key in kept else next(free)
        colour = group["colour"] or default_colour(class_id)
        classes.append({"id": class_id, "name": group["name"], "colour": colour,
                        "clusters": group["clusters"]})  # fmt: skip
    value = {"head": head, "num_clusters": num_clusters, "classes": classes,
             "ignored": ignored, "ignore_id": ignore_id}  # fmt: skip
    return parse(value, num_clusters, head, source="the page's classes")


def default_path(source):
    """Where the mapping of the model at `source` lives by default.

    A training run directory (or its `model.keras`): `<run>/classes.json`; another `.keras`
    file: `<stem>.classes.json` beside it; a SavedModel version folder
    `<output_dir>/<name>/<n>`: `<output_dir>/<name>/classes.json` (TensorFlow Serving
    ignores files there), so every version of an export shares it.
    """
    kind, path = paths.resolve(source)
    if kind == paths.KERAS:
        name = FILE if path.name == paths.MODEL_FILE else f"{path.stem}.{FILE}"
        return path.parent / name
    return (path.parent if path.name.isdigit() else path) / FILE


def named_path(flag, source):
    """The mapping file a `--classes_json` value names for the model at `source`.

    "none" (any case): None, cluster ids; a path: that file; None (not given): the model's
    own, `default_path(source)`, if that file exists, else None.
    """
    if flag is not None:
        return None if flag.strip().lower() == "none" else Path(flag)
    path = default_path(source)
    return path if path.is_file() else None


def history_folder(path):
    """Where the saved versions of the mapping at `path` stay: `<stem>.history/` beside it
    (`classes.history/` for `classes.json`), one per mapping file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.history")


def save(path, classes):
    """Writes `classes` to `path` atomically as its next version; returns the saved `Classes`.

    Each save also stays as `history_folder(path)/<n>.json` (never overwritten; two savers
    at once take different numbers), so an earlier naming can be restored by copying it back.
    `path` itself is replaced whole (a reader sees the old or the new mapping), and only by
    the newest version: a slower saver of an older one leaves it. A `path` that is no saved
    version (written or edited by hand, valid or not) is kept first, as
    `history_folder(path)/replaced-<n>.json`.
    """
    from dataclasses import replace

    from tf_autoseg import atomic

    path = Path(path)
    history = history_folder(path)
    history.mkdir(parents=True, exist_ok=True)

    def versions():
        return [int(p.stem) for p in history.glob("*.json") if p.stem.isdigit()]

    _keep_unsaved(path, history)

    for _ in range(1000):
        saved = replace(classes, version=max(versions(), default=0) + 1)
        if _claim(history / f"{saved.version}.json", saved.dumps()):
            break
    else:
        raise RuntimeError(f"could not claim a new version in {history}")
    if max(versions()) == saved.version:
        atomic.write_text(path, saved.dumps())
    return saved


def _keep_unsaved(path, history):
    """Copies `path` into `history` as `replaced-<n>.json` unless it is a saved version (the
    text of `history/<its version>.json`): a hand-edited file is never lost to a save."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        try:
            text = path.read_bytes().decode("latin-1")
        except OSError:
            return  # no file (the first save), or one that cannot be read: nothing to keep
    try:
        version = json.loads(text).get("version")
    except (ValueError, RecursionError, AttributeError):
        version = None
    saved = history / f"{version}.json"
    if _int(version) and saved.is_file() and saved.read_text() == text:
        return
    for number in range(1, 100000):
        if _claim(history / f"replaced-{number}.json", text):
            return
    raise RuntimeError(f"could not keep {path} in {history}")


def _claim(target, text):
    """Writes `text` as `target` if no such file exists, whole; False if one does. The file
    is readable as a plain `open` would make it (mkstemp's are private)."""
    from tf_autoseg import atomic

    handle, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temp, 0o666 & ~atomic.umask())
        try:  # link() fails on an existing name: one saver claims each number, whole
            os.link(temp, target)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: claim the name, then fill it
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return False
            os.replace(temp, target)
        return True
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
