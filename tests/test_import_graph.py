"""The package's layering: every module imports without ComfyUI, and the graph of relative imports
inside the pack (at module level or inside functions) has no cycle."""

import ast
import importlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "orbitforge"
SKIP_DIRS = {"tests", "example_workflows", "assets"}  # scripts and data, not modules of the package


def package_modules() -> dict:
    """Dotted module name -> source path, for every module of the package."""
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if not all((ROOT.joinpath(*rel.parts[:i]) / "__init__.py").is_file()
                   for i in range(len(rel.parts))):
            continue  # not inside a package
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join([PACKAGE] + parts)] = path
    return mods


def import_graph(mods: dict) -> dict:
    """Module -> the package modules it imports relatively (``from . import x``, ``from .a import
    b``), wherever in the file the import statement is."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
            deps.update(submodules)
            if target in mods and (node.module or len(submodules) < len(node.names)):
                deps.add(target)  # names taken from the module (or package __init__) itself
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_imports_inside_functions(tmp_path):
    mods = {"orbitforge.k": tmp_path / "__init__.py", "orbitforge.k.a": tmp_path / "a.py",
            "orbitforge.k.b": tmp_path / "b.py"}
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from . import a\n")
    graph = import_graph(mods)
    assert graph["orbitforge.k.a"] == {"orbitforge.k.b"}
    assert graph["orbitforge.k.b"] == {"orbitforge.k.a"}
    assert find_cycle(graph) is not None


def test_package_import_graph_is_acyclic():
    mods = package_modules()
    assert {"orbitforge.kernels.splat.rasterize", "orbitforge.nodes.host.guiders"} <= set(mods)
    cycle = find_cycle(import_graph(mods))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_imports():
    for name in package_modules():
        if name.endswith("__main__"):
            continue  # runs the CLI
        importlib.import_module(name)


# The layers (ARCHITECTURE.md): who may import whom inside the pack, and who may import ComfyUI.
ALLOWED = {
    "kernels": {"kernels"},
    "host": {"host", "kernels"},
    "nodes": {"nodes", "host", "kernels"},
    # the pack's node registry, read lazily for its schemas
    "workflow_tools": {"workflow_tools", "nodes"},
    "bench": {"bench", "nodes", "host", "kernels", "workflow_tools"},
    "root": {"root", "nodes", "kernels", "workflow_tools"},
}
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths",
                   "server", "execution", "latent_preview", "node_helpers", "nodes"}
MAY_IMPORT_COMFYUI = {"host", "bench"}


def layer(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:2] == ["nodes", "host"]:
        return "host"
    if parts and parts[0] in ("kernels", "nodes", "workflow_tools", "bench"):
        return parts[0]
    return "root"  # the package __init__, __main__, demo


def comfyui_imports(path: pathlib.Path) -> set:
    """Top-level ComfyUI modules a file imports (absolute imports, anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & COMFYUI_MODULES


def test_layers_import_only_what_they_may():
    mods = package_modules()
    graph = import_graph(mods)
    wrong = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                   if layer(b) not in ALLOWED[layer(a)])
    assert not wrong, "imports across layers: " + ", ".join(wrong)
    host_users = sorted(f"{name}: {sorted(comfyui_imports(path))}" for name, path in mods.items()
                        if layer(name) not in MAY_IMPORT_COMFYUI and comfyui_imports(path))
    assert not host_users, "ComfyUI imported outside nodes/host and bench: " + ", ".join(host_users)


def test_layer_rules_catch_a_kernel_importing_a_node(tmp_path):
    (tmp_path / "k.py").write_text("from ..nodes import host\nimport folder_paths\n")
    (tmp_path / "n.py").write_text("")
    mods = {"orbitforge.kernels.k": tmp_path / "k.py", "orbitforge.nodes": tmp_path / "n.py"}
    graph = import_graph(mods)
    assert "orbitforge.nodes" in graph["orbitforge.kernels.k"]
    assert layer("orbitforge.nodes") not in ALLOWED[layer("orbitforge.kernels.k")]
    assert comfyui_imports(tmp_path / "k.py") == {"folder_paths"}


# Inside kernels/: one subpackage per pipeline stage, in data-flow order (kernels/__init__.py). A
# stage may import the stages before it, and the shared top-level modules that import no stage.
KERNEL_STAGES = ["geometry", "diffusion", "splat", "mesh", "priors", "dynamic"]
SHARED_KERNEL_MODULES = {"atomic", "interrupt", "inputs", "metrics", "sample"}


def stage(module: str):
    """The kernel stage a module belongs to, "shared" for a top-level kernels module, else None."""
    parts = module.split(".")[1:]
    if parts[:1] != ["kernels"] or len(parts) < 2:
        return None
    return parts[1] if parts[1] in KERNEL_STAGES else "shared"


def stage_violations(graph: dict) -> list:
    wrong = []
    for a, deps in graph.items():
        sa = stage(a)
        if sa not in KERNEL_STAGES:
            continue
        for b in deps:
            sb = stage(b)
            if sb in KERNEL_STAGES and KERNEL_STAGES.index(sb) > KERNEL_STAGES.index(sa):
                wrong.append(f"{a} -> {b} (later stage)")
            elif sb == "shared" and any(stage(c) in KERNEL_STAGES for c in graph.get(b, ())):
                wrong.append(f"{a} -> {b} (a shared module that imports a stage)")
    return sorted(wrong)


def test_kernels_are_grouped_by_stage_in_data_flow_order():
    mods = package_modules()
    assert all(f"orbitforge.kernels.{s}" in mods for s in KERNEL_STAGES)
    top = {m.split(".")[2] for m in mods
           if m.count(".") == 2 and m.startswith("orbitforge.kernels.")}
    assert top - set(KERNEL_STAGES) == SHARED_KERNEL_MODULES, (
        "kernels/ top level holds only the stages and the shared modules; put a new kernel module "
        "into its stage's subpackage")
    wrong = stage_violations(import_graph(mods))
    assert not wrong, "kernel stage imports against the data flow: " + ", ".join(wrong)


def test_stage_rules_catch_an_import_against_the_data_flow(tmp_path):
    for name in ("fit.py", "render.py", "metrics.py", "cameras.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "fit.py").write_text("from ..mesh import render\nfrom .. import metrics\n")
    (tmp_path / "metrics.py").write_text("from .mesh import render\n")
    (tmp_path / "cameras.py").write_text("from .. import metrics\n")
    mods = {"orbitforge.kernels": tmp_path / "__init__.py",
            "orbitforge.kernels.splat.fit": tmp_path / "fit.py",
            "orbitforge.kernels.mesh.render": tmp_path / "render.py",
            "orbitforge.kernels.metrics": tmp_path / "metrics.py",
            "orbitforge.kernels.geometry.cameras": tmp_path / "cameras.py"}
    (tmp_path / "__init__.py").write_text("")
    graph = import_graph(mods)
    assert graph["orbitforge.kernels.splat.fit"] == {"orbitforge.kernels.mesh.render",
                                                     "orbitforge.kernels.metrics"}
    assert stage_violations(graph) == [
        "orbitforge.kernels.geometry.cameras -> orbitforge.kernels.metrics (a shared module that "
        "imports a stage)",
        "orbitforge.kernels.splat.fit -> orbitforge.kernels.mesh.render (later stage)",
        "orbitforge.kernels.splat.fit -> orbitforge.kernels.metrics (a shared module that imports "
        "a stage)"]
    assert stage_violations({"orbitforge.kernels.mesh.render": {"orbitforge.kernels.splat.fit"},
                             "orbitforge.kernels.splat.fit": set()}) == []
