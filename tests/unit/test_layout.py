"""The layout a newcomer reads (issue 18), checked: every rule script names its function (go to
definition reaches it, and it is a registered task), modules stay short or say why, no private names
imported across modules, one matplotlib backend choice, the tools out of the workflow's imports, and
`duplicates` clean on the rule scripts."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest

from neurospec.run import workers

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "workflow" / "scripts"
PKG = SCRIPTS / "neurospec"
MAX_LINES = 400
# Modules over MAX_LINES awaiting a split (each with the proposed split); empty since issue 18's split.
PENDING_SPLIT: dict[str, str] = {}


def _script_tasks(path: Path) -> dict[str, str]:
    """A rule script's tasks: the name it calls -> "module:function", from its ``if TYPE_CHECKING:``
    imports, checked against the ``task_ref`` strings of its ``else:`` branch."""
    tree = ast.parse(path.read_text(), str(path))
    checking = [n for n in tree.body if isinstance(n, ast.If) and isinstance(n.test, ast.Name)
                and n.test.id == "TYPE_CHECKING"]
    assert len(checking) == 1, f"{path.name}: one `if TYPE_CHECKING:` block naming its task function(s)"
    imported = {alias.asname or alias.name: f"{node.module}:{alias.name}"
                for node in checking[0].body if isinstance(node, ast.ImportFrom) for alias in node.names}
    refs = {}
    for node in checking[0].orelse:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Call), ast.dump(node)
        assert node.value.func.id == "task_ref"
        refs[node.targets[0].id] = node.value.args[0].value
    assert imported == refs, f"{path.name}: the TYPE_CHECKING imports and the task_ref strings differ"
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("run_task", "run_model_task"):
            first = node.args[0]
            if isinstance(first, ast.Name) and first.id in imported:
                called.add(first.id)
            elif isinstance(first, ast.Subscript):  # FIGURES[snakemake.params.figure]: every value counts
                called |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Dict)
                           for n in n.values if isinstance(n, ast.Name)}
            else:
                pytest.fail(f"{path.name}: run_task's first argument is not a task function it imports")
    assert called == set(imported), f"{path.name}: calls {called}, imports {set(imported)}"
    return imported


def test_every_rule_script_names_a_registered_function_it_reaches():
    named = {}
    for path in sorted(SCRIPTS.glob("*.py")):
        for name, target in _script_tasks(path).items():
            module, _, function = target.partition(":")
            fn = getattr(importlib.import_module(module), function)  # go to definition: it exists
            assert callable(fn) and fn.__name__ == name
            assert workers.task_name(fn) == target  # the function object resolves to the same name
            named[target] = path.name
    # every registered task is some rule script's, and every rule script's is registered
    assert set(named) == set(workers.TASKS), set(named) ^ set(workers.TASKS)


def test_every_rule_names_a_script_that_exists():
    scripts = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for line in text.splitlines():
            if line.strip().startswith('"../scripts/'):
                scripts.add(line.strip().strip('"').removeprefix("../scripts/"))
    assert scripts == {p.name for p in SCRIPTS.glob("*.py")}


def test_a_task_function_object_is_sent_by_its_name_and_a_stray_one_is_refused():
    from neurospec.errors import NeurospecError
    from neurospec.score.scoring import run_scoring

    assert workers.task_name(run_scoring) == "neurospec.score.scoring:run_scoring"
    ref = workers.task_ref("neurospec.score.scoring:run_scoring")
    assert workers.task_name(ref) == "neurospec.score.scoring:run_scoring"
    with pytest.raises(NeurospecError, match=r"task 'os:getcwd' refused: it is not one of neurospec's"):
        workers.task_ref("os:getcwd")
    import os

    with pytest.raises(SystemExit):  # a function outside TASKS is refused before anything runs
        workers.run_task(os.getcwd)


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_modules_over_400_lines_say_why():
    long = {}
    for path in _modules():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            long[str(path.relative_to(PKG))] = n
    unexplained = [m for m in long if m not in PENDING_SPLIT
                   and "longer than 400 lines" not in (ast.get_docstring(ast.parse((PKG / m).read_text())) or "")]
    assert not unexplained, f"modules over {MAX_LINES} lines without a reason in their docstring: {unexplained}"
    assert set(PENDING_SPLIT) <= set(long), f"split already, drop from PENDING_SPLIT: {set(PENDING_SPLIT) - set(long)}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("neurospec")):
                offenders += [f"{path.relative_to(PKG)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and a.name != "__version__"]
    assert not offenders


def test_one_place_chooses_matplotlibs_backend():
    places = [str(p.relative_to(PKG)) for p in _modules() if 'matplotlib.use(' in p.read_text()]
    assert places == ["plots/__init__.py"]


def test_the_workflow_never_imports_the_tools():
    users = [str(p.relative_to(SCRIPTS)) for p in [*SCRIPTS.glob("*.py"), *_modules()]
             if "/tools/" not in str(p) and ("neurospec.tools" in p.read_text() or "from ..tools" in p.read_text())]
    smk = [p.name for p in (ROOT / "workflow").rglob("*.smk") if "neurospec.tools" in p.read_text()]
    assert not users and not smk, (users, smk)


def test_the_rule_scripts_are_clean_for_duplicates():
    """`duplicates` on the rule scripts: the one shared shape left is score.py ~ score_stability.py,
    two rules that pass the same five things to their functions (one selection each way)."""
    if shutil.which("duplicates") is None:
        pytest.skip("the `duplicates` command is not installed")
    out = subprocess.run(["duplicates", "--repo", str(SCRIPTS), "--most", "200"], capture_output=True,
                         text=True, timeout=120).stdout
    pairs = [line for line in out.splitlines() if line.startswith("D")]
    scripts = [line for line in pairs if "/" not in line.split()[1] or "/" not in line.split()[3]]
    assert all("score.py" in line and "score_stability.py" in line for line in scripts), scripts


def test_pip_install_ships_every_subpackage():
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = {".".join(p.parent.relative_to(SCRIPTS).parts) for p in PKG.rglob("__init__.py")}
    assert set(packages) == found
