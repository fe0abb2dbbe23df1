"""`import tf_autoseg` is enough for Keras to load the package's saved models, and loads no
TensorFlow.

Keras finds the class of a saved object by its registered name (`tf_autoseg>AutoSegModel`) in
its table of custom objects, which a class enters when its module is imported. The package's
names load on first use (`tf_autoseg.lazy`), so after `import tf_autoseg` alone none was there,
and `keras.saving.load_model("runs/x/model.keras")` failed with "Could not locate class
'AutoSegModel'". `watch()`, called by the package's `__init__`, makes that table import the
package's serializable modules (`_REGISTERED`) the first time it is asked for a `tf_autoseg>` name:
at once if Keras is loaded, else when Keras loads its registration module (an import hook that
waits for that one module and imports nothing itself). Programs still answer `--help` before
TensorFlow loads, and the modules load only when a saved object of the package is read.

Standard library only.
"""

import importlib
import importlib.abc
import sys

PACKAGE = "tf_autoseg"
# Every module that registers a class with `keras.saving.register_keras_serializable(
# package="tf_autoseg")` (tests/test_registration.py checks the list against the sources;
# tests/test_build.py reads it as the imports of this file).
_REGISTERED = (
    "tf_autoseg.layers.masked_conv",
    "tf_autoseg.layers.masked_attention",
    "tf_autoseg.layers.backbones",
    "tf_autoseg.modeling.network",
    "tf_autoseg.modeling.model",
    "tf_autoseg.evaluation.keras_metric",
)
# Keras 3's table of registered objects: `GLOBAL_CUSTOM_OBJECTS`, read through the module at
# every lookup (`get_registered_object`, `serialization_lib`, the legacy formats).
REGISTRY = "keras.src.saving.object_registration"


def register():
    """Imports every module of `_REGISTERED`: their classes enter Keras's table."""
    for name in _REGISTERED:
        importlib.import_module(name)


class _Table(dict):
    """Keras's table of custom objects, which imports the package's modules (`register`) the
    first time it is asked for a name of the package it does not hold."""

    loaded = False

    def _load(self, name):
        if isinstance(name, str) and name.startswith(PACKAGE + ">") and not self.loaded:
            self.loaded = True  # first: the imports below enter names themselves
            register()
            return True
        return False

    def __contains__(self, name):
        return super().__contains__(name) or (self._load(name) and super().__contains__(name))

    def __missing__(self, name):
        if self._load(name) and super().__contains__(name):
            return super().__getitem__(name)
        raise KeyError(name)

    def get(self, name, default=None):
        return self[name] if name in self else default


def _install(module):
    table = module.GLOBAL_CUSTOM_OBJECTS
    if not isinstance(table, _Table):
        module.GLOBAL_CUSTOM_OBJECTS = _Table(table)


class _Loader(importlib.abc.Loader):
    """Keras's registration module's own loader, then `_install` on the module it made."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _install(module)

    def __getattr__(self, name):  # get_code, get_source, is_package, resource readers, ...
        return getattr(self.loader, name)


class _Watcher(importlib.abc.MetaPathFinder):
    """Waits for `REGISTRY` to be imported; finds nothing itself (the other finders do)."""

    def find_spec(self, name, path=None, target=None):
        if name != REGISTRY:
            return None
        sys.meta_path.remove(self)  # once
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def watch():
    """Makes Keras's table find the package's classes on demand (see the module docstring)."""
    module = sys.modules.get(REGISTRY)
    if module is not None and hasattr(module, "GLOBAL_CUSTOM_OBJECTS"):
        _install(module)
    elif not any(isinstance(finder, _Watcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Watcher())
