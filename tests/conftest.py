"""Shared fixtures: the committed sample corpus, imported once per test session, its clips, and small models
of each registered architecture with their releases."""

from __future__ import annotations

import os

# Tiny test models run fastest on one thread, and two OpenMP threads spinning on a busy two-core machine
# slow small ops down a hundredfold. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.data.dataset import load_samples, read_wav
from dsita.model import architectures
from dsita.text.alphabet import Alphabet
from tests.architectures import ITALIAN, Exported, tiny_train_options

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ARCHIVE = REPO / "samples" / "it-sample.tar.gz"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: skipped, with the reason, on a machine without it."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample archive imported into DeepSpeech CSVs: a folder with train/dev/test.csv."""
    out = tmp_path_factory.mktemp("sample_corpus")
    options = ImportOptions(alphabet=Alphabet.italian(), workers=2, progress=False)
    report = import_common_voice(SAMPLE_ARCHIVE, out, options)
    assert report.total_kept > 0
    return out


@pytest.fixture(scope="session")
def test_clips(sample_corpus: Path) -> list[Path]:
    """The sample's test clips: 16 kHz mono 16-bit WAVs of 2-4 s."""
    return [s.wav_path for s in read_csv(sample_corpus / "test.csv")]


@pytest.fixture(scope="session")
def dev_waveforms(sample_corpus: Path) -> list[torch.Tensor]:
    """Six dev clips of the sample corpus, of different lengths, peaks within [-1, 1]. Shared: never change
    them in place."""
    return [read_wav(s.wav_path) for s in load_samples([sample_corpus / "dev.csv"], ITALIAN)[:6]]


# --- language model fixtures (issue 4) ---------------------------------------------------------------------

SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
KENLM_BIN = REPO / ".cache" / "kenlm" / "bin"


@pytest.fixture(scope="session")
def sample_scorer(sample_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scorer built from the default corpus (fortunes-it) minus the sample's dev and test sentences.

    Tests that change a scorer (the optimizer) copy it first.
    """
    from dsita.lm.build import LmBuildOptions, build_scorer
    from dsita.lm.corpus import evaluation_sentences

    out = tmp_path_factory.mktemp("scorer") / "scorer"
    exclude = evaluation_sentences([sample_corpus / "dev.csv", sample_corpus / "test.csv"])
    options = LmBuildOptions(memory="5%", kenlm_bin=KENLM_BIN, workers=2)
    build_scorer(out, Alphabet.italian(), options, exclude=exclude)
    return out


@pytest.fixture(scope="session")
def small_model_logits(sample_corpus: Path) -> dict[str, tuple[list, list]]:
    """The small trained model's logits on the sample's dev and test splits: split -> (samples, logits)."""
    from dsita.evaluation.evaluate import model_logits
    from dsita.training.checkpoint import load_trained_model

    model, alphabet = load_trained_model(SMALL_MODEL)
    result = {}
    for split in ("dev", "test"):
        samples = load_samples([sample_corpus / f"{split}.csv"], alphabet)
        result[split] = (samples, model_logits(model, samples, alphabet, torch.device("cpu")))
    return result


# --- export and inference fixtures (issue 5) ---------------------------------------------------------------


@pytest.fixture(scope="session")
def small_release(sample_scorer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dsita export` of the small trained model with the sample scorer: a folder holding it-it.zip (int8),
    model_it.tar.xz (fp32) and checkpoint_it.tar.xz."""
    from dsita.export.release import make_release
    from dsita.settings import Settings

    out = tmp_path_factory.mktemp("release")
    make_release(SMALL_MODEL, out, None, sample_scorer, settings_env=Settings().to_env_text())
    return out


# --- small models of every architecture (issue 12) ---------------------------------------------------------


@pytest.fixture(scope="session")
def trained_tiny(sample_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`trained_tiny(architecture)`: the checkpoint folder of three epochs of the real trainer on a tiny model
    (tests/architectures.py) that keeps the last two epochs' checkpoints, trained on first use. Tests only
    read it."""
    from dsita.training.loop import train

    folders: dict[str, Path] = {}

    def trained(architecture: str) -> Path:
        if architecture not in folders:
            folder = tmp_path_factory.mktemp(f"tiny-{architecture}")
            train(tiny_train_options(sample_corpus, folder, architecture, epochs=3, max_to_keep=2), ITALIAN)
            folders[architecture] = folder
        return folders[architecture]

    return trained


@pytest.fixture(scope="session")
def conformer_writer(trained_tiny: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny conformer's checkpoint with its blank and space outputs lowered: three epochs in, it writes
    only blanks and spaces, and the decoding checks need letters."""
    from dsita.training.checkpoint import BEST_DEV, load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(trained_tiny("conformer") / BEST_DEV)
    checkpoint["model"]["head.bias"][[ITALIAN.encode(" ")[0], ITALIAN.blank_index]] -= 3.0
    path = tmp_path_factory.mktemp("conformer-writer") / BEST_DEV
    save_checkpoint(path, checkpoint)
    return path


@pytest.fixture(scope="session")
def conformer_release(
    conformer_writer: Path, sample_scorer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`dsita export` of that conformer with the sample scorer."""
    from dsita.export.release import make_release

    out = tmp_path_factory.mktemp("conformer-release")
    report = make_release(conformer_writer, out, None, sample_scorer)
    assert report.parity_error < 1e-4
    return out


@pytest.fixture(scope="session", params=architectures())
def exported(request: pytest.FixtureRequest) -> Exported:
    """The small model of each registered architecture, exported: a test using it runs once for each."""
    architecture = request.param
    if architecture == "deepspeech":
        return Exported(architecture, SMALL_MODEL, request.getfixturevalue("small_release"))
    if architecture == "conformer":
        conformer = request.getfixturevalue("conformer_writer")
        return Exported(architecture, conformer, request.getfixturevalue("conformer_release"))
    raise AssertionError(f"no small {architecture} model to export: add one to tests/conftest.py")
