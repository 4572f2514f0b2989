"""The layers of mtlkit, checked on its own imports (docs/architecture.md, "Layers").

Every module of ``mtlkit/`` and of the built-in plugins (``plugins/``, the
package ``mtlkit_plugins``) is read with ``ast`` (nothing is imported) and
each ``import`` statement resolved to the module of this tree it names.
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
The tests fail when

* a module imports a module of a higher layer (:data:`LAYERS`, lowest first);
* an import stands inside a function without a comment ``# optional: <the
  dependency>`` on its line or the line above (the import is late because
  that dependency may be missing), :data:`LAZY` excepted;
* a framework module imports a built-in (:data:`BUILTINS`): the framework
  reaches the built-ins through the registry only, as it reaches a
  third-party plugin;
* the module-level imports of the tree form a cycle;
* the engine names a dataset.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: package -> its folder in the checkout
PACKAGES = {"mtlkit": os.path.join(ROOT, "mtlkit"), "mtlkit_plugins": os.path.join(ROOT, "plugins")}

#: the layers, lowest first: a module may import its own layer and those below,
#: never one above (a name matches a module and everything below it)
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    # errors, the version, small utilities (frozen containers, atomic files, the
    # YAML reader, BN folding, weight files) and the one option rule
    ("foundation", ("mtlkit.errors", "mtlkit.version", "mtlkit.utils", "mtlkit.options")),
    # the interfaces and base classes plugins implement, the hook specs, the
    # config's schemas; the package face (``mtlkit``: errors, hookimpl, version)
    ("interfaces", ("mtlkit.task", "mtlkit.fusion", "mtlkit.weighting", "mtlkit.gradient_weighting",
                    "mtlkit.backbone", "mtlkit.hookspecs", "mtlkit.schema", "mtlkit")),
    # the registry, the validation pass and the resolved config, the config files
    ("config", ("mtlkit.registry", "mtlkit.resolved", "mtlkit.config")),
    ("ops", ("mtlkit.ops",)),
    ("metrics and pictures", ("mtlkit.metrics", "mtlkit.viz")),
    ("data", ("mtlkit.data",)),
    ("models", ("mtlkit.models",)),
    # the built-ins registered as plugins (they import what they register)
    ("plugins", ("mtlkit_plugins",)),
    ("engine", ("mtlkit.engine",)),
    # test-time adaptation: steps and hooks on the engine's trainer (``mtlkit adapt``)
    ("adaptation", ("mtlkit.adaptation",)),
    ("applications", ("mtlkit.research", "mtlkit.commands", "mtlkit.cli", "mtlkit.__main__")),
]

#: the built-in implementations the plugins register; only the plugins, the
#: built-ins themselves, the applications and the package faces that offer
#: them to users (``mtlkit.data``) import them
BUILTINS = ("mtlkit.models.ssd", "mtlkit.models.auxiliary_tasks", "mtlkit.models.fusions",
            "mtlkit.models.weightings", "mtlkit.models.gradient_weightings", "mtlkit.models.backbones",
            "mtlkit.data.synthetic", "mtlkit.data.nyuv2", "mtlkit.data.coco", "mtlkit.data.concat")
MAY_IMPORT_BUILTINS = BUILTINS + ("mtlkit_plugins", "mtlkit.commands", "mtlkit.research", "mtlkit.data")

#: late imports that are no optional dependency, each with why
LAZY = {
    ("mtlkit", "mtlkit.models.compose"):
        "mtlkit.build_model on first use: `import mtlkit.<module>` stays free of the model stack "
        "(tests/test_config.py: the data package does not import the config loader)",
}

OPTIONAL = re.compile(r"#\s*optional:\s*\S")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest name that ``module`` is under."""
    best, best_len = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            matches = module == name if name == "mtlkit" else _under(module, name)
            if matches and len(name) > best_len:
                best, best_len = index, len(name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def modules() -> Dict[str, str]:
    """Module name -> file, for every module of the tree."""
    found = {}
    for package, folder in PACKAGES.items():
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), folder)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join([package] + rel)] = os.path.join(dirpath, f)
    return found


MODULES = modules()


class Import:
    def __init__(self, source: str, target: str, line: int, late: bool, text: str, comment_ok: bool):
        self.source, self.target, self.line, self.late = source, target, line, late
        self.text, self.comment_ok = text, comment_ok

    def __repr__(self) -> str:
        where = os.path.relpath(MODULES[self.source], ROOT)
        return f"{where}:{self.line}: {self.text.strip()}"


def _resolve(source: str, node: ast.AST) -> Iterator[str]:
    """The modules of the tree an import statement names."""
    is_package = MODULES[source].endswith("__init__.py")
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    if node.level:
        base = source.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        parent = ".".join(base + ([node.module] if node.module else []))
    else:
        parent = node.module or ""
    for alias in node.names:
        full = f"{parent}.{alias.name}"
        if full in MODULES:
            yield full
        elif parent in MODULES:
            yield parent


def _type_checking_lines(tree: ast.AST) -> set:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports() -> List[Import]:
    out = []
    for source, path in MODULES.items():
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        tree = ast.parse(text)
        annotations_only = _type_checking_lines(tree)
        late_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late_nodes.update(id(sub) for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in annotations_only:
                continue
            here = lines[node.lineno - 1]
            above = lines[node.lineno - 2] if node.lineno >= 2 else ""
            ok = bool(OPTIONAL.search(here) or (above.strip().startswith("#") and OPTIONAL.search(above)))
            for target in _resolve(source, node):
                if target != source:
                    out.append(Import(source, target, node.lineno, id(node) in late_nodes, here, ok))
    return out


IMPORTS = imports()


def test_the_scan_reads_the_tree():
    # the scan would pass vacuously if it found nothing: it knows the layers' members
    assert {"mtlkit.config", "mtlkit.task", "mtlkit.engine.trainer", "mtlkit_plugins.detection"} <= set(MODULES)
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("mtlkit.engine.trainer", "mtlkit.models.compose") in edges
    assert ("mtlkit_plugins.detection", "mtlkit.models.ssd.task") in edges
    assert ("mtlkit.models.ssd.task", "mtlkit.models.ssd.head") in edges  # relative imports resolved
    for module in MODULES:
        layer_of(module)  # every module is in a layer


def test_no_module_imports_a_higher_layer():
    upward = [f"{i!r} ({LAYERS[layer_of(i.source)][0]} imports {LAYERS[layer_of(i.target)][0]})"
              for i in IMPORTS if layer_of(i.target) > layer_of(i.source)
              and (i.source, i.target) not in LAZY]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_late_imports_are_optional_dependencies_with_a_comment():
    late = [repr(i) for i in IMPORTS if i.late and not i.comment_ok and (i.source, i.target) not in LAZY]
    # imports of other distributions count too: the scan above sees only this tree's
    for source, path in MODULES.items():
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        targets = list(_resolve(source, sub))
                        if targets:
                            continue  # this tree's: judged above
                        here, above = lines[sub.lineno - 1], lines[sub.lineno - 2]
                        if not (OPTIONAL.search(here) or (above.strip().startswith("#") and OPTIONAL.search(above))):
                            late.append(f"{os.path.relpath(path, ROOT)}:{sub.lineno}: {here.strip()}")
    assert not late, ("imports inside functions without an '# optional: <dependency>' comment "
                      "(move them to the top of the module):\n" + "\n".join(late))


def test_the_lazy_exceptions_still_exist():
    found = {(i.source, i.target) for i in IMPORTS if i.late}
    assert set(LAZY) <= found, f"stale LAZY entries: {set(LAZY) - found}"


def test_the_framework_imports_no_builtin():
    def builtin(name: str) -> bool:
        return any(_under(name, b) for b in BUILTINS)

    bad = [repr(i) for i in IMPORTS if builtin(i.target) and not builtin(i.source)
           and not any(_under(i.source, m) if m != "mtlkit.data" else i.source == m for m in MAY_IMPORT_BUILTINS)]
    assert not bad, "framework modules importing a built-in (go through the registry):\n" + "\n".join(bad)


def _cycle(graph: Dict[str, List[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_module_level_imports_have_no_cycle():
    graph: Dict[str, List[str]] = {}
    for i in IMPORTS:
        if not i.late:
            graph.setdefault(i.source, []).append(i.target)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_names_no_dataset():
    # `grep -rnw synthetic mtlkit/engine` finds nothing ...
    engine = {name: path for name, path in MODULES.items() if _under(name, "mtlkit.engine")}
    hits = [f"{os.path.relpath(path, ROOT)}:{n}" for path in engine.values()
            for n, line in enumerate(open(path, encoding="utf-8"), 1) if re.search(r"\bsynthetic\b", line)]
    assert not hits, f"the engine names the synthetic dataset: {hits}"
    # ... and no string of its code is a built-in dataset's name (the paper's NYUv2
    # figures may be named in prose)
    names = {"synthetic", "nyuv2", "coco", "concat"}
    strings = [f"{os.path.relpath(path, ROOT)}:{node.lineno}" for path in engine.values()
               for node in ast.walk(ast.parse(open(path, encoding="utf-8").read()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names]
    assert not strings, f"the engine names a dataset: {strings}"


def test_the_checks_fail_on_a_bad_tree(tmp_path, monkeypatch):
    # the rules above can fail: a fake module importing upward, late and a built-in
    bad = tmp_path / "bad.py"
    bad.write_text("from mtlkit.engine import trainer\n"
                   "def f():\n    import mtlkit.viz\n"
                   "from mtlkit.data.synthetic import SyntheticRooms\n")
    monkeypatch.setitem(MODULES, "mtlkit.options.bad", str(bad))
    found = [i for i in imports() if i.source == "mtlkit.options.bad"]
    assert {i.target for i in found} == {"mtlkit.engine.trainer", "mtlkit.viz", "mtlkit.data.synthetic"}
    assert any(layer_of(i.target) > layer_of(i.source) for i in found)
    assert any(i.late and not i.comment_ok for i in found)
    assert _cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_constructor_keyword_defaults_are_the_declared_defaults():
    # a plugin class built with keyword options (backbones, datasets) spells its
    # defaults twice, in `defaults` (what the config reads) and in its signature
    # (what a call by hand gets): they must be the same values
    import inspect

    from mtlkit.registry import get_registry

    registry = get_registry()
    checked, differ = 0, []
    for kind in ("backbone", "dataset", "fusion", "weighting"):
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            declared = getattr(cls, "defaults", None) or {}
            for key, parameter in inspect.signature(cls).parameters.items():
                if key in declared and parameter.default is not inspect.Parameter.empty:
                    checked += 1
                    default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
                    if default != declared[key]:
                        differ.append(f"{kind} '{name}': {key} = {declared[key]!r} in defaults, "
                                      f"{parameter.default!r} in the signature")
    assert checked > 20 and not differ, differ
