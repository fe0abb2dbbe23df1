"""The `main` of every py_test in BUILD: runs the test files it is given with pytest.

Bazel runs a py_test's `main` as a script; `pytest_test` (tools/bazel/pytest.bzl) passes the
test file as the argument, so no test file needs a `pytest.main` block of its own. The working
directory is the runfiles root, where the test file's path is the same as in the source tree.
"""

import sys

import pytest

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: pytest_main.py TEST_FILE... (the py_test's args)")
    raise SystemExit(pytest.main([*sys.argv[1:], "-q"]))
