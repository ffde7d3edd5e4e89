"""Shared fixtures: the committed sample corpus, imported once per test session."""

from __future__ import annotations

import os

# Tiny test models run fastest on one thread, and two OpenMP threads spinning on a busy two-core machine
# slow small ops down a hundredfold. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ARCHIVE = REPO / "samples" / "it-sample.tar.gz"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: skipped, with the reason, on a machine without it."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

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
    import torch

    from dsita.data.dataset import load_samples
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
