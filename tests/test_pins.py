"""One set of exact pins: pyproject.toml, environment.yml and constraints.txt must agree (issue #2)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!_-]+)\s*(;.*)?$")


def canonical(name: str) -> str:
    """PEP 503 name normalisation (PyYAML == pyyaml, typing_extensions == typing-extensions)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: Path) -> tuple[dict[str, str], list[str]]:
    pins: dict[str, str] = {}
    problems: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        if not m:
            problems.append(f"{path.name}:{lineno}: {raw!r} is not an exact 'name==version' pin")
            continue
        name = canonical(m.group(1))
        if name in pins:
            problems.append(f"{path.name}:{lineno}: {m.group(1)} pinned twice")
        pins[name] = m.group(3)
    return pins, problems


def _check(source: str, requirement: str, pins: dict[str, str], problems: list[str]) -> None:
    m = PIN.match(requirement)
    if not m:
        problems.append(f"{source}: {requirement!r} is not an exact 'name==version' pin")
        return
    name, version = canonical(m.group(1)), m.group(3)
    if name not in pins:
        problems.append(f"{source}: {m.group(1)}=={version} is missing from constraints.txt")
    elif pins[name] != version:
        problems.append(f"{source}: {m.group(1)}=={version} but constraints.txt pins {pins[name]}")


def pin_mismatches(pyproject: Path, environment: Path, constraints: Path) -> list[str]:
    """Every disagreement between the three files, as readable lines (empty when consistent)."""
    pins, problems = read_constraints(constraints)
    project = tomllib.loads(pyproject.read_text())["project"]
    for req in project.get("dependencies", []):
        _check("pyproject dependencies", req, pins, problems)
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for req in reqs:
            _check(f"pyproject [{extra}]", req, pins, problems)

    env = yaml.safe_load(environment.read_text())
    deps = env.get("dependencies", [])
    conda = [d for d in deps if isinstance(d, str)]
    pip_lines = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    pythons = [d for d in conda if re.match(r"^python\s*[=<>]", d)]
    if not any(re.fullmatch(r"python\s*==?\s*3\.11(\.\*|\.\d+)?", d) for d in pythons):
        problems.append(f"environment.yml: python must be pinned to 3.11, found {pythons or 'no python entry'}")
    for dep in conda:
        m = re.fullmatch(r"([A-Za-z0-9._-]+)\s*==?\s*([^=\s]+)", dep)
        if m and canonical(m.group(1)) != "python":
            _check("environment.yml conda", f"{m.group(1)}=={m.group(2)}", pins, problems)
    refs_constraints = False
    for line in pip_lines:
        parts = line.split()
        if parts[0] in ("-c", "--constraint", "-r", "--requirement") and len(parts) == 2:
            refs_constraints |= parts[0] in ("-c", "--constraint") and Path(parts[1]).name == constraints.name
        elif parts[0] in ("-e", "--editable") or line.startswith((".", "/")):
            continue  # the project itself, installed through the pins
        else:
            _check("environment.yml pip", line, pins, problems)
    if not refs_constraints:
        problems.append(f"environment.yml: the pip section must reference {constraints.name} with '-c {constraints.name}'")
    return problems


def test_repository_pins_agree():
    problems = pin_mismatches(REPO / "pyproject.toml", REPO / "environment.yml", REPO / "constraints.txt")
    assert problems == [], "\n".join(problems)


def test_installed_versions_follow_the_pins():
    """The running environment was built from constraints.txt (torch/torchvision above all)."""
    pins, _ = read_constraints(REPO / "constraints.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wrong = []
    # every extra: `make setup` installs them all (dev, and cluster = Ray for the cluster tests)
    for req in project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]:
        name = canonical(PIN.match(req).group(1))
        installed = metadata.version(name).split("+", 1)[0]  # a local build tag (+cpu) is the same release
        if installed != pins[name]:
            wrong.append(f"{name}: installed {installed}, pinned {pins[name]}")
    assert wrong == [], "; ".join(wrong)


def _write(tmp_path, *, pyproject_deps, dev, env_text, constraints_text):
    deps = ",\n".join(f'  "{d}"' for d in pyproject_deps)
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\ndependencies = [\n{deps}\n]\n[project.optional-dependencies]\ndev = {dev!r}\n'.replace("'", '"'))
    (tmp_path / "environment.yml").write_text(env_text)
    (tmp_path / "constraints.txt").write_text(constraints_text)
    return tmp_path / "pyproject.toml", tmp_path / "environment.yml", tmp_path / "constraints.txt"


GOOD_ENV = "name: x\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - -c constraints.txt\n      - -e .[dev]\n"


def test_checker_accepts_consistent_files(tmp_path):
    files = _write(tmp_path, pyproject_deps=["torch==2.14.1", "PyYAML==6.0.4"], dev=["pytest==9.2.0"],
                   env_text=GOOD_ENV, constraints_text="pyyaml==6.0.4\ntorch==2.14.1\npytest==9.2.0\n")
    assert pin_mismatches(*files) == []


@pytest.mark.parametrize("change, expected", [
    (dict(constraints_text="torch==2.14.0\npytest==9.2.0\n"), "torch==2.14.1 but constraints.txt pins 2.14.0"),
    (dict(constraints_text="torch==2.14.1\n"), "pytest==9.2.0 is missing from constraints.txt"),
    (dict(pyproject_deps=["torch>=2"]), "'torch>=2' is not an exact"),
    (dict(env_text=GOOD_ENV.replace("python=3.11", "python=3.12")), "python must be pinned to 3.11"),
    (dict(env_text=GOOD_ENV.replace("-c constraints.txt", "-r requirements.txt")), "must reference constraints.txt"),
    (dict(env_text=GOOD_ENV + "      - numpy==1.0\n"), "numpy==1.0 is missing from constraints.txt"),
    (dict(constraints_text="torch==2.14.1\npytest==9.2.0\nTorch==2.14.1\n"), "pinned twice"),
])
def test_checker_reports_disagreements(tmp_path, change, expected):
    args = dict(pyproject_deps=["torch==2.14.1"], dev=["pytest==9.2.0"], env_text=GOOD_ENV,
                constraints_text="torch==2.14.1\npytest==9.2.0\n") | change
    problems = pin_mismatches(*_write(tmp_path, **args))
    assert any(expected in p for p in problems), problems
