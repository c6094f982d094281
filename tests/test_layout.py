"""The layout stays as docs/design.md draws it: modules of one job that a reader takes in at
one sitting (at most 600 lines, functions at most 60), imports that point one way, the GPU's
libraries only where the TensorRT path lives, and nothing started by an import."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
# The only modules that may import TensorRT, pycuda or GStreamer bindings.
HARDWARE_MODULES = {"get_engine", "common"}
HARDWARE_LIBRARIES = {"tensorrt", "pycuda", "gi"}


def runtime_modules():
    """{module name: path} of the product's Python modules: the root's and its packages'."""
    found = {}
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in
                         ("tests", "bench", "docs", "static", "templates", "nginx", "__pycache__")]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return found


def parsed(path):
    with open(path) as handle:
        return ast.parse(handle.read(), path)


def imported_names(tree):
    """Every module name an import anywhere in `tree` (function bodies too) names: `from a
    import b` names a, and a.b in case b is a module. (A package's __init__, which Python runs
    before its modules, is not taken as imported by them.)"""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(node.module + "." + alias.name for alias in node.names)
    return names


def import_graph(modules):
    """{module: the product's modules it imports}."""
    graph = {}
    for module, path in modules.items():
        names = imported_names(parsed(path))
        graph[module] = {name for name in names if name in modules} - {module}
    return graph


def cycle_in(graph):
    """A list of modules that import each other round in a circle, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None
    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_modules_and_functions_are_small_enough_to_read():
    too_long = []
    for module, path in sorted(runtime_modules().items()):
        with open(path) as handle:
            lines = handle.read().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append("{}: {} lines".format(module, lines))
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append("{}:{} {}: {} lines".format(module, node.lineno, node.name, length))
    assert not too_long, "split these by job: " + "; ".join(too_long)


def test_imports_point_one_way():
    graph = import_graph(runtime_modules())
    assert {"app", "camera", "web", "sources"} <= set(graph)  # the walk found the product
    assert cycle_in(graph) is None, "an import cycle: " + " -> ".join(cycle_in(graph))
    assert "web" not in graph["camera"] and "app" not in set().union(*graph.values())


def test_a_cycle_is_found_where_there_is_one():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_gpu_libraries_are_imported_only_by_the_tensorrt_path():
    importers = {module: sorted(name for name in imported_names(parsed(path))
                                if name.split(".")[0] in HARDWARE_LIBRARIES)
                 for module, path in runtime_modules().items()}
    assert importers["get_engine"] and importers["common"]  # the check looks where they are
    assert {module for module, names in importers.items() if names} <= HARDWARE_MODULES, importers


def test_importing_a_module_starts_nothing():
    """No thread, no child process, no camera: uWSGI imports the app and may fork after."""
    script = ("import importlib, os, sys, threading\n"
              "for name in sys.argv[1:]:\n"
              "    importlib.import_module(name)\n"
              "    assert threading.active_count() == 1, (name, threading.enumerate())\n"
              "print('imported', len(sys.argv) - 1)\n")
    modules = sorted(runtime_modules())
    result = subprocess.run([sys.executable, "-c", script] + modules, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 0 and "imported {}".format(len(modules)) in result.stdout, result.stdout
