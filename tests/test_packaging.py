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


# What the extras bring; the base install (`pip install tritonkit`, the client image) has
# none of them, and its CLI must still start and teach every command.
EXTRAS_ONLY = (
    *("fastapi", "uvicorn", "starlette", "prometheus_client", "openai"),  # gateway
    *("torch", "transformers", "onnx", "onnxruntime", "onnxruntime_genai", "gguf"),  # export
    *("tokenizers", "pytriton", "azure", "matplotlib"),  # serve, azure, bench
    *("yaml", "jsonschema", "kubernetes_validate"),  # deploy
)
WITHOUT_EXTRAS = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the base install)")
sys.meta_path.insert(0, Block())
"""


def _without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_cli_starts_and_teaches_every_command_on_the_base_install() -> None:
    out = _without_extras(
        "from tritonkit.cli import build_parser\n"
        "p = build_parser()\n"
        "names = list(p._subparsers._group_actions[0].choices)\n"
        "for name in names:\n"
        "    try: p.parse_args([name, '--help'])\n"
        "    except SystemExit as e: assert e.code == 0, name\n"
        "print(len(names))\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 12


def test_the_base_install_check_would_see_an_extra() -> None:
    out = _without_extras("import tritonkit.gateway.app")
    assert out.returncode != 0 and "not in the base install" in out.stderr
