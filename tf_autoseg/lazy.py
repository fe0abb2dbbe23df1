"""Public names that load on first use: the one helper of `tf_autoseg` and `tf_autoseg.layers`.

A package lists `{public name: defining module}` and gets the module-level `__getattr__` and
`__dir__` (PEP 562): `import tf_autoseg` stays free of TensorFlow, so the programs answer
`--help` before it loads, and a name is imported the first time it is used. A name that is
the last part of its module's path is the module itself (`tf_autoseg.losses`).
"""

import importlib
import sys


def exports(package, names):
    """(`__getattr__`, `__dir__`, `__all__`) for `package` (its `__name__`) exporting `names`."""

    def __getattr__(name):  # noqa: N807 - PEP 562's name
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        value = module if module.__name__.rpartition(".")[2] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)  # the next lookup skips this function
        return value

    def __dir__():  # noqa: N807 - PEP 562's name
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__, sorted(names)
