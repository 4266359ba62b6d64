"""The stages share code only through pipeline/: no stage imports another, pipeline/ imports no stage,
and no two product modules import each other in a circle. Imports inside functions count: the graph is
read with `ast` from every import statement in a file, wherever it stands."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = "pipeline"
STAGES = ("train", "export", "evaluate")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules():
    return {module_name(f): f for pkg in (LIBRARY, *STAGES) for f in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path, name, known):
    """Product modules `path` imports (`from a import b` counts as a.b when a.b is a module, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.setdefault(t, node.lineno)
    return found


def graph():
    known = product_modules()
    return {name: imports_of(path, name, known) for name, path in known.items()}, known


def boundary_violations(g, known):
    out = []
    for src, deps in g.items():
        a = src.split(".")[0]
        for dst, line in deps.items():
            b = dst.split(".")[0]
            if a != b and (a == LIBRARY or b != LIBRARY):
                why = "pipeline/ imports a stage" if a == LIBRARY else "a stage imports another stage"
                out.append(f"{known[src].relative_to(ROOT)}:{line} imports {dst} ({why})")
    return sorted(out)


def circles(g):
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_stages_share_code_only_through_pipeline():
    g, known = graph()
    assert boundary_violations(g, known) == []


def test_no_product_modules_import_each_other_in_a_circle():
    g, known = graph()
    found = circles(g)
    where = [" -> ".join(c) + ": " + "; ".join(f"{a} imports {b} at line {g[a][b]}" for a in c for b in c
                                                if b in g[a]) for c in found]
    assert found == [], where


def test_the_checker_names_a_cross_stage_import_and_a_circle(tmp_path):
    """The checks can fail: a stage importing another, and two modules importing each other."""
    g = {"evaluate.gates": {"export.mobile": 15}, "export.mobile": {"pipeline.atomic": 3},
         "pipeline.atomic": {}, "export.a": {"export.b": 4}, "export.b": {"export.a": 9}}
    known = {n: ROOT / (n.replace(".", "/") + ".py") for n in g}
    assert boundary_violations(g, known) == ["evaluate/gates.py:15 imports export.mobile (a stage imports another stage)"]
    assert circles(g) == [["export.a", "export.b"]]
    # and the parser sees an import inside a function
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from export.run import export_all\n")
    assert imports_of(src, "evaluate.mod", {"export.run": None, "export": None, "evaluate.mod": None}) == \
        {"export.run": 2}
