"""Build tests/fixtures/ds_scorer: scorer packages written by DeepSpeech 0.9.3's own code, for
tests/export/test_ds_scorer.py to compare dsita's writer against, byte for byte.

It needs what dsita never depends on: a DeepSpeech v0.9.3 source checkout (for the headers of
native_client/ctcdecode, OpenFST 1.6.7 and KenLM) and the ds-ctcdecoder 0.9.3 wheel, whose compiled
Scorer does the work (tools/setup_clients.sh makes its venv), plus g++ and KenLM's tools.

    .venv/bin/python tools/make_ds_scorer_fixture.py --deepspeech-src ~/DeepSpeech-0.9.3 \
        [--client .cache/clients/deepspeech-0.9.3] [--out tests/fixtures/ds_scorer]

Written to --out: `lm.binary`, `vocabulary.txt` and `alphabet.txt` (a dsita scorer's files: dsita's
extra sentences, order 3, no pruning, `build_binary -a 255 -q 8 -v trie`), `one_word.txt` (a one-word
vocabulary, whose trie is a single path), and the packages DeepSpeech's code made from them:
`kenlm.scorer` (alpha ALPHA, beta BETA below) and `one_word.scorer` (alpha 0.5, beta 0.25).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[1]
# DeepSpeech 0.9.3's English defaults: values with no exact float32, so the header's rounding is tested.
ALPHA, BETA = "0.931289039105002", "1.1834137581510284"
ONE_WORD = "perché"


def compile_reference(deepspeech_src: Path, client: Path, out: Path) -> Path:
    """g++ tools/ds_scorer_reference.cc against DeepSpeech's headers and the wheel's compiled decoder."""
    native = deepspeech_src / "native_client"
    wheel = sorted(client.glob("lib/python3*/site-packages/ds_ctcdecoder/_swigwrapper*.so"))
    if not wheel:
        raise SystemExit(f"no ds_ctcdecoder in {client}: run tools/setup_clients.sh first")
    python = client / "bin" / "python"
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    version = subprocess.run(
        [str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    linked = out / "libdsswig.so"
    shutil.copy(wheel[0], linked)  # a lib*.so name, so that the linker takes it with -l
    includes = [
        native,
        native / "kenlm",
        native / "ctcdecode",
        native / "ctcdecode/third_party/openfst-1.6.7/src/include",
        native / "ctcdecode/third_party/object_pool",
    ]
    binary = out / "ds_scorer_reference"
    subprocess.run(
        [
            "g++",
            "-std=c++11",
            "-O1",
            "-DKENLM_MAX_ORDER=6",
            "-DNDEBUG",
            "-w",
            *(f"-I{path}" for path in includes),
            str(REPO / "tools" / "ds_scorer_reference.cc"),
            "-o",
            str(binary),
            f"-L{out}",
            "-ldsswig",
            f"-L{libdir}",
            f"-lpython{version}",
            f"-Wl,-rpath,{out}:{libdir}",
        ],
        check=True,
    )
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deepspeech-src", type=Path, required=True)
    parser.add_argument("--client", type=Path, default=REPO / ".cache" / "clients" / "deepspeech-0.9.3")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "ds_scorer")
    args = parser.parse_args()
    out: Path = args.out
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        options = LmBuildOptions(
            order=3, prune=(0,), memory="5%", kenlm_bin=REPO / ".cache" / "kenlm" / "bin"
        )
        corpus = [REPO / "src" / "dsita" / "resources" / "extra_sentences.txt"]
        build_scorer(work / "scorer", Alphabet.italian(), options, corpus=corpus)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("lm.binary", "vocabulary.txt", "alphabet.txt"):
            shutil.copy(work / "scorer" / name, out / name)
        (out / "one_word.txt").write_text(ONE_WORD + "\n", encoding="utf-8")
        reference = compile_reference(args.deepspeech_src, args.client, work)
        for vocabulary, package, alpha, beta in (
            ("vocabulary.txt", "kenlm.scorer", ALPHA, BETA),
            ("one_word.txt", "one_word.scorer", "0.5", "0.25"),
        ):
            subprocess.run(
                [
                    str(reference),
                    str(out / "alphabet.txt"),
                    str(out / "lm.binary"),
                    str(out / vocabulary),
                    str(out / package),
                    alpha,
                    beta,
                ],
                check=True,
            )
    for path in sorted(out.iterdir()):
        print(f"  {path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
