"""The project's modules import each other one way: no two of them, directly or through others,
import each other, at module level or inside a function; and model/ needs nothing of utils/.

Read from the source with `ast`, without importing anything. `import a.b` is an edge to a.b;
`from a import b` is an edge to the package a and, when a.b is a module, to a.b too (a name
that is not a module is an edge to the module that defines it); relative imports resolve
against the importing package. A name outside the project (numpy, keras) is no edge.
"""
import ast
import os

from tests.conftest import ROOT


def project_modules(root):
    """{dotted module name: path} of every .py file under `root`, tests and hidden folders
    left out (a package is named by its folder, its __init__.py)."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "tests")
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    return modules


def imported_names(tree, module, is_package):
    """Every dotted name `module`'s source imports, anywhere in it (functions included)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root):
    """{module: set of project modules it imports}."""
    modules = project_modules(root)
    graph = {}
    for module, path in modules.items():
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        edges = set()
        for name in imported_names(tree, module, path.endswith("__init__.py")):
            # The longest prefix that is a project module: `from a.b import f` -> a.b.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                edges.add(name)
        graph[module] = edges
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_function_level_and_submodule_imports(tmp_path):
    for path, source in {
        "pkg/__init__.py": "from pkg.low import thing\n",
        "pkg/low.py": "thing = 1\n",
        "pkg/high.py": "def late():\n    from pkg import low\n    from . import other\n",
        "pkg/other.py": "import pkg.high as high\nimport numpy\n",
    }.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(source)
    graph = import_graph(str(tmp_path))
    assert graph == {"pkg": {"pkg.low"}, "pkg.low": set(), "pkg.high": {"pkg", "pkg.low",
                                                                           "pkg.other"},
                     "pkg.other": {"pkg.high"}}
    assert cycles(graph) == [["pkg.high", "pkg.other"]]


def test_no_two_project_modules_import_each_other():
    graph = import_graph(ROOT)
    assert {"utils.data.formats", "model.networks", "train_MNIST2MNIST_M"} <= set(graph)
    assert cycles(graph) == []


def test_the_model_imports_nothing_of_utils_or_config():
    """Importing the networks runs no utils/__init__.py (its environment settings and import
    hook) and no config: model/ is below both."""
    graph = import_graph(ROOT)
    for module in (name for name in graph if name == "model" or name.startswith("model.")):
        outside = {name for name in graph[module]
                   if name.split(".")[0] in ("utils", "config", "train_MNIST2MNIST_M")}
        assert not outside, f"{module} imports {sorted(outside)}"


def test_bad_input_fails_before_tensorflow_loads():
    """The train script's flags, config and data checks run without TensorFlow, so a bad
    command fails in a second: importing the script must not import it."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import sys, train_MNIST2MNIST_M; print('tensorflow' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
    assert completed.stdout.strip() == "False", completed.stderr[-2000:]
