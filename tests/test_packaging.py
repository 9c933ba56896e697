"""The folder tree is the architecture: ``tritonkit/`` is the package root and links every
top-level package folder, so a fresh clone's editor, type checker and ``python`` resolve
``tritonkit.export`` to ``export/`` with nothing installed, and the wheel holds the same."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
TOP = sorted({p.split(".")[1] for p in PACKAGES if p.count(".") == 1} - {"cli"})


def linked_folders(root: Path = ROOT) -> dict[str, str]:
    """name -> link target of every symlink in ``root/tritonkit``."""
    return {p.name: os.readlink(p) for p in (root / "tritonkit").iterdir() if p.is_symlink()}


def test_every_subpackage_is_a_top_level_folder_linked_from_the_root_package() -> None:
    links = linked_folders()
    assert links == {name: f"../{name}" for name in TOP}
    for name in TOP:
        assert (ROOT / name / "__init__.py").is_file(), name


def test_a_missing_link_is_seen(tmp_path: Path) -> None:
    (tmp_path / "tritonkit").mkdir()
    (tmp_path / "tritonkit" / "export").symlink_to("../export")
    assert linked_folders(tmp_path) != {name: f"../{name}" for name in TOP}


def test_imports_resolve_to_the_folders_from_a_bare_checkout() -> None:
    # Without the installed package on the path: only the checkout, as an editor sees it.
    # -S: no site-packages, so neither the editable install nor any dependency is seen;
    # find_spec locates each subpackage without running it.
    code = (
        "import importlib.util; "
        f"names = {TOP!r}; "
        "print('\\n'.join(importlib.util.find_spec('tritonkit.' + n).origin for n in names))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for name, file in zip(TOP, out.stdout.split()):
        assert Path(file).resolve() == (ROOT / name / "__init__.py").resolve(), name


def test_the_installed_package_is_this_checkout() -> None:
    for name in TOP:
        module = importlib.import_module(f"tritonkit.{name}")
        assert Path(module.__file__ or "").resolve().parent == ROOT / name
