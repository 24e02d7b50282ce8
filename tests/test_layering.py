"""Imports point downward only, and torchreid's internals are reached through bridge.py alone.

Layers, lowest first: kernels (torch/triton only) < core utilities < plugins < model (the
networks of a run, ``PrivacyModel``) < engine < application (public API users: builder, attacks,
demo, export, search) < CLI. A module may import its own layer or lower ones; a new module must
be placed in a layer here (an unknown module fails the test). The graph between layers is
printed (``pytest -s tests/test_layering.py``).
"""
import ast
import collections
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# installed name -> source folder (setup.py's package_dir)
PACKAGES = {"torchreid_privacy": "torchreid_privacy", "torchreid_privacy.plugins": "plugins",
            "torchreid_privacy.kernels": "kernels"}
LAYERS = ["kernels", "core", "plugins", "model", "engine", "application", "cli"]
# module prefix -> layer (the longest matching prefix wins)
PLACES = {
    "torchreid_privacy.kernels": "kernels",
    # registry, bridge, config, desensitize, data/, metrics/, sealing/, utils/, visualization/
    "torchreid_privacy": "core",
    "torchreid_privacy.plugins": "plugins",
    "torchreid_privacy.models": "model",
    "torchreid_privacy.inference": "model",
    "torchreid_privacy.plugins.engine": "engine",
    "torchreid_privacy.builder": "application",
    "torchreid_privacy.trained_run": "application",
    "torchreid_privacy.attacks": "application",
    "torchreid_privacy.export": "application",
    "torchreid_privacy.bench": "application",
    "torchreid_privacy.folders": "application",
    "torchreid_privacy.search": "application",
    "torchreid_privacy.studies": "application",
    "torchreid_privacy.video.anonymize": "application",  # runs a trained run's G (inference.load)
    "torchreid_privacy.cli": "cli",
    "torchreid_privacy.__main__": "cli",
}
# the package's own __init__ is the public API: it may name (lazily) any layer below the CLI
API_MODULE = "torchreid_privacy"
KERNEL_DEPENDENCIES = {"torch", "triton", "numpy"}
# torchreid internals only bridge.py may touch (attribute names and registry names)
TORCHREID_PRIVATE_ATTRS = {"_models", "_optims", "_scheds"}
FRAME_ATTRS = {"tb_frame", "f_locals", "f_back"}
TORCHREID_PRIVATE_NAMES = {"__model_factory", "__image_datasets"}


def _modules():
    """(module name, path) of every source file of the three packages."""
    for package, folder in PACKAGES.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, base)
            if package == "torchreid_privacy" and rel.split(os.sep)[0] in ("plugins", "kernels"):
                continue
            for name in files:
                if not name.endswith(".py"):
                    continue
                parts = [] if rel == "." else rel.split(os.sep)
                stem = name[:-3]
                mod = ".".join([package, *parts] + ([] if stem == "__init__" else [stem]))
                yield mod, os.path.join(dirpath, name), stem == "__init__"


MODULES = {mod: (path, is_pkg) for mod, path, is_pkg in _modules()}


def _layer(mod):
    best = max((p for p in PLACES if mod == p or mod.startswith(p + ".")), key=len, default=None)
    return PLACES.get(best)


def _imports(mod, path, is_pkg):
    """Absolute names imported anywhere in the file (function-level imports included)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = mod if is_pkg else mod.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # "from pkg import name": name may be a submodule
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def _graph():
    edges = collections.Counter()
    upward = []
    for mod, (path, is_pkg) in sorted(MODULES.items()):
        src = "api" if mod == API_MODULE else _layer(mod)
        for target in _imports(mod, path, is_pkg):
            if not target.startswith("torchreid_privacy"):
                continue
            dst = _layer(target)
            edges[(src, dst)] += 1
            if src == "api":
                if dst == "cli":
                    upward.append(f"{mod} -> {target}")
            elif LAYERS.index(dst) > LAYERS.index(src):
                upward.append(f"{mod} ({src}) -> {target} ({dst})")
    return edges, upward


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if m != API_MODULE and _layer(m) is None]


def test_imports_point_downward_only():
    edges, upward = _graph()
    print("\nimport graph between layers (edges: count):")
    for (src, dst), n in sorted(edges.items(), key=lambda e: (e[0][0] == "api", LAYERS.index(e[0][0])
                                                               if e[0][0] in LAYERS else 0, e[0][1])):
        print(f"  {src:>11s} -> {dst:<11s} {n}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) == "kernels"))
def test_kernels_depend_on_torch_and_triton_only(mod):
    path, is_pkg = MODULES[mod]
    import sys

    stdlib = set(sys.stdlib_module_names)
    bad = [t for t in _imports(mod, path, is_pkg)
           if t.split(".")[0] not in KERNEL_DEPENDENCIES | stdlib and not t.startswith("torchreid_privacy.kernels")]
    assert not bad, f"{mod} imports {bad}"


def test_torchreid_internals_only_in_bridge():
    offenders = []
    for mod, (path, _) in MODULES.items():
        source = open(path, encoding="utf-8").read()
        tree = ast.parse(source, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in TORCHREID_PRIVATE_ATTRS | FRAME_ATTRS:
                if mod != "torchreid_privacy.bridge":
                    offenders.append(f"{mod}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.Constant) and node.value in TORCHREID_PRIVATE_NAMES:
                if mod != "torchreid_privacy.bridge":
                    offenders.append(f"{mod}:{node.lineno} {node.value!r}")
    assert not offenders, "torchreid internals outside bridge.py:\n" + "\n".join(offenders)


def test_bridge_is_where_the_internals_are():
    """The list above is not stale: bridge.py really uses each internal it guards."""
    source = open(os.path.join(ROOT, "torchreid_privacy", "bridge.py"), encoding="utf-8").read()
    for name in TORCHREID_PRIVATE_ATTRS | {"tb_frame", "f_locals"}:
        assert f".{name}" in source, name
    for name in TORCHREID_PRIVATE_NAMES:
        assert name in source, name


def test_tests_import_their_helpers_as_plain_pytest_finds_them():
    """``pytest`` (as CI runs it) puts ``tests/`` on sys.path, not the repository root: a test that
    imports ``tests.tiny_config`` passes under ``python -m pytest`` and fails to collect in CI."""
    tests_dir = os.path.join(ROOT, "tests")
    offenders = []
    for dirpath, _, files in os.walk(tests_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                offenders += [f"{os.path.relpath(path, ROOT)}:{node.lineno}" for node in ast.walk(tree)
                              if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests"
                              or isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tests"
                                                                      for a in node.names)]
    assert not offenders, f"import from 'tests.' (write 'from tiny_config import ...'): {offenders}"


def _cycles(graph):
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _module_graph():
    graph = collections.defaultdict(set)
    for mod, (path, is_pkg) in MODULES.items():
        graph[mod] |= {t for t in _imports(mod, path, is_pkg) if t in MODULES and t != mod}
    return graph


def test_no_import_circles_between_modules():
    """A circle (``synthetic`` importing ``synthetic_hard`` importing ``synthetic``) means neither
    module can be read, tested or moved alone; function-level imports count too."""
    assert not _cycles(_module_graph())


def test_no_import_circles_between_packages():
    """Packages form a ladder: if ``attacks`` uses ``folders``, ``folders`` never uses ``attacks``
    (a package and its own subpackages are one room)."""
    def package(mod):
        return mod if MODULES[mod][1] else mod.rsplit(".", 1)[0]

    graph = collections.defaultdict(set)
    for mod, targets in _module_graph().items():
        for target in targets:
            a, b = package(mod), package(target)
            if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
                graph[a].add(b)
    assert not _cycles(graph)


def test_cycle_finder_finds_a_circle():
    """The two tests above can fail: the finder reports a planted circle."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
