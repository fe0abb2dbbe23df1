"""What the command-line programs share: a quiet TensorFlow start, one-line errors, `--help`.

Every program (`train`, `evaluate`, `segment`, `export`) parses its flags before TensorFlow is
imported, so `--help` and a bad flag answer at once. `run(main)` is `absl.app.run(main)` with
three differences:

- `--help` (and `--helpshort`, `--helpfull`) exits 0, not absl's 1;
- an `OSError` or `ValueError` from `main` becomes one line, `error: ...` naming the path or
  the flag, and exit status 2, never a traceback;
- `start_tensorflow()` imports TensorFlow without its start-up noise (the "All log messages
  before absl::InitializeLog()" banner, `cudart_stub` and `cpu_feature_guard` lines, the
  cuInit error on a machine without a GPU, oneDNN notices) and with its Python logger at
  WARNING. Set `TF_AUTOSEG_VERBOSE_TF=1` to see TensorFlow's log as it is; a
  `TF_CPP_MIN_LOG_LEVEL` already set is kept.

The noise is written by TensorFlow's C++ libraries straight to file descriptor 2, some of it
before `TF_CPP_MIN_LOG_LEVEL` is read, so it is filtered there, while TensorFlow loads and
probes its devices: every other line written meanwhile is passed on.
"""

import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

VERBOSE_ENV = "TF_AUTOSEG_VERBOSE_TF"
_HELP = re.compile(r"^--?(\?|help|helpshort|helpfull|helpxml)(=(true|1|yes))?$", re.I)
# absl's C++ log format: severity, date, time, thread id, file:line]
# (before absl::InitializeLog() the time reads 00:00:<seconds since 1970>).
_LOG_LINE = re.compile(r"^([IWE])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate"
    r"|oneDNN custom operations are on"
)
# Errors at start-up that only say there is no usable GPU (or that a CUDA plugin registered twice).
_NOISY_ERRORS = re.compile(r"cuInit|Unable to register cu(DNN|FFT|BLAS) factory|already registered")


def verbose():
    """Whether TensorFlow's own log is wanted (`TF_AUTOSEG_VERBOSE_TF` set, not 0 or empty)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_noise(line):
    """Whether `line` is TensorFlow start-up noise (kept when `verbose()`)."""
    match = _LOG_LINE.match(line)
    if match:
        return match.group(1) in "IW" or bool(_NOISY_ERRORS.search(line))
    return bool(_NOISE.search(line))


def start_tensorflow():
    """Imports TensorFlow and lists its devices, quietly unless `verbose()`; returns the module.

    Call it before anything else imports TensorFlow; later calls only return the module.
    """
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # runtime INFO and WARNING lines
    with _filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # where the cuInit error is logged
    # TensorFlow's Python INFO lines (SavedModel writing details) go the same way: some go
    # through its "tensorflow" logger, others through absl's, which the programs share.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("absl").addFilter(_LibraryInfo(os.path.dirname(tf.__file__)))
    return tf


class _LibraryInfo(logging.Filter):
    """Drops the records below WARNING logged from files under `folder`."""

    def __init__(self, folder):
        super().__init__()
        self.folder = os.path.join(folder, "")

    def filter(self, record):
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.folder)


@contextlib.contextmanager
def _filtered_stderr():
    """Within the block, file descriptor 2 goes to a file; on exit its lines return, less noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not is_noise(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def one_line(error):
    """The message of an exception on one line; an `OSError` names its path first."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text.strip())


def fail(error):
    """Prints `error: <message>` on one line to stderr and exits with status 2."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


def check_writable(flag, folder):
    """Proves `folder` can be created and written, by creating and removing a file in it.

    Folders created for the proof are removed again, so a run that stops later leaves nothing.

    Raises:
        ValueError: naming `--flag`, the folder and why it cannot be written.
    """
    path = Path(folder)
    created = []
    try:
        missing = []
        for parent in [path, *path.parents]:
            if parent.is_dir():
                break
            if parent.exists():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(parent))
            missing.append(parent)
        for parent in reversed(missing):
            parent.mkdir()
            created.append(parent)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        reason = one_line(error)
        raise ValueError(
            f"--{flag}={str(folder)!r}: cannot create or write this folder ({reason})."
        ) from None
    finally:
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()


def asked_for_help(argv):
    """Whether the command line asks for help (absl's help flags exit before `main`)."""
    return any(_HELP.match(arg) for arg in argv)


def run(main, program=None):
    """`absl.app.run(main)`: help exits 0; OSError and ValueError are one line and exit 2.

    `program`: the module (`tf_autoseg.cli.<name>`) whose flags and docstring `--help` shows
    when it runs under another name (`python -m tf_autoseg.<name>`, a console script).
    """
    from absl import app
    from absl import flags

    if program is not None:
        main_module = sys.modules.get("__main__")
        if main_module is not None:
            main_module.__doc__ = program.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(program.__name__):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def guarded(argv):
        try:
            return main(argv)
        except (OSError, ValueError) as error:
            fail(error)
        except KeyboardInterrupt as error:  # Ctrl-C: one line (where to resume), not a traceback
            print(str(error) or "stopped (Ctrl-C).", file=sys.stderr)
            sys.exit(130)

    def parse(argv):
        # absl prints "FATAL Flags parsing error" and a hint on two lines and exits 1: an
        # unknown flag, a missing flagfile or a bad value is one line and exit 2 here.
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(ValueError(str(error).removeprefix("ERROR:: ")))

    try:
        app.run(guarded, flags_parser=parse)
    except SystemExit as exit_:
        if exit_.code == 1 and asked_for_help(sys.argv[1:]):
            raise SystemExit(0) from None
        raise
