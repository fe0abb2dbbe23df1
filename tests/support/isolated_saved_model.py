"""Runs an export with TensorFlow alone, where tf_autoseg cannot be imported.

Started by tests/serving/test_export.py as

    python -I tests/support/isolated_saved_model.py EXPORT_DIR INPUTS.npz OUT_PREFIX SOURCE_ROOT

`-I` (isolated mode) drops PYTHONPATH, the user site and the script's and
current directories from `sys.path`; this script also drops SOURCE_ROOT and the
import hook of an editable install (`pip install -e .`), then records whether
`tf_autoseg` can still be imported. It loads EXPORT_DIR with
`tf.saved_model.load`, runs the signatures on the arrays of INPUTS.npz
(`serving_default/<case>` and `serving_float/<case>`; `bad/<case>` arrays are
fed to `serving_default` to record its error), and lists every op type of
saved_model.pb (graph and function library) with those TensorFlow does not
register, and reads the `classes_json` variable of an export with named
classes. Writes OUT_PREFIX.npz (outputs) and OUT_PREFIX.json (the rest).
"""

import json
import os
import sys


def _forget_source_tree(root):
    root = os.path.realpath(root)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not (getattr(finder, "__module__", None) or "").startswith("__editable__")
    ]


def _import_error(name):
    try:
        __import__(name)
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return None


def _op_types(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    functions = {
        f.signature.name for m in saved_model.meta_graphs for f in m.graph_def.library.function
    }
    # A node may call a library function by name; that is not an op type.
    called = sorted(ops & functions)
    ops -= functions
    unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
    return sorted(ops), unregistered, called


def main(export_dir, inputs_path, out_prefix, source_root):
    _forget_source_tree(source_root)
    report = {"tf_autoseg_import_error": _import_error("tf_autoseg")}

    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(export_dir)
    report["signatures"] = sorted(loaded.signatures)
    # A mapping of clusters to named classes, where the export has one.
    variable = getattr(loaded, "classes_json", None)
    report["classes_json"] = None if variable is None else variable[0].numpy().decode()
    outputs, errors = {}, {}
    with np.load(inputs_path) as inputs:
        for key in inputs.files:
            group, case = key.split("/")
            images = tf.constant(inputs[key])
            if group == "bad":
                try:
                    loaded.signatures["serving_default"](images=images)
                    errors[case] = None
                except Exception as error:  # noqa: BLE001 (recorded for the test to judge)
                    errors[case] = f"{type(error).__name__}: {error}"
                continue
            result = loaded.signatures[group](images=images)
            for name, value in result.items():
                outputs[f"{key}/{name}"] = value.numpy()
    report["errors"] = errors
    report["ops"], report["unregistered_ops"], report["called_functions"] = _op_types(export_dir)
    report["tf_autoseg_loaded"] = any(m.split(".")[0] == "tf_autoseg" for m in sys.modules)
    np.savez(out_prefix + ".npz", **outputs)
    with open(out_prefix + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
