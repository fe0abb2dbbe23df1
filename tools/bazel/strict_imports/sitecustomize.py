"""Bazel tests only: make a module missing from the runfiles fail to import.

Python imports `sitecustomize` at start-up; //tools/bazel:strict_imports puts
this directory on the PYTHONPATH of the py_tests (through //:test_support),
and nothing else sees it.

`pip install -e .` adds a setuptools import hook (the `_EditableFinder` of
`__editable___tf_autoseg_*_finder`, in sys.meta_path) that maps `tf_autoseg`
to the source tree. The runfiles come first on sys.path, so `import
tf_autoseg` loads Bazel's copy; but a submodule left out of the BUILD deps,
hence of the runfiles, would then be found by the hook and loaded from the
source tree, and the test would pass. Removing `tf_autoseg` from the hook's
mapping makes it fail with ModuleNotFoundError, as it should.
"""

import sys


def _unmap_editable(package):
    for finder in sys.meta_path:
        name = getattr(finder, "__module__", None) or ""
        mapping = getattr(sys.modules.get(name), "MAPPING", None)
        if name.startswith("__editable__") and isinstance(mapping, dict):
            mapping.pop(package, None)


_unmap_editable("tf_autoseg")
