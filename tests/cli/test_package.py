"""The package: pyproject.toml's pins are requirements*.txt's; every package ships; `pip install .`
in a fresh venv gives a `biogpt` that runs NER on a JSONL file from another directory, offline,
with the bundled model; the Dockerfiles install the pinned requirements and run the entry point."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from biogpt.serving import Engine, Limits
from tests.cli.conftest import ROOT, read_jsonl

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pins(path: Path) -> dict[str, str]:
    """name -> 'name==version' of the exact pins in a requirements file (its -r includes followed)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
        elif "==" in line:
            found[_name(line)] = line.replace(" ", "")
    return found


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0]).lower()


def test_pyproject_pins_are_the_requirements_pins():
    runtime, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    project = PYPROJECT["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert all("==" in r for r in declared), "every dependency is pinned exactly"
    for requirement in declared:
        name = _name(requirement)
        assert name in dev, f"{requirement} is not in requirements*.txt"
        assert re.sub(r"\[.*?\]", "", requirement) == re.sub(r"\[.*?\]", "", dev[name])
    core = {_name(r) for r in project["dependencies"]}
    assert core == {"torch", "safetensors", "sacremoses", "huggingface-hub", "numpy", "tqdm"}  # no gradio, no plotly
    assert runtime["torch"] == "torch==2.13.0" and "torch==2.13.0" in project["dependencies"]
    app = {_name(r) for r in project["optional-dependencies"]["app"]}
    assert {"gradio", "plotly"} <= app and set(runtime) == core | app  # [app] completes requirements.txt
    assert project["scripts"] == {"biogpt": "biogpt.cli:main", "biogpt-studio": "app:main"}
    assert [_name(r) for r in project["optional-dependencies"]["scale"]] == ["ray"]


def test_every_package_of_the_checkout_is_shipped():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("biogpt", "ui") for p in (ROOT / top).rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert on_disk | {"biogpt.assets"} == listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"biogpt.assets": "assets"}


def _link_with_requirements(name: str, target: Path, seen: set[str]) -> None:
    """Link distribution `name` and those it requires from this venv into `target`."""
    key = _name(name)
    if key in seen:
        return
    seen.add(key)
    dist = importlib.metadata.distribution(name)
    site = Path(dist.locate_file(""))
    for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}:
        if not (target / top).exists():
            (target / top).symlink_to(site / top)
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):  # this platform's, no extras
            _link_with_requirements(requirement.name, target, seen)


def test_pip_install_then_biogpt_ner_from_another_directory_offline(tmp_path, corpus):
    # The checkout's files that the package is built from (a copy: building leaves build/ behind).
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "app.py"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("biogpt", "ui", "assets"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # This venv's core dependencies (torch 2.13.0 CPU above all: never a download of another build)
    # and what they require, linked into a folder the new venv reads through a .pth: pip checks the
    # pins against them, finds them installed, and installs the package alone (no network, seconds).
    borrowed = tmp_path / "core-from-this-venv"
    borrowed.mkdir()
    linked: set[str] = set()
    for requirement in PYPROJECT["project"]["dependencies"]:
        _link_with_requirements(_name(requirement), borrowed, linked)
    assert "gradio" not in linked and "plotly" not in linked
    (site / "borrowed_core.pth").write_text(str(borrowed) + "\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # --no-build-isolation: setuptools, linked above as torch requires it, builds the package.
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
                                "--no-build-isolation", str(source)], capture_output=True, text=True, env=environment,
                               timeout=600)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert "Successfully installed biogpt-studio-0.1.0\n" in installed.stdout, installed.stdout[-2000:]  # nothing else
    assert [p.name for p in site.glob("*.dist-info")] == ["biogpt_studio-0.1.0.dist-info"]
    gradio = subprocess.run([str(python), "-c", "import gradio"], capture_output=True, text=True)
    assert "No module named 'gradio'" in gradio.stderr, "the core does not pull gradio"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy2(corpus, elsewhere / "abstracts.jsonl")
    offline = {**environment, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "no_proxy": "*",
               "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}  # any network use fails
    done = subprocess.run([str(venv / "bin" / "biogpt"), "ner", "abstracts.jsonl", "-o", "entities.jsonl"], cwd=elsewhere,
                          capture_output=True, text=True, env=offline, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(read_jsonl(corpus))} written" in done.stderr
    results = read_jsonl(elsewhere / "entities.jsonl")
    assert [r["id"] for r in results] == [r["id"] for r in read_jsonl(corpus)]
    engine = Engine(limits=Limits.local(), batching=False)  # the checkout's engine, in this process
    for result in results:
        assert [(e["start"], e["end"], e["type"]) for e in result["entities"]] == \
            [(e.start, e.end, e.type) for e in engine.ner(result["text"]).entities]
    where = subprocess.run([str(python), "-c", "import biogpt.hub as h, torch; print(h.ASSETS_DIR); print(torch.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=offline, check=True).stdout.split()
    assert Path(where[0]) == site / "biogpt" / "assets" and where[1].startswith(str(borrowed))


DOCKERFILES = {"Dockerfile": "python:3.11-slim", "Dockerfile.cuda": "nvidia/cuda"}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_installs_the_pins_and_runs_the_app_as_a_user(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip() and not line.startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]
    assert instructions[0][0] in ("FROM", "ARG") and any(k == "FROM" and DOCKERFILES[name] in v for k, v in instructions)
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert "pip install" in runs and "-r requirements.txt" in runs and "torch==2.13.0" in runs
    assert re.search(r"pip install [^&]*--no-deps[^&]* \.", runs), "the package itself, over the pinned requirements"
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a user, not root"
    health = " ".join(v for k, v in instructions if k == "HEALTHCHECK")
    assert "7860" in health and "CMD" in health
    command = [v for k, v in instructions if k in ("CMD", "ENTRYPOINT")][-1]
    assert json.loads(command)[0] == "biogpt-studio"
    assert any(k == "ENV" and "GRADIO_SERVER_NAME=0.0.0.0" in v for k, v in instructions)
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".venv" in dockerignore and "assets" not in dockerignore
