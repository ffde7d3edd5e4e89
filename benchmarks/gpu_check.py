"""The GPU check: every GPU path of dsita's training on one CUDA device, in one run, into one JSON report.

    .venv/bin/python benchmarks/gpu_check.py --out DIR        # one H100/H200: under 8 minutes
    .venv/bin/python benchmarks/gpu_check.py --cpu-dry-run --out DIR   # tiny sizes on the CPU (the suite)

Sections, in order, each recorded as {"ok", "seconds", "result"} or {"ok": false, "error", "trace"}, or
{"ok": null, "skipped": why}; the report is rewritten after each one, so a killed run still reports:

- env: versions, the device, bf16 without emulation, the autocast dtype and TF32 flags training uses.
- parity: CUDA against CPU logits of both models in float32 (TF32 off and on) and under bf16 autocast.
- ctc: the loss and gradient of training's CTC on CUDA against the CPU, and the kernel that ran.
- lstm_kernels: the cuDNN RNN kernels and input dtypes of DeepSpeech's LSTM under training's autocast,
  and the time of a forward and backward with and without AMP.
- attention_kernels: the attention kernels the conformer presets run under bf16, and which fused
  backends (flash, memory-efficient) accept their head widths and masks.
- corpus: synthetic clips with CTC-feasible transcripts, written as WAVs with DeepSpeech CSVs.
- train_amp, train_resume, train_conformer: real `train()` runs with AMP and augmentation, and a resume to
  a second epoch.
- train_fp16: training forced to fp16 with a GradScaler, and a bf16 checkpoint (scaler `{}`) resumed in fp16.
- rng_list_resume: a checkpoint holding a CUDA RNG state per GPU of a larger machine (older dsita) resumes.
- host_syncs: where training steps make the host wait for the device (`torch.cuda.set_sync_debug_mode`).
- ddp_nccl_world1: the DDP wrapper and every collective a multi-GPU step makes, on NCCL, in one process.
- throughput_deepspeech, throughput_conformer: audio seconds per second and peak memory of training steps
  at N_HIDDEN=2048 and conformer `medium` with AMP (the target: 3,000 audio-s/s at N_HIDDEN=2048).

Exits 1 when a section failed. The suite runs the dry run (`tests/training/test_gpu_check.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dsita.audio import SAMPLE_RATE
from dsita.data.augmentation.options import AugmentOptions
from dsita.data.csvs import Sample, write_csv
from dsita.data.dataset import Batch
from dsita.model.base import AcousticModel, build_model, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.training import loop
from dsita.training.checkpoint import LAST, load_checkpoint, save_checkpoint
from dsita.training.data import load_training_data
from dsita.training.options import TrainOptions
from dsita.training.runtime import Distributed, autocast_dtype, pick_device

ITALIAN = Alphabet.italian()
# Kernel names that tell which attention ran: fused flash or memory-efficient, or the math path's softmax.
ATTENTION_WORDS = ("flash", "fmha", "attention", "efficient", "softmax")
TARGET_AUDIO_SECONDS_PER_SECOND = 3000.0  # DeepSpeech at N_HIDDEN=2048 with AMP, one H100/H200
BUDGET_SECONDS = 450.0  # sections after this are skipped, so the run stays under 8 minutes


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the check runs at: production sizes on a GPU, tiny ones on the CPU."""

    train_clips: int
    dev_clips: int
    clip_seconds: tuple[float, float]
    batch_size: int
    n_hidden: int
    conformer: str  # the throughput preset
    workers: int
    steps: int  # timed throughput steps (after 3 warm-up ones)


GPU_SIZES = Sizes(256, 64, (5.0, 15.0), 64, 2048, "medium", 6, 12)
CPU_SIZES = Sizes(12, 4, (1.0, 2.0), 4, 32, "tiny", 0, 2)


class Skip(Exception):
    """A section that does not apply here (the CPU dry run), with the reason."""


class Report:
    """Section results, written to `path` after each section."""

    def __init__(self, path: Path) -> None:
        self.path, self.sections, self.started = path, {}, time.monotonic()

    def section(self, name: str, run: Callable[[], Any]) -> Any:
        """Run one section; a failure is recorded, and the next section runs."""
        if time.monotonic() - self.started > BUDGET_SECONDS:
            self.sections[name] = {"ok": None, "skipped": "the time budget is spent"}
            return self._save(name)
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            entry: dict[str, Any] = {"ok": True, "result": run()}
        except Skip as reason:
            entry = {"ok": None, "skipped": str(reason)}
        except Exception as exc:  # every failure is a finding, and the other sections still run
            entry = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}"[:2000],
                "trace": traceback.format_exc(),
            }
        entry["seconds"] = round(time.monotonic() - start, 1)
        self.sections[name] = entry
        return self._save(name)

    def _save(self, name: str) -> Any:
        body = {"sections": self.sections, "total_seconds": round(time.monotonic() - self.started, 1)}
        self.path.write_text(json.dumps(body, indent=1, default=str) + "\n")
        print(json.dumps(self.sections[name], default=str)[:1500], flush=True)
        return self.sections[name].get("result")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def milliseconds(step: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    """Mean wall time of `step` after two warm-up calls."""
    for _ in range(2):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return round((time.perf_counter() - start) / repeats * 1000, 2)


class OpDtypes(TorchDispatchMode):
    """The input dtypes of every aten op whose name holds one of `names`."""

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.names, self.seen = names, {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if any(n in name for n in self.names):
            dtypes = sorted(
                {str(a.dtype).removeprefix("torch.") for a in args if isinstance(a, torch.Tensor)}
            )
            self.seen.setdefault(name, set()).update(dtypes)
        return func(*args, **(kwargs or {}))


def cuda_kernels(step: Callable[[], Any], device: torch.device, top: int = 12) -> list[dict[str, Any]]:
    """The device kernels (on the CPU: the ops) one call of `step` runs, by total time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    events = [e for e in prof.key_averages() if device.type != "cuda" or e.device_type.name == "CUDA"]
    timed = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events.sort(key=lambda e: -getattr(e, timed, 0))
    return [{"name": e.key[:160], "calls": e.count, "us": round(getattr(e, timed, 0))} for e in events[:top]]


def ctc_targets(batch: int, length: int, n_outputs: int, device: torch.device) -> Batch:
    """A Batch holding only CTC targets (labels, never the blank, which is the last output)."""
    targets = torch.randint(0, n_outputs - 1, (batch * length,), device=device)
    lengths = torch.full((batch,), length, device=device)
    return Batch(torch.empty(0), torch.empty(0), targets, lengths, list(range(batch)), False)


# --- the sections ------------------------------------------------------------------------------------------


def env_section(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        pick_device(Distributed())  # what training sets: TF32 for float32 products
        props, nccl = torch.cuda.get_device_properties(device), torch.cuda.nccl.version()
        info |= {
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "gpus_visible": torch.cuda.device_count(),
            "cudnn": torch.backends.cudnn.version(),
            "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
            "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False),
            "training_autocast_dtype": str(autocast_dtype(True, device)),
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        }
    return info


def tiny_models() -> Iterator[tuple[str, AcousticModel, int]]:
    """Both architectures, small, seeded, with a clip length for each."""
    for name, size, fields, samples in (
        ("deepspeech", None, {"n_hidden": 64, "dropout": 0.0}, 7000),
        ("conformer", "tiny", {"dropout": 0.0}, 9000),
    ):
        torch.manual_seed(0)
        config = new_model_config(name, len(ITALIAN) + 1, size, **fields)
        yield name, build_model(config).eval(), samples


def parity_section(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        raise Skip("needs CUDA")
    out: dict[str, Any] = {}
    for name, model, n in tiny_models():
        waveforms = torch.randn(3, n) * 0.1
        lengths = torch.tensor([n, n * 5 // 7, n * 2 // 7])
        with torch.no_grad():
            expected = model(*model.featurizer(waveforms, lengths))
            gpu = model.to(device)
            for tf32 in (False, True):
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
                got = gpu(*gpu.featurizer(waveforms.to(device), lengths.to(device)))
                out[f"{name}_fp32_tf32_{tf32}_max_abs_diff"] = float(
                    (got.logits.cpu() - expected.logits).abs().max()
                )
                if got.lengths.tolist() != expected.lengths.tolist():
                    raise AssertionError(f"{name}: output lengths differ on CUDA")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                amp = gpu(*gpu.featurizer(waveforms.to(device), lengths.to(device)))
            out[f"{name}_bf16_autocast_max_abs_diff"] = float(
                (amp.logits.float().cpu() - expected.logits).abs().max()
            )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    strict = [v for k, v in out.items() if "tf32_False" in k]
    if max(strict) > 1e-3:
        raise AssertionError(f"float32 logits differ by {max(strict):.2e} (tests allow 1e-3): {out}")
    return out


def ctc_section(device: torch.device) -> dict[str, Any]:
    steps, batch, n_outputs, length = 200, 8, len(ITALIAN) + 1, 40
    torch.manual_seed(0)
    logits = torch.randn(batch, steps, n_outputs)
    lengths = torch.full((batch,), steps)
    lengths[1] = steps // 2
    targets = ctc_targets(batch, length, n_outputs, torch.device("cpu"))
    results = {}
    for where in ("cpu", device.type):
        x = logits.clone().to(where).requires_grad_()
        dtypes = OpDtypes("ctc")
        with dtypes:
            loss = loop.ctc_loss(x, lengths.to(where), targets.to(torch.device(where)), n_outputs - 1)
        loss.backward()
        results[where] = (float(loss.detach()), x.grad.cpu(), {k: sorted(v) for k, v in dtypes.seen.items()})
    (cpu_loss, cpu_grad, _), (dev_loss, dev_grad, dev_ops) = results["cpu"], results[device.type]
    relative = float((dev_grad - cpu_grad).norm() / cpu_grad.norm())
    if abs(dev_loss - cpu_loss) > 1e-3 * abs(cpu_loss) or relative > 1e-4:
        raise AssertionError(
            f"CTC on {device.type}: loss {dev_loss} vs {cpu_loss}, gradient off by {relative}"
        )
    return {"loss_cpu": cpu_loss, "loss_device": dev_loss, "grad_rel_diff": relative, "ops_device": dev_ops}


def lstm_section(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    model = build_model(new_model_config("deepspeech", len(ITALIAN) + 1, n_hidden=sizes.n_hidden)).to(device)
    model.train()
    batch, steps = (16, 500) if device.type == "cuda" else (2, 40)
    features = torch.randn(batch, steps, 19 * 26, device=device)
    lengths = torch.randint(steps // 2, steps + 1, (batch,))
    lengths[0] = steps
    targets = ctc_targets(batch, steps // 8, len(ITALIAN) + 1, device)
    dtype = autocast_dtype(True, device) if device.type == "cuda" else None
    out: dict[str, Any] = {"training_autocast_dtype": str(dtype)}
    for label, amp in (("amp", dtype), ("fp32", None)):

        def step(amp: torch.dtype | None = amp) -> None:
            model.zero_grad(set_to_none=True)
            with loop.autocast(device, amp):
                output = model(features, lengths)
            loop.ctc_loss(output.logits, output.lengths, targets, model.blank).backward()

        dtypes = OpDtypes("rnn", "lstm")
        with dtypes:
            step()
        reset_peak(device)
        ms, peak = milliseconds(step, device), peak_gib(device)
        kernels = cuda_kernels(step, device, top=60)
        out[label] = {
            "ms_forward_backward": ms,
            "peak_gib": peak,
            "rnn_input_dtypes": {k: sorted(v) for k, v in dtypes.seen.items()},
            "rnn_kernels": [k for k in kernels if any(w in k["name"].lower() for w in ("rnn", "lstm"))],
            "top_kernels": kernels[:8],
        }
    return out


def attention_section(device: torch.device) -> dict[str, Any]:
    presets = ["small", "medium"] if device.type == "cuda" else ["tiny"]
    return {preset: attention_preset(preset, device) for preset in presets}


def attention_preset(preset: str, device: torch.device) -> dict[str, Any]:
    """One conformer preset's forward and backward under training's autocast: time, memory, kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = autocast_dtype(True, device) if device.type == "cuda" else None
    batch, steps = (16, 1500) if device.type == "cuda" else (2, 120)
    config = new_model_config("conformer", len(ITALIAN) + 1, preset)
    model = build_model(config).to(device).train()
    features = torch.randn(batch, steps, config.n_mels, device=device)
    lengths = torch.randint(steps // 2, steps + 1, (batch,))
    lengths[0] = steps
    targets = ctc_targets(batch, steps // 20, len(ITALIAN) + 1, device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with loop.autocast(device, dtype):
            output = model(features, lengths)  # CPU lengths, as training passes them
        loop.ctc_loss(output.logits, output.lengths, targets, model.blank).backward()

    step()
    reset_peak(device)
    entry: dict[str, Any] = {"head_width": config.d_model // config.n_heads}
    entry["ms_forward_backward"] = milliseconds(step, device)
    entry["peak_gib"] = peak_gib(device)
    kernels = cuda_kernels(step, device, top=25)
    entry["attention_kernels"] = [k for k in kernels if any(w in k["name"].lower() for w in ATTENTION_WORDS)]
    if device.type == "cuda":
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    step()
                entry[f"accepts_{backend.name.lower()}"] = True
            except RuntimeError as exc:
                entry[f"accepts_{backend.name.lower()}"] = f"no: {str(exc).splitlines()[0][:200]}"
    return entry


def corpus_section(folder: Path, sizes: Sizes) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    letters = list("abcdefghilmnopqrstuvz")
    seconds_total = 0.0
    for split, count in (("train", sizes.train_clips), ("dev", sizes.dev_clips)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        samples = []
        for i in range(count):
            seconds = float(rng.uniform(*sizes.clip_seconds))
            audio = (0.05 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
            path = folder / split / f"{i:05d}.wav"
            sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            # Eight letters a second: the conformer's 25 outputs a second spell them with blanks to spare.
            words = "".join(rng.choice(letters) if j % 6 else " " for j in range(1, max(4, int(seconds * 8))))
            samples.append(Sample(path, path.stat().st_size, words.strip(), seconds))
            seconds_total += seconds
        write_csv(folder / f"{split}.csv", samples)
    hours = round(seconds_total / 3600, 3)
    return {"train_clips": sizes.train_clips, "dev_clips": sizes.dev_clips, "audio_hours": hours}


def train_options(corpus: Path, work: Path, name: str, sizes: Sizes, **fields: Any) -> TrainOptions:
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=work / name,
        batch_size=sizes.batch_size,
        epochs=1,
        model_fields={"n_hidden": sizes.n_hidden},
        workers=sizes.workers,
        checkpoint_secs=1e9,
        show_progress=False,
        augment=AugmentOptions(speed=0.5, spec_augment=0.5, noise=0.5, gain=0.5, reverb=0.5),
    )
    return dataclasses.replace(base, **fields)


def run_training(options: TrainOptions, device: torch.device) -> dict[str, Any]:
    """A real `train()`: how it ended, its last epoch's metrics, its peak memory and files."""
    reset_peak(device)
    start = time.monotonic()
    result = loop.train(options, ITALIAN)
    metrics = [
        json.loads(line) for line in (options.checkpoint_dir / "metrics.jsonl").read_text().splitlines()
    ]
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "epochs_completed": result.epochs_completed,
        "last_epoch": metrics[-1],
        "peak_gib": peak_gib(device),
        "files": sorted(p.name for p in options.checkpoint_dir.iterdir()),
    }


@contextlib.contextmanager
def counting_syncs(device: torch.device) -> Iterator[Counter[str]]:
    """Counts the host syncs made in the block by source line (`torch.cuda.set_sync_debug_mode`)."""
    sites: Counter[str] = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    sites.update(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))


def host_syncs_section(options: TrainOptions, device: torch.device) -> dict[str, Any]:
    """The host syncs of training steps with augmentation on (not of the dev pass or checkpoint saves)."""
    options = dataclasses.replace(options, checkpoint_dir=options.checkpoint_dir.parent / "syncs")
    run = loop.start_or_resume(options, ITALIAN, Distributed(), device)
    data = load_training_data(options, ITALIAN, run.model, Distributed(), device)
    stats = loop.EpochStats(torch.zeros((), device=device))
    run.trained.train()
    batches = endless(data)
    loop.train_step(run, data, next(batches), stats)  # the first step allocates and warms up
    synchronize(device)
    steps = 4
    with counting_syncs(device) as sites:
        for _ in range(steps):
            loop.train_step(run, data, next(batches), stats)
    return {
        "steps": steps,
        "syncs_per_step": round(sum(sites.values()) / steps, 2) if device.type == "cuda" else None,
        "sites": dict(sites.most_common(12)),
        "expected": "1 per step: the finite-loss check (a GradScaler adds its own in fp16)",
    }


def resume_section(options: TrainOptions, device: torch.device) -> dict[str, Any]:
    before = load_checkpoint(options.checkpoint_dir / LAST)["train_state"]
    result = run_training(dataclasses.replace(options, epochs=2), device)
    after = load_checkpoint(options.checkpoint_dir / LAST)["train_state"]
    if after["epoch"] != 2 or after["step"] != 2 * before["step"]:
        raise AssertionError(
            f"resumed from {before} to {after}: expected epoch 2 at step {2 * before['step']}"
        )
    return {**result, "resumed_from_step": before["step"]}


@contextlib.contextmanager
def forced_fp16() -> Iterator[None]:
    """Training's dtype choice made fp16, as on a GPU without native bf16 (V100, T4)."""
    chosen = loop.autocast_dtype
    loop.autocast_dtype = lambda amp, device: torch.float16 if amp else None  # type: ignore[assignment]
    try:
        yield
    finally:
        loop.autocast_dtype = chosen  # type: ignore[assignment]


def fp16_section(options: TrainOptions, epoch_one: Path, device: torch.device) -> dict[str, Any]:
    """fp16 training from scratch, and the AMP run's epoch-1 checkpoint (`epoch_one`) resumed in fp16."""
    if device.type != "cuda":
        raise Skip("needs CUDA (a GradScaler scales CUDA losses)")
    work = epoch_one.parent
    with forced_fp16():
        fresh = run_training(dataclasses.replace(options, checkpoint_dir=work / "fp16", epochs=1), device)
        scaler = load_checkpoint(work / "fp16" / LAST)["scaler"]
        if not scaler:
            raise AssertionError("forcing fp16 did not take: the checkpoint holds no GradScaler state")
        saved = load_checkpoint(epoch_one)["scaler"]  # {} when the AMP run was bf16
        (work / "to-fp16").mkdir()
        shutil.copy2(epoch_one, work / "to-fp16" / LAST)
        resumed = run_training(
            dataclasses.replace(options, checkpoint_dir=work / "to-fp16", epochs=2), device
        )
    return {"fp16": fresh, "scale": scaler.get("scale"), "resumed_scaler_state": saved, "resumed": resumed}


def rng_list_section(options: TrainOptions, epoch_one: Path, device: torch.device) -> dict[str, Any]:
    """The AMP run's epoch-1 checkpoint with one CUDA RNG state per GPU of a larger machine, resumed."""
    folder = epoch_one.parent / "rng-list"
    folder.mkdir()
    checkpoint = load_checkpoint(epoch_one)
    state = checkpoint["rng"].get("cuda", torch.get_rng_state())  # the CPU dry run: a stand-in state
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    checkpoint["rng"]["cuda"] = [state] * (gpus + 2)  # as get_rng_state_all() on a machine with more GPUs
    save_checkpoint(folder / LAST, checkpoint)
    result = run_training(dataclasses.replace(options, checkpoint_dir=folder, epochs=2), device)
    return {"saved_states": gpus + 2, "visible_gpus": gpus, **result}


def ddp_section(options: TrainOptions, device: torch.device) -> dict[str, Any]:
    """DDP as training wraps the model, with the collectives of a 2-rank run issued on a 1-process group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if device.type == "cuda" else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        # world_size 2 makes the loop issue its collectives (the finite-loss vote, the dev-loss sum); the
        # group has one process, so each is a real NCCL call that returns at once.
        pretend = Distributed(rank=0, world_size=2, local_rank=0, local_world_size=1)
        options = dataclasses.replace(options, checkpoint_dir=options.checkpoint_dir.parent / "ddp")
        run = loop.start_or_resume(options, ITALIAN, Distributed(), device)
        run.trained = DistributedDataParallel(run.model, device_ids=None, broadcast_buffers=False)
        run.distributed = pretend
        data = load_training_data(options, ITALIAN, run.model, pretend, device)
        stats = loop.EpochStats(torch.zeros((), device=device))
        run.trained.train()
        for cpu_batch in data.train_batches(0, 0):
            loop.train_step(run, data, cpu_batch, stats)
        dev_loss = loop.dataset_loss(run.model, data, device, run.amp_dtype, pretend)
        dist.barrier()
        return {
            "backend": backend,
            "steps": stats.batches,
            "skipped_steps": stats.skipped,
            "dev_loss": dev_loss,
        }
    finally:
        dist.destroy_process_group()


def endless(data: Any) -> Iterator[Batch]:
    epoch = 0
    while True:
        yield from data.train_batches(epoch, 0)
        epoch += 1


def throughput_section(
    options: TrainOptions, device: torch.device, sizes: Sizes, target: float | None = None
) -> dict[str, Any]:
    """Audio seconds per second of real training steps (data loading included, no augmentation), and peak
    memory, on a fresh model."""
    folder = options.checkpoint_dir.parent / f"speed-{options.checkpoint_dir.name}"
    options = dataclasses.replace(options, checkpoint_dir=folder, augment=AugmentOptions())
    run = loop.start_or_resume(options, ITALIAN, Distributed(), device)
    data = load_training_data(options, ITALIAN, run.model, Distributed(), device)
    stats = loop.EpochStats(torch.zeros((), device=device))
    run.trained.train()
    batches = endless(data)
    for _ in range(3):
        loop.train_step(run, data, next(batches), stats)
    synchronize(device)
    reset_peak(device)
    audio, start = 0.0, time.perf_counter()
    for _ in range(sizes.steps):
        cpu_batch = next(batches)
        loop.train_step(run, data, cpu_batch, stats)
        audio += data.audio_seconds(cpu_batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    speed = audio / seconds
    verdict = {} if target is None else {"target": target, "meets_target": speed >= target}
    return {
        **verdict,
        "audio_seconds_per_second": round(speed, 1),
        "ms_per_step": round(seconds / sizes.steps * 1000, 1),
        "batch_audio_seconds": round(audio / sizes.steps, 1),
        "peak_gib": peak_gib(device),
        "amp_dtype": str(run.amp_dtype),
        "parameters": sum(p.numel() for p in run.model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--cpu-dry-run", action="store_true", help="Tiny sizes on the CPU: the plumbing.")
    args = parser.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; --cpu-dry-run checks the script on the CPU")
    device = torch.device("cpu") if args.cpu_dry_run else torch.device("cuda", 0)
    sizes = CPU_SIZES if args.cpu_dry_run else GPU_SIZES
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_check.json")
    work = Path(tempfile.mkdtemp(prefix="dsita-gpu-check-"))
    try:
        run_sections(report, device, sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, entry in report.sections.items() if entry["ok"] is False]
    print(f"gpu_check: {len(report.sections)} sections, failed: {', '.join(failed) or 'none'}; {report.path}")
    sys.exit(1 if failed else 0)


def run_sections(report: Report, device: torch.device, sizes: Sizes, work: Path) -> None:
    """Every section in order; the training ones share the synthetic corpus and the AMP run's checkpoint."""
    corpus, epoch_one = work / "corpus", work / "deepspeech-epoch-1.pt"
    ds = train_options(corpus, work, "deepspeech", sizes)
    tiny = {"model_size": "tiny"} if device.type == "cpu" else {}
    conformer = train_options(corpus, work, "conformer", sizes, architecture="conformer", learning_rate=3e-4)
    report.section("env", lambda: env_section(device))
    report.section("parity", lambda: parity_section(device))
    report.section("ctc", lambda: ctc_section(device))
    report.section("lstm_kernels", lambda: lstm_section(device, sizes))
    report.section("attention_kernels", lambda: attention_section(device))
    report.section("corpus", lambda: corpus_section(corpus, sizes))

    def train_amp() -> dict[str, Any]:
        result = run_training(ds, device)
        shutil.copy2(ds.checkpoint_dir / LAST, epoch_one)  # for the sections that resume it differently
        return result

    report.section("train_amp", train_amp)
    report.section("train_resume", lambda: resume_section(ds, device))
    report.section("train_conformer", lambda: run_training(dataclasses.replace(conformer, **tiny), device))
    report.section("train_fp16", lambda: fp16_section(ds, epoch_one, device))
    report.section("rng_list_resume", lambda: rng_list_section(ds, epoch_one, device))
    report.section("host_syncs", lambda: host_syncs_section(ds, device))
    report.section("ddp_nccl_world1", lambda: ddp_section(ds, device))
    target = TARGET_AUDIO_SECONDS_PER_SECOND if device.type == "cuda" else None
    report.section("throughput_deepspeech", lambda: throughput_section(ds, device, sizes, target))
    medium = dataclasses.replace(conformer, model_size=sizes.conformer)
    report.section("throughput_conformer", lambda: throughput_section(medium, device, sizes))


if __name__ == "__main__":
    main()
