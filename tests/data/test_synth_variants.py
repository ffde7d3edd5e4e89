"""`SynthOptions.espeak_variants`: a corpus spoken by some espeak-ng variants only, so that a benchmark can
keep a family of them out of training (benchmarks/generalization.py holds out the Klatt family)."""

from __future__ import annotations

import pytest

from dsita.data.sentences import Sentence
from dsita.data.synth import ESPEAK, ESPEAK_VARIANTS, FESTIVAL, SPLITS, SynthOptions, plan_corpus
from dsita.errors import DsitaError

KLATT = ("klatt", "klatt2", "klatt3", "adam", "benjamin", "david", "edward")
REST = tuple(v for v in ESPEAK_VARIANTS if v not in KLATT)


def sentences(count: int) -> list[Sentence]:
    return [Sentence(f"Frase numero {i}.", f"frase numero {i}") for i in range(count)]


@pytest.mark.parametrize("variants", [KLATT, REST], ids=["klatt", "the-rest"])
@pytest.mark.parametrize("shared", [False, True], ids=["split-by-voice", "shared-speakers"])
def test_only_the_chosen_variants_speak(variants: tuple[str, ...], shared: bool) -> None:
    options = SynthOptions(
        n_clips=400, engines=(ESPEAK, FESTIVAL), shared_speakers=shared, espeak_variants=variants
    )
    plan = plan_corpus(sentences(400), options)
    voices = {
        split: {c.speaker.voice for c in plan if c.split == split and c.speaker.engine == ESPEAK}
        for split in SPLITS
    }
    assert set().union(*voices.values()) <= set(variants)
    assert len(set().union(*voices.values())) >= min(len(variants), 5)
    assert any(c.speaker.engine == FESTIVAL for c in plan)  # festival's voices are not limited
    if not shared:  # the chosen variants are still partitioned between the splits
        assert not voices["train"] & (voices["dev"] | voices["test"]) and not voices["dev"] & voices["test"]


@pytest.mark.parametrize("variants", [(), ("klatt", "whisper")])
def test_unknown_or_no_variants_are_refused(variants: tuple[str, ...]) -> None:
    with pytest.raises(DsitaError, match="espeak-ng variants"):
        SynthOptions(espeak_variants=variants)
