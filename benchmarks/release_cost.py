"""What the DeepSpeech client files cost a release: `make_release` with them (as `dsita export` runs it for a
DeepSpeech model) and without them (as for a Conformer), same checkpoint and scorer, time per part and the
size of each release file.

    .venv/bin/python benchmarks/release_cost.py [--sizes 256,2048] [--preset1]

N_HIDDEN=256 is the small trained test model; other sizes are randomly initialised (benchmarks/rtf.py). The
scorer is the default corpus's (fortunes-it), built once. `--preset1` also writes the archives with xz
preset 1 (the release's setting before its fast LZMA2 filters) to compare. Also prints the work folder's
size before archiving: the temporary disk an export needs beside its release files. Never asserts.
"""

from __future__ import annotations

import argparse
import lzma
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dsita.export import release
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import save_checkpoint
from rtf import checkpoint_for  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
KENLM_BIN = REPO / ".cache" / "kenlm" / "bin"
PARTS = ("write_client_files", "export_fp32", "quantize_int8", "write_zip", "write_tar_xz")


@contextmanager
def timed(seconds: dict[str, float], work: dict[str, int]) -> Iterator[None]:
    """Time the release's parts (wrapping the functions make_release calls); measure its work folder."""
    originals = {name: getattr(release, name) for name in (*PARTS, "release_archives")}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return timed_call

    def archives(work_dir: Path, *args: Any) -> Any:
        work["bytes"] = sum(p.stat().st_size for p in work_dir.rglob("*") if p.is_file())
        return originals["release_archives"](work_dir, *args)

    for name in PARTS:
        setattr(release, name, wrap(name, originals[name]))
    release.release_archives = archives  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(release, name, function)


def run(
    checkpoints: Path, out: Path, scorer: Path, clients: bool
) -> tuple[float, dict[str, float], int, dict]:
    """(total seconds, seconds per part, work folder bytes, {release file: bytes}) of one export."""
    seconds: dict[str, float] = {}
    work: dict[str, int] = {}
    reason = release.no_client_files_reason
    if not clients:
        release.no_client_files_reason = lambda model, alphabet: "left out by the benchmark"  # type: ignore[assignment]
    try:
        with timed(seconds, work):
            started = time.perf_counter()
            report = release.make_release(checkpoints, out, None, scorer)
            total = time.perf_counter() - started
    finally:
        release.no_client_files_reason = reason  # type: ignore[assignment]
    return total, seconds, work["bytes"], {path.name: size for path, size in report.files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,2048", help="N_HIDDEN values")
    parser.add_argument("--preset1", action="store_true", help="also run with xz preset 1 archives")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    fast = release.XZ_FILTERS
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        options = LmBuildOptions(memory="5%", kenlm_bin=KENLM_BIN, workers=2)
        scorer = work / "scorer"
        build_scorer(scorer, Alphabet.italian(), options)
        for n_hidden in (int(s) for s in args.sizes.split(",")):
            checkpoints = work / f"{n_hidden}" / "checkpoints"
            save_checkpoint(checkpoints / "best_dev.pt", checkpoint_for(n_hidden))
            variants = [("with the DeepSpeech files", True, fast), ("without them", False, fast)]
            if args.preset1:
                preset1 = ({"id": lzma.FILTER_LZMA2, "preset": 1},)
                variants += [
                    ("with them, xz preset 1", True, preset1),
                    ("without, xz preset 1", False, preset1),
                ]
            for label, clients, filters in variants:
                release.XZ_FILTERS = filters  # type: ignore[assignment]
                out = work / f"{n_hidden}" / "release"
                total, seconds, work_bytes, files = run(checkpoints, out, scorer, clients)
                parts = ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())
                sizes = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in files.items())
                print(f"N_HIDDEN={n_hidden} {label}: {total:.1f} s ({parts})")
                print(f"    work folder {work_bytes / 1e6:.0f} MB before archiving")
                print(f"    MB: {sizes}; load average {os.getloadavg()[0]:.1f}")
                shutil.rmtree(out)
    release.XZ_FILTERS = fast  # type: ignore[assignment]


if __name__ == "__main__":
    main()
