"""The package's import graph: no cycle (lazy imports inside functions count), data flows one way
(data_gen imports no dermvqa code), and data_gen.records serves records only, never file helpers."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("atomic_files", "chat_endpoint", "data_gen", "dermvqa")
RECORD_NAMES = {"CLOSED", "OPEN", "QARecord", "SCHEMA", "Records", "open_records", "read_records", "write_parquet"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, list[tuple[str, list[str]]]]:
    """{module: [(imported module, names taken from it), ...]} for every module of our packages."""
    graph = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            name, edges = module_name(path), []
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    edges += [(a.name, []) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    edges.append((node.module, [a.name for a in node.names]))
            graph[name] = [(m, names) for m, names in edges if m.split(".")[0] in PACKAGES]
    return graph


def resolve(target: str, names: list[str], modules: set[str]) -> set[str]:
    """The modules an import reaches: `from pkg import mod` names a module, `from mod import f` the module."""
    reached = {f"{target}.{n}" for n in names if f"{target}.{n}" in modules}
    if target in modules and (not names or len(reached) < len(names)):
        reached.add(target)
    return reached


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    modules = set(graph)
    edges = {m: sorted({r for t, names in graph[m] for r in resolve(t, names, modules)} - {m}) for m in graph}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycle_in_the_package():
    assert cycles(imports()) == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = imports()
    graph["dermvqa.trust.alert"] = graph["dermvqa.trust.alert"] + [("dermvqa.infer.report", ["build_report"])]
    assert ["dermvqa.infer.report", "dermvqa.trust.alert"] in cycles(graph)


def test_data_flows_one_way_and_records_serve_records_only():
    graph = imports()
    upstream = [(m, t) for m, edges in graph.items() if m.startswith("data_gen") for t, _ in edges
                if t.startswith("dermvqa")]
    assert upstream == []
    misuse = [(m, names) for m, edges in graph.items() for t, names in edges
              if t == "data_gen.records" and not set(names) <= RECORD_NAMES]
    assert misuse == []
