"""Train the small DeepSpeech model that tests of decoding, LM tuning and export share, on the bundled sample.

    .venv/bin/python tools/make_test_model.py [--out tests/fixtures/small_model.pt]

It is real training with `dsita.training.loop` (about 4 minutes on two cores); the slim checkpoint it writes
holds the
best-dev weights, their config and the alphabet, without optimizer state. Re-run it when the model, the
features or the sample corpus change.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import BEST_DEV, load_checkpoint, save_checkpoint
from dsita.training.loop import TrainOptions, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "small_model.pt")
    parser.add_argument("--n-hidden", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    alphabet = Alphabet.italian()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        import_common_voice(
            REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(alphabet, progress=False)
        )
        options = TrainOptions(
            train_csvs=(corpus / "train.csv",),
            dev_csvs=(corpus / "dev.csv",),
            checkpoint_dir=Path(tmp) / "checkpoints",
            batch_size=8,
            epochs=args.epochs,
            learning_rate=1e-3,
            model_fields={"n_hidden": args.n_hidden, "dropout": 0.1},
            early_stop=False,
            amp=False,
            seed=1,
            workers=1,
        )
        train(options, alphabet)
        best = load_checkpoint(options.checkpoint_dir / BEST_DEV)
        slim = {key: best[key] for key in ("model_config", "model", "alphabet", "train_state")}
        save_checkpoint(args.out, slim)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), "
        f"best dev loss {best['train_state']['best_dev_loss']:.2f}"
    )


if __name__ == "__main__":
    main()
