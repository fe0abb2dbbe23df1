"""pytest_test: one py_test per tests/**/test_*.py, run by pytest.

The test file is the py_test's source; its `main` is tests/support/pytest_main.py, which runs
pytest on it (Bazel runs `main` as a script). legacy_create_init = False: see BUILD's header.
"""

_MAIN = "tests/support/pytest_main.py"

def pytest_test(name, src, deps = [], pytest_args = [], **kwargs):
    """A py_test of the test file `src`; `deps` are its imports' targets (tests/test_build.py);
    `pytest_args` go to pytest after the file (`["-m", "'slow or not slow'"]`: the slow tests
    too, for a target that is chosen explicitly, which setup.cfg's default would deselect).
    Bazel splits each of `args` into words as a shell would: quote an argument with spaces."""
    native.py_test(
        name = name,
        srcs = [src, _MAIN],
        main = _MAIN,
        args = [src] + pytest_args,
        legacy_create_init = False,
        python_version = "PY3",
        srcs_version = "PY3",
        deps = deps,
        **kwargs
    )
