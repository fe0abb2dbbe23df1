"""BUILD restates the import graph; this test derives it from the sources and compares.

A module missing from a target's deps is missing from its runfiles: the test
fails under Bazel with ModuleNotFoundError while plain pytest passes. So every
`py_library` and `py_test` must depend on exactly the targets that hold the
files its sources import (found with `ast`, imports inside functions
included), every module of `tf_autoseg` and `benchmarks` must be in a
`py_library`, and every `tests/**/test_*.py` in a `pytest_test` (tools/bazel/pytest.bzl: a
`py_test` whose main, tests/support/pytest_main.py, runs pytest on the file).

The derived dependencies of a target, from the files in its `srcs` (and, for
a `py_test`, the Python scripts listed in its `data`, which it runs):
- each first-party file they import (`import a.b`, `from a import b`,
  `from a.b import c`, relative imports, and, for the test tree, `from support import
  helper`: tests/ is on sys.path, as pytest puts the folder of tests/conftest.py there)
  gives the target whose `srcs` hold it;
- importing a file of a package from outside it also runs the package's
  `__init__.py` (so a test's `from tf_autoseg import orderings` needs
  `:tf_autoseg`);
- a test also needs the `conftest.py` files pytest loads for it.
Only local labels (`:name`) are compared; `//tools/...` and the like are not
part of the Python import graph.

BUILD is Starlark; its function-call subset is Python syntax, so it is read
with `ast` and only literals, lists and `glob([...])` are evaluated.
"""

import ast
import glob as globlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ("py_library", "py_test", "py_binary", "pytest_test")
# The main of every pytest_test (tools/bazel/pytest.bzl): pytest on the test file.
PYTEST_MAIN = "tests/support/pytest_main.py"
# Directories whose every .py file must be in a target's srcs.
LIBRARY_DIRS = ("tf_autoseg", "benchmarks")


def parse_build(text, root=ROOT):
    """{name: {"rule", "srcs", "deps", "data", "data_scripts", "main"}} of BUILD's Python rules.

    `srcs` and `data` are paths relative to `root` (globs expanded there);
    `data_scripts` are the `.py` files named one by one in `data`; `main` is
    the `main` attribute (None where it is not given).
    """
    targets = {}
    for node in ast.parse(text, filename="BUILD").body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        if call.func.id not in RULES:
            continue
        args = {k.arg: k.value for k in call.keywords}
        data = _labels(args.get("data"), root)
        macro = call.func.id == "pytest_test"  # a py_test of `src`, run by PYTEST_MAIN
        srcs = [(ast.literal_eval(args["src"]), True)] if macro else _labels(args.get("srcs"), root)
        targets[ast.literal_eval(args["name"])] = {
            "rule": "py_test" if macro else call.func.id,
            "srcs": _paths(srcs),
            "deps": [label for label, _ in _labels(args.get("deps"), root)],
            "data": _paths(data),
            "data_scripts": [label for label, named in data if named and label.endswith(".py")],
            "main": PYTEST_MAIN
            if macro
            else ast.literal_eval(args["main"])
            if "main" in args
            else None,
        }
    return targets


def _labels(node, root):
    """[(label, named)] of a list, a `glob([...])` (named False) or a sum of them."""
    if node is None:
        return []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _labels(node.left, root) + _labels(node.right, root)
    if isinstance(node, ast.List):
        return [(ast.literal_eval(e), True) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "glob":
        return [
            (Path(p).relative_to(root).as_posix(), False)
            for pattern in ast.literal_eval(node.args[0])
            for p in sorted(globlib.glob(str(root / pattern), recursive=True))
        ]
    raise ValueError(
        "BUILD: only lists, glob([...]) and their sums are understood here. "
        f"Received: {ast.unparse(node)}"
    )


def _paths(labels):
    """Paths of file labels: `:f` and `f` in the root package, `//pkg:f` in another."""
    return sorted(
        {label.removeprefix(":").replace("//", "").replace(":", "/") for label, _ in labels}
    )


def _module_file(dotted, root, path=None):
    """The file `import dotted` loads, relative to root, or None if not first-party.

    For a file of the test tree (`path` under tests/), tests/ is on sys.path too.
    """
    bases = [root]
    if path is not None and Path(path).parts[0] == "tests":
        bases.append(root / "tests")
    for base_dir in bases:
        base = base_dir.joinpath(*dotted.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.relative_to(root).as_posix()
    return None


def _package_inits(path, root):
    """The `__init__.py` files Python runs before `path`, outermost first."""
    inits = []
    parent = Path(path).parent
    while parent != Path(".") and (root / parent / "__init__.py").is_file():
        inits.insert(0, (parent / "__init__.py").as_posix())
        parent = parent.parent
    return inits


def imported_files(path, root=ROOT, source=None):
    """First-party files (relative to root) that the file `path` imports, anywhere in it."""
    source = (root / path).read_text() if source is None else source
    own_inits = _package_inits(path, root)
    here = own_inits[-1][: -len("/__init__.py")].replace("/", ".") if own_inits else None
    found = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                file = _module_file(alias.name, root, path)
                if file is None and here is None and "." not in alias.name:
                    # A bare `import helper` of a file beside a script (its folder is
                    # sys.path[0] when it runs).
                    local = Path(path).parent / f"{alias.name}.py"
                    file = local.as_posix() if (root / local).is_file() else None
                found.add(file)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if here is None:
                    raise ValueError(f"{path}: relative import outside a package")
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                # `from a import b`: the module a.b if there is one, else a name of a.
                found.add(
                    _module_file(f"{base}.{alias.name}", root, path)
                    or _module_file(base, root, path)
                )
        elif (
            isinstance(node, ast.Assign)
            and any(
                isinstance(t, ast.Name) and t.id in ("_EXPORTS", "_REGISTERED")
                for t in node.targets
            )
            and isinstance(node.value, (ast.Dict, ast.Tuple))
        ):
            # The package's lazy names, `_EXPORTS = {name: "module"}`, imported on first use,
            # and the modules Keras's table imports on demand, `_REGISTERED = ("module", ...)`.
            values = node.value.values if isinstance(node.value, ast.Dict) else node.value.elts
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.add(_module_file(value.value, root))
    found.discard(None)
    # Importing a package's module from outside runs the package's __init__.
    for file in list(found):
        found.update(init for init in _package_inits(file, root) if init not in own_inits)
    found.discard(Path(path).as_posix())
    return found


def _conftests(path, root):
    """The conftest.py files pytest loads for a test at `path`, relative to root."""
    found = []
    parent = Path(path).parent
    while True:
        candidate = parent / "conftest.py"
        if (root / candidate).is_file():
            found.append(candidate.as_posix())
        if parent == Path("."):
            return found
        parent = parent.parent


def derived_deps(targets, root=ROOT, read=None):
    """{target: sorted local labels its sources need}, and {file: target} for srcs.

    `read(path)` returns a file's text (default: read it under root).
    """
    owner = {}
    for name, target in targets.items():
        for src in target["srcs"]:
            if src in owner:
                raise ValueError(f"BUILD: {src} is in the srcs of both :{owner[src]} and :{name}")
            owner[src] = name
    derived = {}
    for name, target in targets.items():
        sources = list(target["srcs"])
        if target["rule"] == "py_test":
            sources += target["data_scripts"]
        needed = set()
        for src in sources:
            text = None if read is None else read(src)
            files = imported_files(src, root, text)
            if target["rule"] == "py_test":
                files |= set(_conftests(src, root))
            for file in files:
                if file not in owner:
                    raise ValueError(f"BUILD: {src} imports {file}, which no target has in srcs")
                needed.add(":" + owner[file])
        needed.discard(":" + name)
        derived[name] = sorted(needed)
    return derived, owner


def deps_mismatches(targets, derived):
    """Lines 'target: deps [...] but the imports need [...]' where local deps differ."""
    lines = []
    for name, target in sorted(targets.items()):
        declared = sorted(d for d in target["deps"] if d.startswith(":"))
        if declared != derived[name]:
            missing = sorted(set(derived[name]) - set(declared))
            extra = sorted(set(declared) - set(derived[name]))
            lines.append(
                f":{name}: missing {missing}, not imported {extra}; deps should be {derived[name]}"
            )
    return lines


@pytest.fixture(scope="module")
def build():
    targets = parse_build((ROOT / "BUILD").read_text())
    derived, owner = derived_deps(targets)
    return targets, derived, owner


def test_every_target_depends_on_exactly_what_its_sources_import(build):
    targets, derived, _ = build
    mismatches = deps_mismatches(targets, derived)
    assert not mismatches, "BUILD deps differ from the imports:\n" + "\n".join(mismatches)


def test_every_module_has_a_library_and_every_test_a_py_test(build):
    targets, _, owner = build
    modules = sorted(p.as_posix() for d in LIBRARY_DIRS for p in Path(ROOT, d).rglob("*.py"))
    modules = [Path(p).relative_to(ROOT).as_posix() for p in modules]
    assert [m for m in modules if targets.get(owner.get(m), {}).get("rule") != "py_library"] == []
    tests = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py"))
    assert [t for t in tests if targets.get(owner.get(t), {}).get("rule") != "py_test"] == []
    # The other files of tests/ are libraries (conftest, stand-ins), scripts a
    # test runs, named in its data, and the pytest_test main.
    scripts = {s for target in targets.values() for s in target["data_scripts"]} | {PYTEST_MAIN}
    helpers = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py"))
    assert [h for h in helpers if h not in owner and h not in scripts] == []


def test_the_test_tree_mirrors_the_packages():
    """tests/<package>/ for each sub-package of tf_autoseg that has tests; helpers in support/."""
    packages = {p.parent.name for p in (ROOT / "tf_autoseg").glob("*/__init__.py")}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name[0] not in "._"}
    assert folders - {"support"} <= packages, sorted(folders - packages)
    assert sorted(p.name for p in (ROOT / "tests" / "support").glob("test_*.py")) == []


def test_every_py_test_is_run_by_pytest_on_its_file(build):
    """Bazel runs a py_test's `main` as a script: a main that ran no test would pass. Every test
    target is a pytest_test, whose main runs pytest on the file the macro passes as argument."""
    targets, _, _ = build
    assert [
        n for n, t in targets.items() if t["rule"] == "py_test" and t["main"] != PYTEST_MAIN
    ] == []
    macro = (ROOT / "tools" / "bazel" / "pytest.bzl").read_text()
    assert "main = _MAIN" in macro and "args = [src] + pytest_args" in macro
    assert f'_MAIN = "{PYTEST_MAIN}"' in macro
    # Bazel splits each of `args` into words as a shell would ("slow or not slow" would be 4).
    for node in ast.walk(ast.parse((ROOT / "BUILD").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "pytest_args":
            for arg in ast.literal_eval(node.value):
                assert " " not in arg or arg[0] == arg[-1] == "'", f"unquoted pytest_args {arg!r}"
    runner = ast.parse((ROOT / PYTEST_MAIN).read_text())
    guarded = [
        node for node in runner.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"
    ]  # fmt: skip
    assert guarded and "pytest.main([*sys.argv[1:]" in ast.unparse(guarded[0])


def test_every_file_named_in_build_exists(build):
    targets, _, _ = build
    named = {f for target in targets.values() for f in target["srcs"] + target["data"]}
    assert sorted(f for f in named if not (ROOT / f).is_file()) == []


# The comparison itself, on a tiny fake tree: it must catch a missing and an
# extra dep, and follow imports inside functions.
FAKE_BUILD = """
package(default_visibility = ["//visibility:public"])

py_library(
    name = "a",  # a comment
    srcs = ["pkg/a.py"],
)

py_library(
    name = "b",
    srcs = ["pkg/b.py"],
    deps = [":a"],
)

py_library(
    name = "pkg",
    srcs = ["pkg/__init__.py"],
    deps = [":b"],
)

py_library(
    name = "support",
    srcs = ["tests/conftest.py"],
    deps = ["//tools:elsewhere"],
)

py_test(
    name = "test_b",
    srcs = ["tests/test_b.py"],
    data = ["tests/worker.py"],
    deps = [":a", ":b", ":pkg", ":support"],
)
"""

FAKE_FILES = {
    "pkg/__init__.py": "from pkg.b import thing\n",
    "pkg/a.py": "import os\n",
    "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
    "tests/conftest.py": "import pytest\n",
    "tests/test_b.py": "from pkg import b\n",
    "tests/worker.py": "import pkg.a\n",
}


def _fake_tree(tmp_path, build=FAKE_BUILD, **changed):
    for path, text in {**FAKE_FILES, **changed}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    targets = parse_build(build, tmp_path)
    derived, _ = derived_deps(targets, tmp_path)
    return deps_mismatches(targets, derived)


def test_comparison_accepts_the_fake_tree_and_derives_what_it_should(tmp_path):
    assert _fake_tree(tmp_path) == []
    assert imported_files("pkg/b.py", tmp_path) == {"pkg/a.py"}  # inside a function
    assert imported_files("tests/test_b.py", tmp_path) == {"pkg/b.py", "pkg/__init__.py"}
    assert imported_files("pkg/__init__.py", tmp_path) == {"pkg/b.py"}


def test_comparison_catches_a_dep_removed_from_build(tmp_path):
    broken = FAKE_BUILD.replace('deps = [":a"]', "deps = []")
    assert _fake_tree(tmp_path, broken) == [
        ":b: missing [':a'], not imported []; deps should be [':a']"
    ]


def test_comparison_catches_a_new_import_and_a_dead_dep(tmp_path):
    mismatches = _fake_tree(tmp_path, **{"pkg/b.py": "import json\n"})
    assert mismatches == [":b: missing [], not imported [':a']; deps should be []"]
    # The worker script in the test's data imports pkg.a: the test needs :a.
    mismatches = _fake_tree(tmp_path, **{"pkg/b.py": FAKE_FILES["pkg/b.py"]})
    assert mismatches == []
    broken = FAKE_BUILD.replace('[":a", ":b", ":pkg", ":support"]', '[":b", ":pkg", ":support"]')
    assert _fake_tree(tmp_path, broken) == [
        ":test_b: missing [':a'], not imported []; deps should be [':a', ':b', ':pkg', ':support']"
    ]
    broken = FAKE_BUILD.replace('[":a", ":b", ":pkg", ":support"]', '[":a", ":b", ":pkg"]')
    assert _fake_tree(tmp_path, broken) == [
        ":test_b: missing [':support'], not imported []; deps should be [':a', ':b', ':pkg', ':support']"
    ]


def test_an_import_of_a_file_in_no_target_is_named(tmp_path):
    with pytest.raises(ValueError, match="pkg/b.py imports pkg/c.py, which no target"):
        _fake_tree(tmp_path, **{"pkg/b.py": "from pkg import c\n", "pkg/c.py": ""})
