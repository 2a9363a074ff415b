"""The protocol and crypto packages do no I/O: they import nothing that talks to the world.

They are shared by the server, the SDK and (in spirit) other clients, so they
must stay pure functions over bytes: no sockets, files, clocks, threads or logs.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "plauder"
PURE_PACKAGES = ("protocol", "crypto")
FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "sqlite3",
        "aiohttp",
        "ssl",
        "time",
        "os",
        "pathlib",
        "subprocess",
        "threading",
        "logging",
        "urllib",
        "http",
        "select",
        "selectors",
        "io",
        # plauder's own impure parts
        "plauder.server",
        "plauder.client",
        "plauder.cli",
        "plauder.clock",
    }
)


def pure_files() -> list[Path]:
    """Every module of the pure packages."""
    files = sorted(f for pkg in PURE_PACKAGES for f in (SRC / pkg).rglob("*.py"))
    assert len(files) >= 10, files  # the walk found the packages
    return files


def imported_modules(path: Path, root: Path = SRC.parent) -> set[str]:
    """Absolute names of every module a file imports, wherever the import statement is
    (inside functions and `if TYPE_CHECKING:` blocks too)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def forbidden(module: str) -> bool:
    """Whether a module is, or is inside, a forbidden one."""
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_module_imports_no_io(path: Path) -> None:
    bad = sorted(m for m in imported_modules(path) if forbidden(m))
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_import_walk_sees_imports_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "plauder" / "protocol" / "sample.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "import os.path\n"
        "from time import monotonic\n"
        "def f():\n"
        "    import socket\n"
        "if True:\n"
        "    from . import frames\n"
        "    from ..server import gateway\n",
        encoding="utf-8",
    )
    found = imported_modules(path, root=tmp_path)
    assert {"os.path", "time", "socket", "plauder.protocol.frames", "plauder.server"} <= found
    assert all(forbidden(m) for m in ("os.path", "time", "socket", "plauder.server.gateway"))
    assert not any(forbidden(m) for m in ("timeit", "hashlib", "plauder.protocol.codec"))


def test_importing_the_pure_packages_loads_no_io_modules() -> None:
    code = (
        "import sys\n"
        "import plauder.protocol, plauder.protocol.codec, plauder.protocol.frames\n"
        "import plauder.protocol.content, plauder.protocol.limits\n"
        "import plauder.crypto\n"
        "print(' '.join(sorted(m for m in ('asyncio', 'socket', 'sqlite3', 'aiohttp')"
        " if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []
