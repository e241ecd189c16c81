"""The package's import graph: layers that import only downwards, and no cycle.

Read from the source with ``ast`` (every import counts: those under ``TYPE_CHECKING`` and
those inside functions too), so the test needs nothing installed. Each library module has a
layer; commands and tools (``pghub.cli``, ``pghub.tools``, ...) sit above the library, which
never imports them. A new module must be given its layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "pghub"

# Top to bottom; a module imports only from the layers below its own.
LAYERS: list[tuple[str, ...]] = [
    ("pghub",),  # the public names
    ("pghub.hub", "pghub.aio", "pghub._sqlnotify", "pghub.install"),
    ("pghub._hubbase",),
    ("pghub._consumer", "pghub._registry", "pghub._ticker"),
    ("pghub._reader",),  # durable consumers' reader session and step drivers
    ("pghub._engine",),  # the driver: inbox, poll(), session, clock
    ("pghub._lifecycle",),  # its thread's life as callers see it: started, stopped, forked
    ("pghub._router", "pghub._session", "pghub._inbox", "pghub._fork", "pghub._waitroom"),
    ("pghub._core", "pghub._durable", "pghub._resync"),  # the decisions, without I/O
    ("pghub._subscriptions", "pghub._outbox", "pghub._mailbox", "pghub._backoff", "pghub.wire"),
    ("pghub._pool",),  # the sync hub's callback pool: threads running consumers' turns
    ("pghub._jsonread",),  # the JSON part of a payload, read strictly
    ("pghub._canonical", "pghub._options", "pghub.stats", "pghub.events", "pghub._log"),
    ("pghub.errors",),
]
# Above the library: they may import any of it, it imports none of them.
TOOLS = ("pghub.__main__", "pghub.cli", "pghub.tools", "pghub.testing", "pghub.metrics")
TOOLS += ("pghub.docs",)
# The core decides without doing: none of these, directly or through what it imports.
NO_IO = ("socket", "select", "threading", "time", "psycopg", "asyncio")
PURE = ("pghub._core", "pghub._router", "pghub._durable")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(pghub modules, other top-level packages) that ``module`` imports anywhere."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.split(".")[0] == "pghub" else theirs).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "pghub":
                theirs.add(target)
                continue
            for alias in node.names:  # "from . import x" imports module x
                name = f"{target}.{alias.name}"
                ours.add(name if name in MODULES else target)
    ours = {_owner(name) for name in ours} - {module}
    return ours, {name.split(".")[0] for name in theirs} - {"__future__"}


def _owner(name: str) -> str:
    """The module a dotted name lives in (a package's submodule, or the package)."""
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def _layer(module: str) -> int:
    if module.startswith(TOOLS):
        return -1
    for index, layer in enumerate(LAYERS):
        if module in layer:
            return index
    raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")


GRAPH = {module: _imports(module)[0] for module in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)
    listed = {m for layer in LAYERS for m in layer}
    assert listed <= set(MODULES), f"LAYERS names modules that are gone: {listed - set(MODULES)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    mine = _layer(module)
    if mine < 0:
        return  # commands and tools may use any of the library
    upward = sorted(m for m in GRAPH[module] if _layer(m) <= mine)
    assert not upward, f"{module} (layer {mine}) imports its own layer or one above: {upward}"


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components, iteratively: any component of two or more
    # modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for root in GRAPH:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", PURE)
def test_the_core_imports_no_io(module: str) -> None:
    """Neither the core nor anything it imports reaches for sockets, threads, clocks or
    libpq: its decisions are tested without them."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(GRAPH[current])
        outside = _imports(current)[1] & set(NO_IO)
        assert not outside, f"{module} reaches {sorted(outside)} through {current}"
    assert "pghub._session" not in seen


def test_the_graph_is_read_right() -> None:
    """The reader finds imports of every form this package uses (so the tests above can
    fail): relative, absolute, 'from . import module', under TYPE_CHECKING."""
    assert {"pghub._core", "pghub._session", "pghub._inbox"} <= GRAPH["pghub._engine"]
    assert "pghub._registry" in GRAPH["pghub._hubbase"]  # "from . import _registry"
    assert "pghub.aio" in GRAPH["pghub"]
    assert {"socket"} <= _imports("pghub._inbox")[1]
