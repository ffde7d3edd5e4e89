"""Speech to text with an exported model, on onnxruntime and numpy only: nothing here imports torch.

    model = dsita.load_model("it-it.zip")
    model.transcribe("clip.flac", hotwords={"cancelletto": 8.0, "posta vocale": 5.0}).text
    stream = model.stream(); stream.feed(pcm); stream.intermediate().text; stream.finish().text

Audio is cut into segments at pauses (`dsita.inference.vad`); each segment is run on its own (a DeepSpeech
graph from a fresh LSTM state, a conformer graph on the whole segment at once) and decoded, and the
segments' transcripts are joined. Only one segment (at most `max_segment_s`) is held at a time, so memory
stays flat on long files. Hot words (`dsita.decoding.hotwords`) are boosted in the beam search.

A stream is cut at the same places as the whole file, and each segment is computed and decoded as its audio
arrives (`dsita.inference.segment`): the beam search advances on the new frames only, `intermediate` reads
its best hypothesis and `finish` closes it, so the time to the final transcript does not grow with the
segment. With DeepSpeech's recurrent graph a stream gives exactly the whole file's transcript. The
conformer's segment graph streams by recomputing windows with limited right context
(`dsita.inference.chunked`), at some cost in accuracy against whole segments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dsita.audio import LOG_MEL_FEATURES, MFCC_FEATURES, feature_metadata, iter_audio
from dsita.decoding.beam import BeamDecoder, BeamSearchDecoder, DecoderOptions
from dsita.decoding.greedy import GreedyDecoder
from dsita.decoding.transcript import Decoder, Transcript
from dsita.errors import DsitaError
from dsita.inference.chunked import ChunkOptions, WindowedLogits
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
from dsita.inference.segment import (
    GreedySegment,
    MfccLogits,
    SegmentAcoustics,
    SegmentDecoding,
    SegmentLogits,
    State,
)
from dsita.inference.vad import Segmenter, VadOptions, segments
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet

Hotwords = Mapping[str, float] | None  # {"word or phrase": boost}


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
    """How a loaded model transcribes: decoder, threads, number writing, VAD cuts and conformer chunks."""

    use_lm: bool = True  # beam search with the package's scorer when it has one; greedy otherwise
    beam_width: int | None = None  # None: the decoder's default
    threads: int = 1
    itn: bool = False  # spoken numbers, dates, times and money as digits (`Transcript.itn`)
    vad: VadOptions = field(default_factory=VadOptions)
    chunks: ChunkOptions = field(default_factory=ChunkOptions)  # a conformer's stream


class SpeechModel:
    """An exported acoustic model, its alphabet and a decoder."""

    def __init__(self, package: ModelPackage, options: InferenceOptions = InferenceOptions()) -> None:
        self.package = package
        self.options = options
        try:
            self.session = onnx_session(package.model_path, options.threads)
        except Exception as exc:  # onnxruntime's own exception types: corrupt or unsupported graphs
            detail = package.member_names(str(exc))
            raise DsitaError(f"{package.source}: cannot load the ONNX model ({detail})") from None
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
        with package.naming_members():  # scorer errors name the member, not the temporary folder
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
        """The zero (c, h) LSTM state a segment starts from, each (1, n_hidden)."""
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
        segment_logits: np.ndarray = logits[0, : int(lengths[0])]
        return segment_logits

    def window_logits(self, samples: np.ndarray) -> np.ndarray:
        """Samples of a stretch of audio, featurised as a segment of its own, through the segment graph."""
        return self.run_segment(self.featurizer.features(samples))

    def segment_logits(self, samples: np.ndarray) -> np.ndarray:
        """One segment's (T, n_outputs) logits, from a fresh state."""
        features = self.featurizer.features(samples)
        if not self.streaming:
            return self.run_segment(features)
        acoustics = SegmentLogits(self, self.featurizer.n_features, len(self.alphabet) + 1)
        return np.concatenate([acoustics.push(features), acoustics.close()])

    def transcribe_segment(self, samples: np.ndarray, decoder: Decoder | None = None) -> Transcript:
        """One segment, from a fresh state (with `decoder`, by default the model's)."""
        return (decoder or self.decoder).decode(self.segment_logits(samples))

    def transcribe(self, audio: str | Path | np.ndarray, hotwords: Hotwords = None) -> Transcript:
        """A file (any format and rate `dsita.audio.load_audio` reads), or 16 kHz mono samples (float in
        [-1, 1], or int16); `hotwords` {"word or phrase": boost} are boosted in the beam search."""
        decoder = self.decoder_for(hotwords)
        if isinstance(audio, str | Path):
            blocks: Iterable[np.ndarray] = (_finite(block, str(audio)) for block in iter_audio(audio))
        else:
            blocks = [as_float_samples(audio)]
        return self.written(Transcript.join(self._segments(blocks, decoder)))

    def decoder_for(self, hotwords: Hotwords) -> Decoder:
        """The model's decoder with `hotwords` boosted (a list is compiled once: `with_hotwords`)."""
        if not hotwords:
            return self.decoder
        if not isinstance(self.decoder, BeamDecoder):
            why = "this model has no scorer" if self.package.scorer_path is None else "the LM is off"
            raise DsitaError(f"hot words need the beam search with a scorer, and {why}")
        return self.decoder.with_hotwords(hotwords)

    def written(self, transcript: Transcript) -> Transcript:
        """A transcript as the options want it written: with digits for spoken numbers when `itn` is on."""
        return transcript.itn() if self.options.itn else transcript

    def _segments(self, blocks: Iterable[np.ndarray], decoder: Decoder) -> Iterable[Transcript]:
        offset = 0
        for segment in segments(blocks, self.options.vad):
            yield self.transcribe_segment(segment, decoder).shifted(offset / self.sample_rate)
            offset += segment.size

    @property
    def sample_rate(self) -> int:
        """The audio rate the model expects, from the package's metadata (16000)."""
        return int(self.metadata["sample_rate"])

    def stream(self, hotwords: Hotwords = None) -> Stream:
        """A stream of this model's recognizer, with `hotwords` boosted for its lifetime."""
        return Stream(self, hotwords)

    def segment_acoustics(self) -> SegmentAcoustics:
        """A new segment's acoustics for a stream: DeepSpeech's recurrent chunks, or a conformer's windows."""
        n_outputs = len(self.alphabet) + 1
        if self.streaming:
            return MfccLogits(self, n_outputs)
        return WindowedLogits(self, self.options.chunks, n_outputs)


def segment_decoding(decoder: Decoder) -> SegmentDecoding:
    """A new segment's incremental decoding with `decoder`."""
    if isinstance(decoder, BeamDecoder):
        return decoder.start()
    if isinstance(decoder, GreedyDecoder):
        return GreedySegment(decoder)
    raise TypeError(f"no incremental decoding for {type(decoder).__name__}")


class Stream:
    """DeepSpeech's streaming API: `feed` audio as it arrives, `intermediate` for the transcript so far,
    `finish` for the final one (after which the stream starts over, empty).

    Each segment's audio goes through the model and the decoder once, as it arrives; `intermediate` only
    reads the decoder's best hypothesis so far (the finished segments' transcripts, then the open one's
    finished words), and `finish` runs the last samples and closes the beam. A finished segment's search
    holds every frame's hypotheses; it is freed at the next `feed` or `finish`, after its transcript is
    out (freeing takes time in proportion to the segment's length).
    """

    def __init__(self, model: SpeechModel, hotwords: Hotwords = None) -> None:
        self.model = model
        self.decoder = model.decoder_for(hotwords)
        self.segmenter = Segmenter(model.options.vad)
        self._done: list[Transcript] = []
        self._offset = 0  # samples in the finished segments
        self._finished: list[SegmentDecoding] = []  # searches to free on the next call
        self._new_segment()

    def _new_segment(self) -> None:
        self._acoustics = self.model.segment_acoustics()
        self._decoding = segment_decoding(self.decoder)
        self._samples = 0

    def feed(self, audio: np.ndarray | bytes) -> None:
        """16 kHz mono samples: float in [-1, 1], int16, or raw little-endian 16-bit PCM bytes."""
        self._finished.clear()
        for piece, ends in self.segmenter.split(as_float_samples(audio)):
            self._advance(piece, ends)

    def intermediate(self) -> Transcript:
        """The transcript so far: finished segments, then the open segment's finished words."""
        return self.model.written(Transcript.join([*self._done, self._placed(self._decoding.transcript())]))

    def finish(self) -> Transcript:
        """Run the last samples, close the beam and return the whole transcript; the stream then
        starts over, empty.
        """
        self._finished.clear()
        self._advance(self.segmenter.flush(), ends=True)
        result = Transcript.join(self._done)
        self._done, self._offset = [], 0
        return self.model.written(result)

    def _advance(self, piece: np.ndarray, ends: bool) -> None:
        self._decoding.feed(self._acoustics.push(piece))
        self._samples += piece.size
        if ends:
            self._decoding.feed(self._acoustics.close())
            self._done.append(self._placed(self._decoding.finish()))
            self._offset += self._samples
            self._finished.append(self._decoding)
            self._new_segment()

    def _placed(self, transcript: Transcript) -> Transcript:
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
    return _finite(audio.astype(np.float32, copy=False), "audio")


def _finite(samples: np.ndarray, source: str) -> np.ndarray:
    """NaN or infinite samples would pass through the features and decode as silence: refuse them."""
    if not np.isfinite(samples).all():
        raise DsitaError(f"{source}: NaN or infinite samples (expected finite values in [-1, 1])")
    return samples


def load_model(path: str | Path, options: InferenceOptions = InferenceOptions()) -> SpeechModel:
    """A model package (`it-it.zip`, `model_it.tar.xz`, a folder, or a bare `model.onnx`) ready to use."""
    return SpeechModel(open_package(path), options)
