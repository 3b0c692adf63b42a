"""Data flows one way through the package: every import of our own modules sits at module top and runs down.

Floors, lowest first: artifacts / config_lib / distributed (import none of ours), config_checks / config_tools
(read config_lib), ontology, data,
models + losses, train, evaluate + inference + convert, tasks + serve, main. A module may import its own floor
or any floor below it, never one above, and never from inside a function (a hidden import dodging a
cycle means something lives on the wrong floor).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "phenolip_jax"
FLOORS = (
    ("artifacts", "config_lib", "distributed"),
    ("config_checks", "config_tools"),
    ("ontology",),
    ("data",),
    ("models", "losses"),
    ("train",),
    ("evaluate", "inference", "convert", "link"),
    ("tasks", "serve"),
    ("main",),
)
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
# Our own modules that import an optional heavy third-party package (torch) at their top; importing them
# lazily keeps everything else usable without it.
OPTIONAL = {"phenolip_jax.convert.torch_reference": "torch", "phenolip_jax.data.beam_packing": "apache_beam"}


def module_name(path: Path) -> str:
    """'phenolip_jax.a.b' for phenolip_jax/a/b.py (packages: their folder)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    """The floor of 'phenolip_jax.<top>...'; an unknown top-level name fails the test that meets it."""
    top = module.split(".")[1]
    assert top in FLOOR, f"phenolip_jax.{top} has no floor in tests/test_import_layers.py: add it to FLOORS"
    return FLOOR[top]


def our_imports(node: ast.AST, package: str) -> list[str]:
    """The phenolip_jax modules an Import / ImportFrom node names (from-imports resolved to submodules)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "phenolip_jax"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative import: resolve against this module's package
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "phenolip_jax":
        return []
    # `from pkg import x` names the submodule pkg.x when there is one, else something defined in pkg.
    return list(dict.fromkeys(f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names))


def is_module(name: str) -> bool:
    """Whether 'phenolip_jax.a.b' is a module or package of the package."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def all_modules() -> list[Path]:
    """Every module of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def _scan(check) -> list[str]:
    problems = []
    for path in all_modules():
        tree = ast.parse(path.read_text(), str(path))
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            for target in our_imports(node, package):
                problem = check(name, target, id(node) in top_level, node.lineno)
                if problem:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {problem}")
    return problems


def test_every_module_is_scanned():
    names = {module_name(p) for p in all_modules()}
    assert {"phenolip_jax.main", "phenolip_jax.inference", "phenolip_jax.artifacts",
            "phenolip_jax.tasks.stage2", "phenolip_jax.data.tokenize"} <= names
    for name in names - {"phenolip_jax"}:
        floor_of(name)


def test_no_function_level_import_of_our_modules():
    def check(name, target, at_top, line):
        if at_top or target in OPTIONAL:
            return None
        return f"{name} imports {target} inside a function (import it at module top)"

    problems = _scan(check)
    assert not problems, "\n".join(problems)


def test_optional_exceptions_really_need_their_package():
    for module, package in OPTIONAL.items():
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        tops = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        tops |= {(n.module or "").split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
        assert package in tops, f"{module} no longer imports {package} at its top: import it normally"


def test_imports_run_down_the_floors():
    def check(name, target, at_top, line):
        if floor_of(target) > floor_of(name):
            return (f"{name} (floor {floor_of(name)}: {'/'.join(FLOORS[floor_of(name)])}) imports {target} "
                    f"(floor {floor_of(target)}: {'/'.join(FLOORS[floor_of(target)])}), which runs back up")
        return None

    problems = _scan(check)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("from phenolip_jax.tasks import common", ["phenolip_jax.tasks.common"]),
    ("from phenolip_jax.ontology import Relation, relation_codes", ["phenolip_jax.ontology"]),
    ("from phenolip_jax import inference, artifacts", ["phenolip_jax.inference", "phenolip_jax.artifacts"]),
    ("import phenolip_jax.data.tokenize as t", ["phenolip_jax.data.tokenize"]),
    ("from . import metrics", ["phenolip_jax.evaluate.metrics"]),
    ("import numpy", []),
])
def test_import_parser(source, expected):
    node = ast.parse(source).body[0]
    assert our_imports(node, "phenolip_jax.evaluate") == expected
