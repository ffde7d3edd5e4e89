"""Speech to text with an exported model, on onnxruntime and numpy only: nothing here imports torch.

    model = dsita.load_model("it-it.zip")
    model.transcribe("clip.flac").text
    stream = model.stream(); stream.feed(pcm); stream.intermediate().text; stream.finish().text

Audio is cut into segments at pauses (`dsita.inference.vad`); each segment is run on its own (a DeepSpeech
graph from
a fresh LSTM state, a conformer graph on the whole segment at once) and decoded, and the segments'
transcripts are joined. A whole file and the same samples streamed in pieces of any size are cut at the same
places and give the same transcript. Only one segment (at most `max_segment_s`) is held at a time, so memory
stays flat on long files. Streaming (`stream()`) needs DeepSpeech's recurrent state: a conformer refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dsita.audio import LOG_MEL_FEATURES, MFCC_FEATURES, feature_metadata, iter_audio
from dsita.decoding.beam import BeamDecoder, BeamSearchDecoder, DecoderOptions
from dsita.decoding.greedy import GreedyDecoder
from dsita.decoding.transcript import Decoder, Transcript
from dsita.errors import DsitaError
from dsita.inference.features import NumpyContextMfcc, NumpyLogMel
from dsita.inference.package import (
    GRAPH_VERSION,
    INPUT,
    LENGTHS_IN,
    LENGTHS_OUT,
    LOGITS,
    STATE_C_IN,
    STATE_C_OUT,
    STATE_H_IN,
    STATE_H_OUT,
    ModelPackage,
    metadata_props,
    open_package,
)
from dsita.inference.vad import Segmenter, VadOptions, segments
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet

State = tuple[np.ndarray, np.ndarray]  # (c, h), each (1, n_hidden)
CHUNK_STEPS = 16  # DeepSpeech's n_steps: the model always runs on this many steps at a time


def onnx_session(model: str | Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads (1: single-threaded, as the benchmarks measure)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class InferenceOptions:
    use_lm: bool = True  # beam search with the package's scorer when it has one; greedy otherwise
    beam_width: int | None = None  # None: the decoder's default
    threads: int = 1
    itn: bool = False  # spoken numbers, dates, times and money as digits (`Transcript.itn`)
    vad: VadOptions = field(default_factory=VadOptions)


class SpeechModel:
    """An exported acoustic model, its alphabet and a decoder."""

    def __init__(self, package: ModelPackage, options: InferenceOptions = InferenceOptions()) -> None:
        self.package = package
        self.options = options
        try:
            self.session = onnx_session(package.model_path, options.threads)
        except Exception as exc:  # onnxruntime's own exception types: corrupt or unsupported graphs
            raise DsitaError(f"{package.source}: cannot load the ONNX model ({exc})") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        # The graphs of dsita 0.1 do not name their features: DeepSpeech's MFCCs.
        self.features = self.metadata.get("features", MFCC_FEATURES)
        self.alphabet = self._check_metadata()
        self.step_seconds = self._step_seconds()
        inputs = {i.name: i for i in self.session.get_inputs()}
        # DeepSpeech's graph carries the LSTM state between chunks; a conformer's runs whole segments.
        self.streaming = STATE_C_IN in inputs
        self.n_hidden = int(inputs[STATE_C_IN].shape[-1]) if self.streaming else 0
        self.featurizer: NumpyContextMfcc | NumpyLogMel = (
            NumpyLogMel(int(inputs[INPUT].shape[-1]))
            if self.features == LOG_MEL_FEATURES
            else NumpyContextMfcc()
        )
        self.decoder = self._decoder()

    def _check_metadata(self) -> Alphabet:
        source, meta = self.package.source, self.metadata
        if meta.get("graph_version") != str(GRAPH_VERSION):
            raise DsitaError(
                f"{source}: model graph version {meta.get('graph_version', 'missing')}, "
                f"this dsita reads version {GRAPH_VERSION}"
            )
        if self.features not in (MFCC_FEATURES, LOG_MEL_FEATURES):
            raise DsitaError(
                f"{source}: model wants {self.features} features, which this dsita does not compute"
            )
        for key, value in metadata_props(feature_metadata(self.features)).items():
            if key != "features" and meta.get(key) != value:
                raise DsitaError(f"{source}: model wants {key}={meta.get(key)}, dsita computes {key}={value}")
        try:
            alphabet = Alphabet(tuple(json.loads(meta["alphabet"])))
        except (KeyError, ValueError, TypeError) as exc:
            raise DsitaError(f"{source}: model metadata has no valid alphabet ({exc})") from None
        if self.package.alphabet is not None and self.package.alphabet != alphabet:
            raise DsitaError(f"{source}: alphabet.txt does not match the alphabet the model was trained on")
        n_outputs = {o.name: o for o in self.session.get_outputs()}[LOGITS].shape[-1]
        if n_outputs != len(alphabet) + 1:
            raise DsitaError(f"{source}: model has {n_outputs} outputs for {len(alphabet)} labels + blank")
        return alphabet

    def _step_seconds(self) -> float:
        """Seconds between output steps, from the graph's metadata. Earlier graphs did not record it: theirs
        is the feature step, four of them for the conformer's x4 subsampling."""
        recorded = self.metadata.get("output_step_ms")
        if recorded is None:
            frames = 4 if self.features == LOG_MEL_FEATURES else 1
            return frames * float(self.metadata.get("step_ms", 20)) / 1000
        try:
            return float(recorded) / 1000
        except ValueError:
            raise DsitaError(f"{self.package.source}: output_step_ms {recorded!r} is not a number") from None

    def _decoder(self) -> Decoder:
        if self.package.scorer_path is None:
            return GreedyDecoder(self.alphabet, self.step_seconds)
        scorer = load_scorer(self.package.scorer_path)
        if scorer.alphabet() != self.alphabet:  # refused even with use_lm off: the package is inconsistent
            raise DsitaError(
                f"{self.package.source}: its scorer was built for another alphabet than the model's"
            )
        if not self.options.use_lm:
            return GreedyDecoder(self.alphabet, self.step_seconds)
        beam_width = self.options.beam_width or DecoderOptions.beam_width
        beam = BeamSearchDecoder(scorer, self.alphabet)
        return BeamDecoder(beam, DecoderOptions(beam_width=beam_width), self.step_seconds)

    @property
    def decoding(self) -> str:
        """How transcripts are decoded, in words."""
        if isinstance(self.decoder, BeamDecoder):
            scorer, width = self.decoder.beam.scorer, self.decoder.options.beam_width
            return f"beam search (width {width}, alpha {scorer.alpha:g}, beta {scorer.beta:g})"
        return "greedy"

    def initial_state(self) -> State:
        zeros = np.zeros((1, self.n_hidden), dtype=np.float32)
        return zeros, zeros

    def run(self, features: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """(T, 494) features of one stream from `state` -> (T, n_outputs) logits and the state after them."""
        c, h = state
        feed = {INPUT: features[None], STATE_C_IN: c, STATE_H_IN: h}
        logits, c, h = self.session.run([LOGITS, STATE_C_OUT, STATE_H_OUT], feed)
        return logits[0], (c, h)

    def run_segment(self, features: np.ndarray) -> np.ndarray:
        """(T, n_features) features of one whole segment -> its (T', n_outputs) logits, for a graph without
        streaming state."""
        if features.shape[0] == 0:  # the graph's convolutions need at least one frame
            return np.zeros((0, len(self.alphabet) + 1), dtype=np.float32)
        feed = {INPUT: features[None], LENGTHS_IN: np.array([features.shape[0]], dtype=np.int64)}
        logits, lengths = self.session.run([LOGITS, LENGTHS_OUT], feed)
        return logits[0, : int(lengths[0])]

    def transcribe_segment(self, samples: np.ndarray) -> Transcript:
        """One segment, from a fresh state."""
        features = self.featurizer.features(samples)
        if not self.streaming:
            return self.decoder.decode(self.run_segment(features))
        acoustics = SegmentLogits(self)
        acoustics.push(features)
        acoustics.close()
        return self.decoder.decode(acoustics.logits())

    def transcribe(self, audio: str | Path | np.ndarray) -> Transcript:
        """A file (any format and rate `dsita.audio.load_audio` reads), or 16 kHz mono samples (float in
        [-1, 1], or int16)."""
        blocks = iter_audio(audio) if isinstance(audio, str | Path) else [as_float_samples(audio)]
        return self.written(Transcript.join(self._segments(blocks)))

    def written(self, transcript: Transcript) -> Transcript:
        """A transcript as the options want it written: with digits for spoken numbers when `itn` is on."""
        return transcript.itn() if self.options.itn else transcript

    def _segments(self, blocks: Iterable[np.ndarray]) -> Iterable[Transcript]:
        offset = 0
        for segment in segments(blocks, self.options.vad):
            yield self.transcribe_segment(segment).shifted(offset / self.sample_rate)
            offset += segment.size

    @property
    def sample_rate(self) -> int:
        return int(self.metadata["sample_rate"])

    def stream(self) -> Stream:
        if not self.streaming:
            architecture = self.metadata.get("architecture", "this")
            raise DsitaError(
                f"{self.package.source}: streaming is a DeepSpeech feature; the {architecture} model attends "
                "over whole segments: use transcribe()"
            )
        return Stream(self)


class SegmentLogits:
    """The model over one segment's features from a fresh state, run in chunks of CHUNK_STEPS steps (the
    segment's last chunk shorter), however the features arrive.

    Dynamic int8 quantization scales activations per call, so logits depend on how steps are grouped into
    calls; fixing the grouping makes a streamed segment compute exactly what the whole segment computes.
    """

    def __init__(self, model: SpeechModel) -> None:
        self.model = model
        self._state = model.initial_state()
        self._pending = np.zeros((0, model.featurizer.n_features), dtype=np.float32)
        self._logits: list[np.ndarray] = [np.zeros((0, len(model.alphabet) + 1), dtype=np.float32)]

    def push(self, features: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, features])
        while self._pending.shape[0] >= CHUNK_STEPS:
            self._run(self._pending[:CHUNK_STEPS])
            self._pending = self._pending[CHUNK_STEPS:]

    def close(self) -> None:
        """The segment has ended: run the steps short of a whole chunk."""
        if self._pending.shape[0]:
            self._run(self._pending)
            self._pending = self._pending[:0]

    def _run(self, features: np.ndarray) -> None:
        logits, self._state = self.model.run(features, self._state)
        self._logits.append(logits)

    def logits(self) -> np.ndarray:
        """(T, n_outputs) logits of the steps run so far."""
        if len(self._logits) > 1:
            self._logits = [np.concatenate(self._logits)]
        return self._logits[0]


class Stream:
    """DeepSpeech's streaming API: `feed` audio as it arrives, `intermediate` for the transcript so far,
    `finish` for the final one (after which the stream starts over, empty)."""

    def __init__(self, model: SpeechModel) -> None:
        self.model = model
        self.featurizer = NumpyContextMfcc()
        self.segmenter = Segmenter(model.options.vad)
        self._done: list[Transcript] = []
        self._offset = 0  # samples in the finished segments
        self._new_segment()

    def _new_segment(self) -> None:
        self._acoustics = SegmentLogits(self.model)
        self._samples = 0

    def feed(self, audio: np.ndarray | bytes) -> None:
        """16 kHz mono samples: float in [-1, 1], int16, or raw little-endian 16-bit PCM bytes."""
        for piece, ends in self.segmenter.split(as_float_samples(audio)):
            self._advance(piece, ends)

    def intermediate(self) -> Transcript:
        return self.model.written(Transcript.join([*self._done, self._segment_transcript()]))

    def finish(self) -> Transcript:
        self._advance(self.segmenter.flush(), ends=True)
        result = Transcript.join(self._done)
        self._done, self._offset = [], 0
        return self.model.written(result)

    def _advance(self, piece: np.ndarray, ends: bool) -> None:
        self._acoustics.push(self.featurizer.feed(piece))
        self._samples += piece.size
        if ends:
            self._acoustics.push(self.featurizer.flush())
            self._acoustics.close()
            self._done.append(self._segment_transcript())
            self._offset += self._samples
            self._new_segment()

    def _segment_transcript(self) -> Transcript:
        transcript = self.model.decoder.decode(self._acoustics.logits())
        return transcript.shifted(self._offset / self.model.sample_rate)


def as_float_samples(audio: np.ndarray | bytes) -> np.ndarray:
    """Mono samples as float32 in [-1, 1]: int16 (or raw 16-bit PCM bytes) are scaled by 1/32768."""
    if isinstance(audio, bytes | bytearray | memoryview):
        audio = np.frombuffer(audio, dtype="<i2")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise DsitaError(f"expected mono samples (one dimension), got shape {audio.shape}")
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if not np.issubdtype(audio.dtype, np.floating):
        raise DsitaError(f"expected float or int16 samples, got {audio.dtype}")
    return audio.astype(np.float32, copy=False)


def load_model(path: str | Path, options: InferenceOptions = InferenceOptions()) -> SpeechModel:
    """A model package (`it-it.zip`, `model_it.tar.xz`, a folder, or a bare `model.onnx`) ready to use."""
    return SpeechModel(open_package(path), options)
