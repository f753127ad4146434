"""The wheel installs one top-level package, `tunesmith`, with the steps and the flows under it.

tasks/ and flows/ stay at the repository's top level (the product's layout names them) and
pyproject's package-dir maps them to `tunesmith.tasks` and `tunesmith.flows`; a package list
that forgot a folder, or a mapping that broke, would ship a wheel without it or with a
top-level `tasks` in site-packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from conftest import REPO


def _packages_in_the_tree() -> set[str]:
    found = set()
    for folder, installed_as in (("tunesmith", "tunesmith"), ("tasks", "tunesmith.tasks"),
                                 ("flows", "tunesmith.flows")):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([installed_as, *rel]))
    return found


def test_the_package_list_names_every_package_folder():
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(listed["packages"]) == _packages_in_the_tree()
    assert listed["package-dir"] == {"tunesmith.tasks": "tasks", "tunesmith.flows": "flows"}


def test_the_wheel_has_only_tunesmith_at_the_top(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("tunesmith", "tasks", "flows"):
        shutil.copytree(REPO / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tunesmith-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tunesmith"}
    for module in ("tunesmith/tasks/train.py", "tunesmith/tasks/runner.py",
                   "tunesmith/flows/retrain.py", "tunesmith/flows/__init__.py",
                   "tunesmith/training/worker.py"):
        assert module in names, module
    # Installed from the wheel, a step's code is found under tunesmith/tasks/ (the cache key
    # and dvc.yaml deps hash it), not in a checkout's tasks/.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from tunesmith import codedeps\n"
            "print(codedeps.module_path('tunesmith.tasks.train'))\n"
            "closure = codedeps.module_closure('tunesmith.tasks.train')\n"
            "print({'tunesmith.tasks', 'tunesmith.tasks.train', 'tunesmith.steps'} <= closure)")
    shown = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.splitlines()[0] == str(site / "tunesmith" / "tasks" / "train.py")
    assert shown.stdout.splitlines()[1] == "True"
