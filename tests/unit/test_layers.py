"""Imports run one way: a module of ``pathprobe`` imports only from its own layer or below.

Read from the source with ``ast``, so it covers every ``import`` and ``from … import``: at module
level, inside functions and under ``if TYPE_CHECKING:`` alike. README.md ("How the code is laid
out") shows the same table with what each layer holds; the last test keeps the two in step.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pathprobe

PACKAGE = Path(pathprobe.__file__).parent
README = PACKAGE.parent / "README.md"

#: Lowest first. A name is a top-level module or package of ``pathprobe``; every one must be here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("model", "grpcproto"),
    ("errors", "redact", "signals", "grpc_url"),
    ("config", "options"),
    ("run",),
    ("decode",),
    ("analysis",),
    ("load",),
    ("probes",),
    ("reports",),
    ("session",),
    ("agent", "testbed", "doctor"),
    ("cli",),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
ROOT = -1  # pathprobe/__init__.py (the version): below everything


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[str]:
    """Every ``pathprobe`` module ``path`` imports (relative imports resolved), anywhere in it."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from pathprobe import config` imports the module pathprobe.config.
            found += (
                [f"{module}.{alias.name}" for alias in node.names]
                if module == "pathprobe"
                else [module]
            )
    return [name for name in found if name == "pathprobe" or name.startswith("pathprobe.")]


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1].startswith("__"):
        return ROOT  # the package itself, or its own names (`from pathprobe import __version__`)
    return LAYER_OF[parts[1]]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    names |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert sorted(names - LAYER_OF.keys()) == [], "add them to LAYERS (and README's table)"


def test_imports_run_one_way() -> None:
    offending = {
        f"{module_name(path)} → {imported}"
        for path in modules()
        for imported in imported_modules(path)
        if layer(imported) > layer(module_name(path))
    }
    assert not offending, "imports from a higher layer:\n" + "\n".join(sorted(offending))


def test_the_readme_shows_the_same_layers() -> None:
    section = README.read_text("utf-8").split("## How the code is laid out", 1)[1].split("\n## ")[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    readme = [
        tuple(re.sub(r"^pathprobe/|/$|\.py$", "", name) for name in re.findall(r"`([^`]+)`", row))
        for row in rows
    ]
    assert readme == list(LAYERS)
