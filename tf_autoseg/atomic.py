"""Files written whole or not at all: a temporary name beside the file, then a rename.

`os.replace` is atomic on POSIX, so a process killed at any point (SIGKILL included) leaves
either the previous version of a file or the new one, never half of it. The temporary files of
a process killed mid-write are hidden (a leading dot); `leftovers` finds them for removal.
Standard library only: the run directory, the prepared records and `segment`'s outputs share it.
"""

import json
import os
import re
import tempfile
from pathlib import Path

# `write`'s temporary names: "." + the file's name + "." + mkstemp's 8 random characters
# + ".tmp" + the suffix.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.keras)?$")


def write(path, writer, suffix=""):
    """Calls `writer(tmp_path)` then renames the temporary file onto `path`.

    The temporary file lives beside `path` (same file system) and starts with
    a dot; it is removed if `writer` fails.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    try:
        writer(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; a plain open would not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def umask():
    """The process's umask: from /proc where it is there, else by setting it and putting it
    back (which a thread creating a file at that moment would see)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, value):
    """Writes `value` as indented JSON to `path` atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def leftovers(folder):
    """The temporary files `write` left in `folder` when its process was killed, by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if _TEMPORARY.match(p.name) and p.is_file()]
