"""Check with TensorFlow itself that dsita's DeepSpeech 0.9 checkpoint writer writes what TensorFlow reads.

TensorFlow is never a dsita dependency: the check half runs in a throw-away venv.

    python3 -m venv /tmp/tf-venv && /tmp/tf-venv/bin/pip install tensorflow-cpu
    .venv/bin/python tools/check_tf_checkpoint.py --tf-python /tmp/tf-venv/bin/python \
        [--model tests/fixtures/small_model.pt] [--out DIR]

The first half (dsita's venv) writes the model as a DeepSpeech checkpoint into DIR/checkpoint with
`write_deepspeech_checkpoint`, and beside it `expected.npz` (every tensor the writer was given, from the
model's weights and the training state, not read back by dsita), `features.npy` (T, 1, 494) time-major
features and `logits.npy`, the model's torch logits for them. The second half (`--check DIR`, TensorFlow's
venv) then:
  1. finds the checkpoint through `best_dev_checkpoint` as DeepSpeech does, and reads every tensor with
     `tf.train.load_checkpoint`: the same names, dtypes, shapes and values, bit for bit;
  2. builds DeepSpeech 0.9's training graph (`create_model` with LSTMBlockFusedCell's BlockLSTM op,
     forget_bias 0; AdamOptimizer; global_step; learning_rate), restores it with `tf.compat.v1.train.Saver`,
     which needs every variable of the graph in the checkpoint, and runs it on the features: its logits
     must match torch's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LSTM_SCOPE = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
RELU_CLIP = 20.0
LOGITS_TOLERANCE = 1e-4  # float32 through different kernels (TF's BlockLSTM, torch's LSTM)


def prepare(model_path: Path, out: Path) -> None:
    """dsita's half: the checkpoint, what it should hold, and features with torch's logits for them."""
    import torch

    from dsita.convert.deepspeech import (
        TfCheckpointOptions,
        from_state_dict,
        training_state,
        write_deepspeech_checkpoint,
    )
    from dsita.training.checkpoint import load_checkpoint, load_trained_model

    prefix = write_deepspeech_checkpoint(model_path, out / "checkpoint")
    model, _ = load_trained_model(model_path)
    variables = from_state_dict(model.state_dict())
    step = int(load_checkpoint(model_path).get("train_state", {}).get("step", 0))
    expected = {**variables, **training_state(variables, step, TfCheckpointOptions())}
    np.savez(out / "expected.npz", **{name.replace("/", "|"): value for name, value in expected.items()})
    features = (10.0 * np.random.default_rng(0).standard_normal((40, 1, 494))).astype(np.float32)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(features).transpose(0, 1)).logits.transpose(0, 1).numpy()
    np.save(out / "features.npy", features)
    np.save(out / "logits.npy", logits)
    print(f"wrote {prefix} ({len(expected)} tensors)")


def check(out: Path) -> None:
    """TensorFlow's half: read the checkpoint, restore DeepSpeech's training graph from it, run it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tfv1 = tf.compat.v1
    folder = out / "checkpoint"
    state = tf.train.get_checkpoint_state(str(folder), latest_filename="best_dev_checkpoint")
    path = state.model_checkpoint_path
    reader = tf.train.load_checkpoint(path)
    expected = {name.replace("|", "/"): value for name, value in np.load(out / "expected.npz").items()}
    dtypes = reader.get_variable_to_dtype_map()
    assert set(dtypes) == set(expected), sorted(set(dtypes) ^ set(expected))
    for name, value in expected.items():
        got = reader.get_tensor(name)
        assert dtypes[name].as_numpy_dtype == value.dtype, (name, dtypes[name], value.dtype)
        assert got.shape == value.shape and got.tobytes() == value.tobytes(), name
    print(f"tensorflow {tf.__version__}: {path}: {len(expected)} tensors read back bit for bit")

    n_hidden = expected["layer_1/bias"].shape[0]
    n_outputs = expected["layer_6/bias"].shape[0]
    tfv1.disable_eager_execution()
    logits = _deepspeech_graph(tfv1, tf, n_hidden, n_outputs)
    with tfv1.Session() as session:
        tfv1.train.Saver().restore(session, path)  # every variable of the graph, or it fails
        restored = len(tfv1.global_variables())
        got = session.run(logits, {"input_node:0": np.load(out / "features.npy")})
    error = float(np.abs(got - np.load(out / "logits.npy")).max())
    print(
        f"DeepSpeech's training graph: {restored} variables restored; logits vs torch: max |diff| {error:.1e}"
    )
    if error > LOGITS_TOLERANCE:
        raise SystemExit(f"logits differ by {error} > {LOGITS_TOLERANCE}")


def _deepspeech_graph(tfv1: Any, tf: Any, n_hidden: int, n_outputs: int) -> Any:
    """DeepSpeech 0.9's `create_model` and training variables; returns the time-major raw logits."""
    features = tfv1.placeholder(tf.float32, [None, None, 494], name="input_node")
    steps, batch = tf.shape(features)[0], tf.shape(features)[1]

    def dense(name: str, x: Any, units: int, relu: bool = True) -> Any:
        with tfv1.variable_scope(name):
            bias = tfv1.get_variable("bias", [units])
            weights = tfv1.get_variable("weights", [x.shape[-1], units])
        y = tf.nn.bias_add(tf.matmul(x, weights), bias)
        return tf.minimum(tf.nn.relu(y), RELU_CLIP) if relu else y

    x = dense(
        "layer_3",
        dense("layer_2", dense("layer_1", tf.reshape(features, [-1, 494]), n_hidden), n_hidden),
        n_hidden,
    )
    with tfv1.variable_scope(LSTM_SCOPE):
        kernel = tfv1.get_variable("kernel", [2 * n_hidden, 4 * n_hidden])
        bias = tfv1.get_variable("bias", [4 * n_hidden])
    zeros = tf.zeros([batch, n_hidden])
    *_, h = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(steps, tf.int64),
        x=tf.reshape(x, [steps, batch, n_hidden]),
        cs_prev=zeros,
        h_prev=zeros,
        w=kernel,
        wci=tf.zeros([n_hidden]),
        wcf=tf.zeros([n_hidden]),
        wco=tf.zeros([n_hidden]),
        b=bias,
        forget_bias=0.0,
        cell_clip=-1.0,
        use_peephole=False,
    )
    layer_6 = dense(
        "layer_6", dense("layer_5", tf.reshape(h, [-1, n_hidden]), n_hidden), n_outputs, relu=False
    )
    logits = tf.reshape(layer_6, [steps, batch, n_outputs])
    global_step = tfv1.train.get_or_create_global_step()
    learning_rate = tfv1.get_variable("learning_rate", initializer=0.001, trainable=False)
    loss = tf.reduce_mean(tf.square(logits))
    tfv1.train.AdamOptimizer(learning_rate).minimize(loss, global_step)  # creates the slots and beta powers
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tf-python", type=Path, help="the TensorFlow venv's python (dsita's half)")
    parser.add_argument("--model", type=Path, default=REPO / "tests" / "fixtures" / "small_model.pt")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--check", type=Path, help="TensorFlow's half, on a folder the first half wrote")
    args = parser.parse_args()
    if args.check:
        check(args.check)
        return
    if args.tf_python is None:
        parser.error("give --tf-python (or --check DIR from TensorFlow's venv)")
    with tempfile.TemporaryDirectory() as temp:
        out = args.out or Path(temp)
        out.mkdir(parents=True, exist_ok=True)
        prepare(args.model, out)
        result = subprocess.run([str(args.tf_python), __file__, "--check", str(out)], check=False)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
