"""vosk-server's WebSocket protocol: the messages a client sends, checked, and the ones it gets back.

A session is: an optional text message `{"config": {...}}`, then binary frames of 16-bit little-endian mono
PCM, each answered by exactly one message, `{"partial": "..."}` or, when an utterance ends,
`{"text": "...", "result": [{"word", "start", "end", "conf"}, ...]}`; `{"eof": 1}` gets the last result and
ends the session, `{"reset": 1}` gets it and starts over. Config keys (all optional):

* `sample_rate`: of the PCM, any rate from 8 to 192 kHz (resampled to the model's), default the model's;
* `words`: word times in results (default true); `partial_words`: in partials too, as `partial_result`;
* `max_alternatives`: above 0, results come as Vosk's `{"alternatives": [...]}` list: dsita's beam search
  returns its best hypothesis only, so the list has one entry;
* `hotwords` (dsita's): `{"word or phrase": boost, ...}`; Vosk's `phrase_list` is taken as hot words at
  `PHRASE_BOOST` (dsita boosts the phrases instead of restricting the recognizer to them);
* `itn` (dsita's): numbers, dates, times and money as digits (`dsita.text.itn`);
* `model`: Vosk's per-session model switch: refused, a server serves one model (`dsita serve --model`).

Anything else is a mistake the client hears about in one `{"error": "..."}` message before the session
closes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from dsita.decoding.hotwords import DEFAULT_BOOST
from dsita.decoding.transcript import Transcript

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_ALTERNATIVES = 1000
MAX_HOTWORDS = 1000
MAX_HOTWORD_CHARS = 100
MAX_BOOST = 100.0
PHRASE_BOOST = DEFAULT_BOOST  # a Vosk phrase_list entry's boost
CONFIG_KEYS = ("sample_rate", "words", "partial_words", "max_alternatives", "hotwords", "phrase_list", "itn")


class ProtocolError(Exception):
    """A client's message the protocol does not allow; the text is sent to the client as it is."""


@dataclass(frozen=True)
class SessionConfig:
    """One session's settings: the server's defaults, then what the client's config message changes."""

    sample_rate: float = 16000.0
    words: bool = True
    partial_words: bool = False
    max_alternatives: int = 0
    itn: bool = False
    hotwords: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """A `{"config": {...}}` message, applied."""

    config: SessionConfig


@dataclass(frozen=True)
class Eof:
    """`{"eof": 1}`: the last result, then the session ends."""


@dataclass(frozen=True)
class Reset:
    """`{"reset": 1}`: the result so far, then a fresh utterance."""


def parse_text_message(text: str, current: SessionConfig) -> Config | Eof | Reset:
    """A text frame: a config, eof or reset message. Anything else raises ProtocolError."""
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if not isinstance(message, dict) or len(message) != 1:
        raise ProtocolError(
            f"expected audio as binary frames of 16-bit PCM, or a JSON message {{'config': {{...}}}}, "
            f"{{'eof': 1}} or {{'reset': 1}}; got the text {text[:60]!r}"
        )
    ((key, value),) = message.items()
    if key == "config":
        return Config(parse_config(value, current))
    if key in ("eof", "reset"):
        if value not in (1, True):
            raise ProtocolError(f"{key} must be 1, got {json.dumps(value)[:40]}")
        return Eof() if key == "eof" else Reset()
    raise ProtocolError(f"unknown message {key!r}: expected config, eof or reset")


def parse_config(value: Any, current: SessionConfig) -> SessionConfig:
    """`current` with the keys of a config message's object applied; a bad key or value raises."""
    if not isinstance(value, dict):
        raise ProtocolError(f"config must be a JSON object, got {json.dumps(value)[:60]}")
    if "model" in value:
        raise ProtocolError(
            "config: 'model' is not supported: this server serves one model (dsita serve --model)"
        )
    unknown = sorted(set(value) - set(CONFIG_KEYS))
    if unknown:
        raise ProtocolError(f"config: unknown key {unknown[0]!r}; known keys: {', '.join(CONFIG_KEYS)}")
    changes: dict[str, Any] = {}
    if "sample_rate" in value:
        changes["sample_rate"] = _sample_rate(value["sample_rate"])
    for key in ("words", "partial_words", "itn"):
        if key in value:
            changes[key] = _flag(key, value[key])
    if "max_alternatives" in value:
        changes["max_alternatives"] = _alternatives(value["max_alternatives"])
    hotwords = dict(current.hotwords)
    if "phrase_list" in value:
        hotwords.update(dict.fromkeys(_phrases(value["phrase_list"]), PHRASE_BOOST))
    if "hotwords" in value:
        hotwords.update(_hotwords(value["hotwords"]))
    if len(hotwords) > MAX_HOTWORDS:
        raise ProtocolError(f"config: at most {MAX_HOTWORDS} hot words, got {len(hotwords)}")
    return replace(current, **changes, hotwords=hotwords)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _sample_rate(value: Any) -> float:
    rate = _number(value)
    if rate is None or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            f"config: sample_rate must be a number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, "
            f"got {json.dumps(value)[:40]}"
        )
    return rate


def _flag(key: str, value: Any) -> bool:
    # Vosk's server reads these with Python's bool(): 0 and 1 are as common as false and true.
    if value in (0, 1) or isinstance(value, bool):
        return bool(value)
    raise ProtocolError(f"config: {key} must be true, false, 0 or 1, got {json.dumps(value)[:40]}")


def _alternatives(value: Any) -> int:
    number = _number(value)
    if number is None or number != int(number) or not 0 <= number <= MAX_ALTERNATIVES:
        raise ProtocolError(
            f"config: max_alternatives must be a whole number from 0 to {MAX_ALTERNATIVES}, "
            f"got {json.dumps(value)[:40]}"
        )
    return int(number)


def _hotword(text: Any) -> str:
    if not isinstance(text, str) or not text.split() or len(text) > MAX_HOTWORD_CHARS:
        raise ProtocolError(
            f"config: a hot word must be a non-empty string of at most {MAX_HOTWORD_CHARS} characters, "
            f"got {json.dumps(text)[:40]}"
        )
    return " ".join(text.lower().split())


def _hotwords(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProtocolError('config: hotwords must be an object of boosts, like {"cancelletto": 8.0}')
    hotwords: dict[str, float] = {}
    for text, boost in value.items():
        number = _number(boost) if not isinstance(boost, str) else None
        if number is None or abs(number) > MAX_BOOST:
            raise ProtocolError(
                f"config: the boost of hot word {text!r} must be a number from -{MAX_BOOST:g} to "
                f"{MAX_BOOST:g}, got {json.dumps(boost)[:40]}"
            )
        hotwords[_hotword(text)] = number
    return hotwords


def _phrases(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ProtocolError("config: phrase_list must be a list of strings")
    # "[unk]" is Vosk's catch-all entry for its grammars; boosting it means nothing here.
    return [_hotword(phrase) for phrase in value if phrase != "[unk]"]


def error_message(text: str) -> str:
    """The JSON of an error, the last message of a session."""
    return json.dumps({"error": text}, ensure_ascii=False)


def _word_entries(transcript: Transcript) -> list[dict[str, Any]]:
    return [
        {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "conf": round(w.confidence, 4)}
        for w in transcript.words
    ]


def result_message(transcript: Transcript, config: SessionConfig) -> str:
    """The JSON of an utterance's result, in the shape the config asks for."""
    words = _word_entries(transcript) if config.words and transcript.words else None
    if config.max_alternatives > 0:
        confidences = [w.confidence for w in transcript.words]
        confidence = sum(confidences) / len(confidences) if confidences else 0.0
        alternative: dict[str, Any] = {"confidence": round(confidence, 4), "text": transcript.text}
        if words is not None:
            alternative["result"] = words
        return json.dumps({"alternatives": [alternative]}, ensure_ascii=False)
    message: dict[str, Any] = {"text": transcript.text}
    if words is not None:
        message["result"] = words
    return json.dumps(message, ensure_ascii=False)


def partial_message(transcript: Transcript, config: SessionConfig) -> str:
    """The JSON of the current utterance's partial transcript."""
    message: dict[str, Any] = {"partial": transcript.text}
    if config.partial_words and transcript.words:
        message["partial_result"] = _word_entries(transcript)
    return json.dumps(message, ensure_ascii=False)
