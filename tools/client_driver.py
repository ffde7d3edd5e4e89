"""Transcribe clips with an original client (`deepspeech` 0.9.3 or `stt` 1.4.0), run by its venv's python.

A test tool, not part of dsita: it imports only the client and the standard library, so it runs on Python
3.9. Reads a JSON job from argv[1] and writes a JSON result to argv[2]:

job:    {"module": "deepspeech" | "stt", "model": path, "beam_width": int | null, "num_results": int,
         "passes": [{"scorer": path | null, "beam_width": int | null, "clips": [16 kHz mono int16 WAVs],
                     "decode": [{"probs": .npy path (steps, n_outputs) float32, "alphabet": alphabet.txt}]}]}
        (without "passes", the job's own "scorer", "clips" and "decode" are its one pass)
result: {"version": str, "sample_rate": int, "default_beam_width": int, "beam_width": int,
         "load_seconds": float,
         "passes": [{"beam_width": int, "scorer_weights": [alpha, beta] | null,
                     "clips": [{"candidates": [[confidence, text], ...], "seconds": float}],
                     "decoded": [[[confidence, text], ...], ...]}],
         "clips", "decoded": the first pass's}

One model serves every pass: a pass with a scorer enables it (`enableExternalScorer`, the package's own
alpha and beta), a pass without disables it. `default_beam_width` is the graph's (its metadata); a pass
runs at its own "beam_width", else the job's, else that default.

With "module": "tflite_runtime" the job is instead {"model": .tflite path, "features": [.npy (steps, 494)],
"windows": .npy (n, 512)} and the graph runs in TFLite's own Python interpreter (not a client): the acoustic
model on each feature file, n_steps at a time with the LSTM state carried over as the clients carry it, and
the MFCC front end on each 512-sample window; result {"probs": [.npy written beside each features file],
"mfccs": .npy beside the windows}.

"decode" runs the client's own CTC beam search (ds_ctcdecoder / coqui_stt_ctcdecoder, the decoder the client
embeds) on probabilities computed elsewhere, with the client's settings (cutoff_prob 1.0, cutoff_top_n 40)
and the pass's scorer at the package's alpha and beta (`scorer_weights`, as the decoder module reads them), so
a caller can compare the client's confidences with those of its own probabilities.
"""

import importlib
import json
import sys
import time
import wave


def read_wav(path):
    """The int16 samples of a 16-bit mono WAV, as the client's numpy array."""
    import numpy as np

    with wave.open(path, "rb") as f:
        if f.getnchannels() != 1 or f.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit mono WAV")
        return np.frombuffer(f.readframes(f.getnframes()), np.int16), f.getframerate()


def transcribe(job, client):
    """Load the model once, then every pass's clips through sttWithMetadata, with or without its scorer."""
    start = time.perf_counter()
    model = client.Model(job["model"])
    default_beam_width = model.beamWidth()
    result = {
        "version": client.version(),
        "sample_rate": model.sampleRate(),
        "default_beam_width": default_beam_width,
        "beam_width": job.get("beam_width") or default_beam_width,
        "load_seconds": time.perf_counter() - start,
        "passes": [],
    }
    for one in job.get("passes", [job]):
        beam_width = one.get("beam_width") or result["beam_width"]
        model.setBeamWidth(beam_width)
        if one.get("scorer"):
            model.enableExternalScorer(one["scorer"])
        else:
            model.disableExternalScorer()
        clips = []
        for path in one.get("clips", []):
            audio, rate = read_wav(path)
            if rate != model.sampleRate():
                raise SystemExit(f"{path}: {rate} Hz, the model needs {model.sampleRate()} Hz")
            start = time.perf_counter()
            metadata = model.sttWithMetadata(audio, job.get("num_results", 1))
            seconds = time.perf_counter() - start
            candidates = [
                [t.confidence, "".join(token.text for token in t.tokens)] for t in metadata.transcripts
            ]
            clips.append({"candidates": candidates, "seconds": seconds})
        weights, decoded = decode(job, one, beam_width)
        result["passes"].append(
            {"beam_width": beam_width, "scorer_weights": weights, "clips": clips, "decoded": decoded}
        )
    result["clips"], result["decoded"] = result["passes"][0]["clips"], result["passes"][0]["decoded"]
    return result


def load_scorer(decoder, path, alphabet):
    """The decoder module's Scorer from a package, at the package's own alpha and beta."""
    scorer = decoder.Scorer()
    # coqui_stt_ctcdecoder's name for it, then ds_ctcdecoder's
    init = getattr(scorer, "init_from_filepath", None) or scorer.init
    error = init(path.encode("utf-8"), alphabet)
    if error != 0:
        raise SystemExit(f"{path}: the decoder refused the scorer (error 0x{error:X})")
    return scorer


def decode(job, one, beam_width):
    """([alpha, beta] of the pass's scorer or None, the client's decoder on the pass's probabilities)."""
    if not one.get("decode"):
        return None, []
    import numpy as np

    name = "ds_ctcdecoder" if job["module"] == "deepspeech" else "coqui_stt_ctcdecoder"
    decoder = importlib.import_module(name)
    alphabet = decoder.Alphabet(one["decode"][0]["alphabet"])
    scorer = load_scorer(decoder, one["scorer"], alphabet) if one.get("scorer") else None
    out = []
    for item in one["decode"]:
        probs = np.load(item["probs"]).astype(np.float64)
        beams = decoder.ctc_beam_search_decoder(
            probs,
            alphabet,
            beam_width,
            cutoff_prob=1.0,
            cutoff_top_n=40,
            scorer=scorer,
            num_results=job.get("num_results", 1),
        )
        # ds_ctcdecoder gives (confidence, text); coqui_stt_ctcdecoder DecodeResult(confidence, text, ...)
        out.append([[float(beam[0]), beam[1]] for beam in beams])
    return ([scorer.alpha, scorer.beta] if scorer else None), out


def run_graph(job):
    """The .tflite's probabilities on given features and its MFCCs of given windows, via tflite_runtime."""
    import numpy as np
    from tflite_runtime.interpreter import Interpreter

    interpreter = Interpreter(job["model"], num_threads=1)
    interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_input_details()}
    inputs = {name: d["index"] for name, d in details.items()}
    outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    shape = details["input_node"]["shape"]  # (1, n_steps, 19, 26)
    n_steps, state_shape = shape[1], details["previous_state_c"]["shape"]
    result = {"probs": []}
    for path in job["features"]:
        features = np.load(path)
        state = {name: np.zeros(state_shape, np.float32) for name in ("previous_state_c", "previous_state_h")}
        rows = []
        for start in range(0, features.shape[0], n_steps):
            chunk = features[start : start + n_steps]
            batch = np.zeros(shape, np.float32)
            batch.reshape(n_steps, -1)[: chunk.shape[0]] = chunk
            interpreter.set_tensor(inputs["input_node"], batch)
            for name, value in state.items():
                interpreter.set_tensor(inputs[name], value)
            interpreter.invoke()
            rows.append(interpreter.get_tensor(outputs["logits"])[: chunk.shape[0]])
            state = {f"previous_state_{k}": interpreter.get_tensor(outputs[f"new_state_{k}"]) for k in "ch"}
        out = path[: -len(".npy")] + ".tflite.npy"
        np.save(out, np.concatenate(rows))
        result["probs"].append(out)
    mfccs = []
    for window in np.load(job["windows"]):
        interpreter.set_tensor(inputs["input_samples"], window.astype(np.float32))
        interpreter.invoke()
        mfccs.append(interpreter.get_tensor(outputs["mfccs"]).reshape(-1))
    result["mfccs"] = job["windows"][: -len(".npy")] + ".mfccs.npy"
    np.save(result["mfccs"], np.array(mfccs))
    return result


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    if job["module"] == "tflite_runtime":
        result = run_graph(job)
    else:
        result = transcribe(job, importlib.import_module(job["module"]))
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
