"""Build pghub's sdist and wheel as a user would, check them, and install the wheel afresh.

Run from the repository with the project's virtual environment (``build`` and ``twine`` come
with the dev extra): ``.venv/bin/python .ci/check_dist.py``. Checks:

- ``python -m build``: the sdist, then the wheel built from that sdist (so the sdist is whole);
- ``twine check --strict``: metadata and README rendering as an index would do them;
- the wheel holds py.typed, every file of sql/, every page of docs/, the LICENSE and the
  pytest11 entry point; its version is ``pghub.__version__``; the sdist holds LICENSE and docs/;
- a fresh virtual environment (PYTHONPATH unset: with it pointing at the checkout, pip would
  say "already satisfied" and install nothing) installs the wheel, imports pghub from there,
  finds the packaged SQL and docs, and runs ``pghub --help``; then every Python example of
  README and docs/hub.md runs there as written (tests/python/test_docs_examples.py).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"check-dist: {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def source_version() -> str:
    """``__version__`` as written in python/pghub/__init__.py (the one place it is)."""
    tree = ast.parse((REPO / "python" / "pghub" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    sys.exit("check-dist: no __version__ in python/pghub/__init__.py")


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"check-dist: {message}")


def main() -> None:
    version = source_version()
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    clean_env["PIP_ROOT_USER_ACTION"] = "ignore"
    with tempfile.TemporaryDirectory(prefix="pghub-dist-") as scratch:
        work = Path(scratch)
        dist = work / "dist"
        started = time.monotonic()
        run(sys.executable, "-m", "build", "--outdir", dist, REPO, env=clean_env)
        (sdist,) = dist.glob("pghub-*.tar.gz")
        (wheel,) = dist.glob("pghub-*.whl")
        check(wheel.name == f"pghub-{version}-py3-none-any.whl", f"unexpected wheel {wheel.name}")
        run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)

        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            info = f"pghub-{version}.dist-info"
            metadata = archive.read(f"{info}/METADATA").decode()
            entry_points = archive.read(f"{info}/entry_points.txt").decode()
        wanted = {"pghub/py.typed", f"{info}/licenses/LICENSE"}
        wanted |= {f"pghub/sql/{p.name}" for p in (REPO / "sql").iterdir() if p.is_file()}
        wanted |= {f"pghub/docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
        check(not wanted - names, f"the wheel lacks {sorted(wanted - names)}")
        check(f"\nVersion: {version}\n" in metadata, "the wheel's version is not __version__")
        check("\nLicense-Expression: MIT\n" in metadata, "the wheel's metadata lacks its license")
        check("pghub = pghub.testing.plugin" in entry_points, "no pytest11 entry point")
        with tarfile.open(sdist) as archive:
            members = {m.name.split("/", 1)[-1] for m in archive.getmembers()}
        in_sdist = {"LICENSE", "README.md", "pyproject.toml"}
        in_sdist |= {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
        check(not in_sdist - members, f"the sdist lacks {sorted(in_sdist - members)}")

        venv = work / "venv"
        # from the project's venv, venv makes a plain one on the base interpreter, not nested
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, env=clean_env)
        probe = textwrap.dedent(
            f"""
            import importlib.metadata as m, pathlib, pghub, pghub.install as i, pghub.testing
            here = pathlib.Path(pghub.__file__).parent
            assert here.is_relative_to({str(venv)!r}), here
            assert pghub.__version__ == m.version("pghub") == {version!r}
            assert i.script_text() and (here / "py.typed").is_file()
            assert (here / "docs" / "hub.md").is_file()
            # No extras here: each exporter names the extra it needs.
            for extra in ("prometheus", "otel"):
                try:
                    __import__("pghub.metrics." + extra)
                except ImportError as e:
                    assert f"pip install 'pghub[{{extra}}]'" in str(e), e
                else:
                    raise AssertionError(extra + " imported without its extra")
            print(pghub.__version__)
            """
        )
        shown = run(venv / "bin" / "python", "-c", probe, cwd=work, env=clean_env)
        check(shown.strip() == version, f"the installed wheel says {shown!r}")
        run(venv / "bin" / "pghub", "--help", cwd=work, env=clean_env)
        # README's and docs/hub.md's examples, run as written by that environment's python.
        examples_env = {**clean_env, "PGHUB_EXAMPLES_PYTHON": str(venv / "bin" / "python")}
        run(
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            REPO / "tests" / "python" / "test_docs_examples.py",
            env=examples_env,
        )
        took = time.monotonic() - started
    print(
        f"check-dist: {sdist.name} and {wheel.name} built, checked, installed and ran the"
        f" README and docs/hub.md examples ({took:.0f} s)"
    )


if __name__ == "__main__":
    main()
