"""Execution modes (precision × memory format × compile), chosen per machine by a short calibration.

A mode changes how a step runs, not what it computes (up to bf16 rounding). ``precision="auto"`` /
``memory_format="auto"`` ask :func:`resolve` to time a few steps of every candidate the machine can
run and keep the fastest. Candidates: fp32 and channels-last always; bf16 autocast only where the
hardware has native bf16 (``avx512_bf16`` or AMX on x86 CPUs, ``torch.cuda.is_bf16_supported()`` on
a GPU) -- emulated bf16 is several times slower than fp32; ``torch.compile`` variants only on CUDA,
where compile time (tens of seconds) is small next to a run, and there only the compiled twin of the
fastest eager mode (compiling all four would cost minutes). On a 2-core CPU compiling takes 1-2.5
minutes per mode and process, more than a ``cpu``-profile run trains, and the compiled step was faster
only at two threads (2.45x vs 2.15x the authors-style step; slower at one): ``compile=True`` opts in
(docs/performance.md). Channels-last training on CPU runs BatchNorm (+ hard-swish) through
``accel/norm_kernel.py`` where it is built, so the calibration times the modes as ``fit`` runs them,
and the training cache key says whether the kernel was there. A candidate that raises when built or
on its first call (a compile without a working toolchain, say) is left out with its reason, which
the record and the cache keep (``failed``), instead of ending the run.

The choice is cached in ``<MICRONET_CACHE or ~/.cache/micronet>/execution-modes-v<CACHE_VERSION>.json``, keyed by what
decides speed: the device (CPU model + the flags that matter, or the GPU name), torch's version and
thread count, the model and the batch size. ``fit`` records the chosen mode in the run folder
(``execution.json``) and its summary; a resumed run uses the recorded mode, never a new calibration.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from micronet_lib.accel import enabled, norm_kernel, OFF_NOTE
from micronet_lib.accel.cpuinfo import SPEED_FLAGS, cpu_flags  # re-exported: the flags are part of the cache key
from micronet_lib.assets import cache_dir
from micronet_lib.fileio import atomic_write_text

__all__ = ["ExecutionMode", "PRECISIONS", "MEMORY_FORMATS", "cpu_flags", "bf16_native", "machine_key", "candidates",
           "resolve", "calibrate", "model_key", "time_alternating", "cache_path", "autocast", "train_runner", "eval_runner", "SPEED_FLAGS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
MEMORY_FORMATS = ("contiguous", "channels_last")
# 2: strided-depthwise and SE-gradient fixes; 3: conv+hard-swish fusion in evaluation; 4: the BatchNorm +
# hard-swish training kernel (accel/norm_kernel.py), which changes which training mode is fastest;
# 5: the squeeze-excitation + residual training kernel, channels-last only again; 6: that kernel removed
# (issue #30: ~3 % of a step on one thread, nothing on two)
CACHE_VERSION = 6
# One file per version: an older checkout run beside a newer one keeps its own choices instead of
# wiping the other's (each would otherwise re-calibrate after the other ran).
CACHE_FILE = f"execution-modes-v{CACHE_VERSION}.json"


@dataclass(frozen=True)
class ExecutionMode:
    """How a step runs: autocast precision, activation memory format, ``torch.compile`` or not."""

    precision: str = "fp32"
    memory_format: str = "contiguous"
    compile: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format={self.memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}")

    @property
    def name(self) -> str:
        parts = [self.precision] + (["channels_last"] if self.channels_last else []) + (["compile"] if self.compile else [])
        return "+".join(parts)

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExecutionMode":
        return cls(precision=data["precision"], memory_format=data["memory_format"], compile=bool(data.get("compile", False)))


def autocast(mode: ExecutionMode, device: torch.device):
    """The autocast context of ``mode`` (a no-op for fp32)."""
    if mode.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------- what the machine has
def bf16_native(device: torch.device) -> bool:
    """True where bf16 matmuls/convs run on native hardware: avx512_bf16 or AMX (CPU), bf16 support (GPU)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        flags = cpu_flags()["flags"]
        return bool(flags["avx512_bf16"] or flags["amx_bf16"])
    return False


def machine_key(device: torch.device) -> str:
    """What the cache is keyed by on this device: the CPU model and speed flags, or the GPU name."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    info = cpu_flags()
    present = ",".join(f for f, on in info["flags"].items() if on)
    return f"{device.type}:{info['model']}[{present}]x{torch.get_num_threads()}threads"


def candidates(device: torch.device, *, precision: str = "auto", memory_format: str = "auto",
               compile: bool | None = None) -> list[ExecutionMode]:
    """Modes the machine can run, restricted to the explicit choices (``"auto"`` leaves a field open).

    ``compile=None``: compiled variants on CUDA only; True/False fixes it.
    """
    precisions = ["fp32", "bf16"] if precision == "auto" else [precision]
    if "bf16" in precisions and not bf16_native(device):
        precisions.remove("bf16")
        if not precisions:
            raise ValueError(f"precision='bf16' has no native support on this {device.type} device; use 'fp32' or 'auto'")
    formats = list(MEMORY_FORMATS) if memory_format == "auto" else [memory_format]
    compiles = ([False, True] if device.type == "cuda" else [False]) if compile is None else [bool(compile)]
    return [ExecutionMode(p, f, c) for c in compiles for p in precisions for f in formats]


# ---------------------------------------------------------------------- calibration
def time_alternating(runners: dict[str, Callable[[], None]], *, steps: int = 3, warmup: int = 1, rounds: int = 2,
                     reduce: Callable[[list[float]], float] = statistics.median) -> dict[str, float]:
    """Seconds per call of each runner: ``warmup`` calls, then ``rounds`` alternating blocks of ``steps`` calls.

    Alternating blocks make background load on a shared machine hit every runner alike; the figure is
    ``reduce`` (default: the median) of the block times / steps.
    """
    for runner in runners.values():
        for _ in range(warmup):
            runner()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                runner()
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: reduce(ts) for name, ts in times.items()}


def calibrate(make_runner: Callable[[ExecutionMode], Callable[[], None]], modes: Iterable[ExecutionMode], *,
              steps: int = 1, warmup: int = 1, rounds: int = 3, failures: dict[str, str] | None = None) -> dict[str, float]:
    """Seconds per call of each mode's runner (:func:`time_alternating`), keyed by ``mode.name``.

    Four calls per mode (one warm-up, three timed in alternation): the calibration of a ver2 step at
    batch 128 costs about 16 steps once per machine; the choice is cached. The fastest block counts
    (``min``): load from other processes only ever slows a block down. (Two timed calls were too few at
    two threads, where the two bf16 modes are within 10-20 % and one step's time varies about as much.)

    ``failures``: a dict to collect ``{mode name: reason}`` of modes whose runner raised while being
    built or on its first call (``torch.compile`` without a working toolchain, say); those modes are
    left out instead of ending the run. Without it, the error propagates.
    """
    runners: dict[str, Callable[[], None]] = {}
    for mode in modes:
        try:
            runner = make_runner(mode)
            runner()  # the first warm-up call: a mode that cannot run here fails now, not in the run
        except Exception as exc:
            if failures is None:
                raise
            lines = str(exc).strip().splitlines()  # the first line names the error; tracebacks of compile errors follow
            failures[mode.name] = f"{type(exc).__name__}: {lines[0] if lines else ''}"
            log.warning("execution mode %s left out of the calibration: %s", mode.name, failures[mode.name])
            continue
        runners[mode.name] = runner
    if not runners:
        reasons = "; ".join(f"{name}: {why}" for name, why in (failures or {}).items())
        if failures and all("out of memory" in why.lower() or "DefaultCPUAllocator" in why for why in failures.values()):
            raise RuntimeError(f"out of memory in every execution mode ({reasons}); use a smaller batch size")
        raise RuntimeError(f"no execution mode ran on this machine: {reasons}")
    return time_alternating(runners, steps=steps, warmup=max(warmup - 1, 0), rounds=rounds, reduce=min)


def _calibrate_staged(make_runner: Callable[[ExecutionMode], Callable[[], None]],
                      options: list[ExecutionMode], failures: dict[str, str] | None = None) -> dict[str, float]:
    """:func:`calibrate` the eager candidates, then only the fastest one's compiled variant beside it.

    Compiling costs tens of seconds per mode even on a GPU; compiling every candidate would make the
    calibration cost minutes, while compile does not change which precision / memory format is fastest
    in eager mode often enough to pay for that. A compiled candidate whose eager twin is not among the
    options (``compile=True`` fixed) is timed as is.
    """
    eager = [m for m in options if not m.compile]
    compiled = [m for m in options if m.compile]
    if not eager or not compiled:
        return calibrate(make_runner, options, failures=failures)
    seconds = calibrate(make_runner, eager, failures=failures)
    fastest = next(m for m in eager if m.name == min(seconds, key=seconds.get))
    twin = next((m for m in compiled if (m.precision, m.memory_format) == (fastest.precision, fastest.memory_format)), None)
    if twin is not None:
        # timed again beside its compiled twin, in alternation: the pair is compared under the same load
        again = calibrate(make_runner, [fastest, twin], failures=failures)
        seconds[fastest.name] = min(seconds[fastest.name], again[fastest.name])
        if twin.name in again:
            seconds[twin.name] = again[twin.name]
    return seconds


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}


def _write_cache(key: str, entry: dict) -> None:
    data = _read_cache() or {"version": CACHE_VERSION}
    data.setdefault("entries", {})[key] = entry
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only cache costs a re-calibration next time, nothing else
        log.warning("could not write the execution-mode cache %s: %s", cache_path(), exc)


def model_key(model: torch.nn.Module, num_classes: int | None) -> str:
    """What identifies a model in the cache key: its class, parameter count and classes."""
    return f"{type(model).__name__}:{sum(p.numel() for p in model.parameters())}params:{num_classes}classes"


def resolve(kind: str, device: torch.device, make_runner: Callable[[ExecutionMode], Callable[[], None]], *,
            precision: str = "auto", memory_format: str = "auto", compile: bool | None = None, model_key: str,
            batch_size: int, use_cache: bool = True) -> dict:
    """The mode for ``kind`` ("train" | "eval"): explicit, cached, or calibrated now.

    Returns ``{"mode": {...}, "source": "config" | "cache" | "calibrated", "key": ..., "seconds": {...}}``;
    ``seconds`` holds the calibration timings (per call) when there was one.
    """
    if precision != "auto" and memory_format != "auto":
        mode = ExecutionMode(precision, memory_format, bool(compile))
        return {"mode": mode.to_dict(), "name": mode.name, "source": "config"}
    if not enabled():  # the accel layer off: the plain mode, no calibration, no cache
        mode = ExecutionMode("fp32" if precision == "auto" else precision,
                             "contiguous" if memory_format == "auto" else memory_format, bool(compile))
        return {"mode": mode.to_dict(), "name": mode.name, "source": OFF_NOTE}
    options = candidates(device, precision=precision, memory_format=memory_format, compile=compile)
    key = f"{kind}|{machine_key(device)}|torch {torch.__version__}|{model_key}|batch {batch_size}"
    if kind == "train" and device.type == "cpu" and any(m.channels_last for m in options):
        # channels-last training is another speed without the kernels (built here, on first use)

        key += f"|norm kernel {'fused' if norm_kernel.available() else 'aten'}"
    allowed = {m.name: m for m in options}
    if use_cache:
        entry = _read_cache().get("entries", {}).get(key)
        if entry and entry.get("name") in allowed:  # a mode the machine lacks is never taken from a cache
            return {"mode": allowed[entry["name"]].to_dict(), "name": entry["name"], "source": "cache", "key": key,
                    "seconds": entry.get("seconds", {}), **({"failed": entry["failed"]} if entry.get("failed") else {})}
    failures: dict[str, str] = {}
    if len(options) == 1:
        seconds: dict[str, float] = {}
        best = options[0].name
    else:
        t0 = time.perf_counter()
        # The timed steps draw dropout masks and ortho vectors: the caller's random streams stay untouched.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            seconds = _calibrate_staged(make_runner, options, failures)
        best = min(seconds, key=seconds.get)
        log.info("%s mode calibration (%.1f s): %s → %s", kind, time.perf_counter() - t0,
                 ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items()), best)
    entry = {"name": best, "mode": allowed[best].to_dict(), "seconds": {k: round(v, 6) for k, v in seconds.items()}}
    if failures:  # cached too: a mode that failed here is not compiled again by every run
        entry["failed"] = failures
    _write_cache(key, entry)
    return {"mode": entry["mode"], "name": best, "source": "calibrated", "key": key, "seconds": entry["seconds"],
            **({"failed": failures} if failures else {})}


# ---------------------------------------------------------------------- runners used by the calibration
def _prepared_copy(model: torch.nn.Module, mode: ExecutionMode, device: torch.device):
    work = copy.deepcopy(model).to(device)
    if mode.channels_last:
        work.to(memory_format=torch.channels_last)
    return work, (torch.compile(work) if mode.compile else work)


def _input(batch_size: int, mode: ExecutionMode, device: torch.device, size: int = 32) -> torch.Tensor:
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if mode.channels_last else x


def _synced(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def train_runner(model: torch.nn.Module, *, batch_size: int, num_classes: int, device: torch.device,
                 ortho: Callable[[torch.nn.Module], torch.Tensor] | None = None):
    """``make_runner`` for training: forward, cross-entropy (+ ortho), backward, SGD on a copy of ``model``.

    The copy keeps ``model``'s weights, statistics and the global RNG untouched.
    """

    def make(mode: ExecutionMode) -> Callable[[], None]:
        work, forward = _prepared_copy(model, mode, device)
        work.train()
        x = _input(batch_size, mode, device)
        y = torch.arange(batch_size, device=device) % num_classes
        # The recipe's optimizer (Nesterov, weight decay 1e-5), so a step does the authors' optimizer work.
        opt = torch.optim.SGD(work.parameters(), lr=1e-4, momentum=0.9, nesterov=True, weight_decay=1e-5)
        loss_sum = torch.zeros((), device=device)  # accumulated on the device, as fit does: no host read

        def step() -> None:
            with autocast(mode, device):
                logits = forward(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            if ortho is not None:
                loss = loss + ortho(work)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum.add_(loss.detach())

        return _synced(step, device)

    return make


def eval_runner(model: torch.nn.Module, *, batch_size: int, device: torch.device,
                prepare: Callable[[torch.nn.Module, ExecutionMode], torch.nn.Module] | None = None):
    """``make_runner`` for evaluation: one inference forward of the copy ``prepare(model, mode)`` returns
    (e.g. ``evaluate.inference_copy``: BN-folded, fused, on ``device`` in the mode's memory format);
    without ``prepare``, a plain copy of ``model``."""

    def make(mode: ExecutionMode) -> Callable[[], None]:
        if prepare is None:
            work, forward = _prepared_copy(model, mode, device)
        else:
            work = prepare(model, mode)
            forward = torch.compile(work) if mode.compile else work
        work.eval()
        x = _input(batch_size, mode, device)

        def step() -> None:
            with torch.inference_mode(), autocast(mode, device):
                forward(x)

        return _synced(step, device)

    return make
