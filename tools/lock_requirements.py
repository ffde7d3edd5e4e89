"""Write or check requirements.lock: the exact versions of dsita's runtime dependencies, for the Docker image.

Usage: lock_requirements.py [OUT] writes the `pip freeze` versions of this venv (default requirements.lock
beside this folder; `make lock` runs it). torch itself stays out (the CUDA base image provides it, or the
CPU build's wheel); what torch needs and dsita's build backend are in, so the image installs every
package from this file and nothing unpinned.

lock_requirements.py --check LOCK runs inside the image after the install: it fails, naming the package,
if a pin is not installed at its version, a dependency of dsita is missing or does not satisfy its
requirement, or a dependency (torch's own aside) is not in the lock.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_LOCKED = {"torch"}
HEADER = (
    "# Written by tools/lock_requirements.py (make lock). torch is not pinned here: the CUDA base image\n"
    "# provides it, the CPU image installs its wheel. The Docker image installs every line, as wheels.\n"
)


def canonical(name: str) -> str:
    """The PEP 503 normalized form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(package: str, *, follow_torch: bool) -> list[tuple[str, Requirement]]:
    """Every (needed-by, requirement) in `package`'s run-time closure, markers evaluated here, no extras.

    With follow_torch False, torch is a leaf: its own dependencies (the CUDA build's nvidia packages in the
    CUDA image) are not walked.
    """
    seen: set[str] = set()
    found: list[tuple[str, Requirement]] = []
    todo = [package]
    while todo:
        name = todo.pop()
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            found.append((name, requirement))
            dependency = canonical(requirement.name)
            if dependency in seen or (dependency in NOT_LOCKED and not follow_torch):
                continue
            seen.add(dependency)
            todo.append(dependency)
    return found


def build_requirements() -> list[str]:
    """The distributions pyproject.toml's build backend needs (the image builds dsita without isolation)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [canonical(Requirement(text).name) for text in pyproject["build-system"]["requires"]]


def write_lock(out: Path) -> None:
    """Write the pins of dsita's closure (with torch's dependencies, without torch) to `out`, atomically."""
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout
    pins = dict(
        line.split("==", 1) for line in freeze.splitlines() if "==" in line and not line.startswith("#")
    )
    versions = {canonical(name): pin for name, pin in pins.items()}
    needed = {canonical(r.name) for _, r in runtime_requirements("dsita", follow_torch=True)}
    needed = (needed | set(build_requirements())) - NOT_LOCKED
    missing = sorted(needed - set(versions))
    if missing:
        sys.exit(f"{', '.join(missing)}: not installed in this venv: run make setup first")
    lines = [f"{name}=={versions[name]}" for name in sorted(needed)]
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(out)
    print(f"{out}: {len(lines)} pins")


def read_lock(path: Path) -> dict[str, str]:
    """The name -> version pins of a lock file."""
    if not path.is_file():
        sys.exit(f"{path}: lock file not found")
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==", 1)
            pins[canonical(name)] = pinned.strip()
    return pins


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_lock(lock: Path) -> list[str]:
    """The problems of this environment against `lock`, one line each; empty when it matches."""
    pins = read_lock(lock)
    problems = [
        f"{name}: locked {pinned}, installed {installed_version(name) or 'nothing'}"
        for name, pinned in sorted(pins.items())
        if installed_version(name) != pinned
    ]
    if installed_version("dsita") is None:
        return [*problems, "dsita: not installed"]
    for needed_by, requirement in runtime_requirements("dsita", follow_torch=True):
        have = installed_version(requirement.name)
        if have is None or not requirement.specifier.contains(have, prereleases=True):
            problems.append(f"{requirement} (needed by {needed_by}): installed {have or 'nothing'}")
    for _, requirement in runtime_requirements("dsita", follow_torch=False):
        name = canonical(requirement.name)
        if name not in pins and name not in NOT_LOCKED:
            problems.append(f"{name}: needed by dsita but not in {lock.name}: run make lock")
    return sorted(set(problems))


def main(argv: list[str]) -> None:
    """Write the lock (no arguments, or OUT), or check this environment against one (--check LOCK)."""
    if argv[:1] == ["--check"]:
        lock = Path(argv[1]) if len(argv) > 1 else ROOT / "requirements.lock"
        problems = check_lock(lock)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            sys.exit(f"{lock}: this environment does not match the lock ({len(problems)} problems)")
        print(f"{lock}: all {len(read_lock(lock))} pins installed, every dependency of dsita satisfied")
        return
    write_lock(Path(argv[0]) if argv else ROOT / "requirements.lock")


if __name__ == "__main__":
    main(sys.argv[1:])
