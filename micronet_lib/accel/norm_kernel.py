"""BatchNorm2d (+ hard-swish) in training as one C++ kernel on CPU channels-last tensors; the build,
load and check of ``csrc/train_kernels.cpp``.

``applies(bn, x, act)`` says whether the kernel can stand in for ``bn(x)``: ``x`` a 4-D
channels-last float32/bfloat16 CPU tensor, ``bn`` a training-mode affine ``BatchNorm2d`` tracking
running statistics, no hooks on it or on the activation ``act`` after it, not inside fx
tracing or ``torch.compile``, and the kernel built and checked. ``batch_norm_train(bn, x,
hardswish=...)`` then runs the kernel instead of ATen's op(s). A model built for training runs it through
``kernel_blocks.norm_act`` (``kernel_blocks.accelerate``); evaluation, NCHW, CUDA, float64, the scorer's and BN folding's fx traces take the
modules' own forward, unchanged.

Why (issue #13, docs/performance.md): ATen's channels-last BatchNorm sums per thread in adjacent rows of
one buffer, so for the channel counts of MicroNet whose rows are not whole 64-byte lines (20, 50, 90,
140, 200 ... channels) the two threads of a 2-core machine write the same cache line on every row, and
the op runs slower on two threads than on one; hard-swish is one more pass over memory each way. The
kernel gives each thread its own padded row, applies the activation in the normalising pass and
recomputes its input in the backward. Same arithmetic up to rounding: float32 inside, sums in double
per block; in bf16 it rounds once where ATen rounds twice (BN output, then hard-swish). Running
statistics are updated as ``nn.BatchNorm2d`` does (momentum or cumulative average, unbiased variance).

The kernel is compiled on first use with torch's JIT extension builder (a C++ compiler and ninja;
``-O3 -march=native``), about 25 s once per machine, into torch's extension folder
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) under a name that hashes the source,
torch's version and the CPU's model and flags (a binary built for one CPU is never loaded on another).
It is then checked once per process against float64 ATen on small inputs. Where it cannot be built or
disagrees, :func:`status` says why and the blocks run ATen's modules. ``MICRONET_NORM_KERNEL=off`` (or
the whole accel layer off, ``MICRONET_ACCEL=0``) turns it off; inside ``with aten_only():`` it steps
aside (benchmarks).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.accel import OFF_NOTE, enabled
from micronet_lib.accel.cpuinfo import cpu_flags
from micronet_lib.environ import environment

__all__ = ["applies", "batch_norm_train", "aten_only", "stepped_aside", "available", "status", "extension",
           "has_forward_hooks", "ENV_SWITCH", "SOURCE", "FUSED"]

log = logging.getLogger(__name__)

ENV_SWITCH = "MICRONET_NORM_KERNEL"  # "off" / "0" / "false": never build or use the kernel
SOURCE = Path(__file__).with_name("csrc") / "train_kernels.cpp"
_CFLAGS = ["-O3", "-march=native", "-fopenmp"]
_DTYPES = (torch.float32, torch.bfloat16)
# What a record says when the kernel ran; it names the kernels, so a run recorded with another set
# ("fused", or "fused (BatchNorm + hard-swish, squeeze-excitation + residual)" before issue #30) and
# resumed now is told that its epochs round differently (train/records.py).
FUSED = "fused (BatchNorm + hard-swish)"
_ATEN_ONLY = contextvars.ContextVar("micronet_norm_kernel_aten_only", default=False)


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("off", "0", "false", "no")


def _build_name() -> str:
    cpu = cpu_flags()
    ident = "|".join([SOURCE.read_text(), torch.__version__, cpu["model"], repr(sorted(cpu["flags"].items())), " ".join(_CFLAGS)])
    return "micronet_train_kernels_" + hashlib.sha256(ident.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def _load():
    """(module, None) or (None, why not); built at most once per process, cached on disk per machine."""
    if not enabled():
        return None, OFF_NOTE
    if _switched_off():
        return None, f"switched off by {ENV_SWITCH}"
    compiler = os.environ.get("CXX", "c++")  # what torch's builder calls
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler ({compiler}) on PATH"
    quiet = logging.getLogger("torch.utils.cpp_extension")  # its import warns that CUDA is absent: irrelevant here
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)

    name = _build_name()
    path = {}
    if shutil.which("ninja") is None:  # the pip package's binary, when the venv's bin/ is not on PATH
        try:
            import ninja

            path = {"PATH": ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")}
        except ImportError:
            return None, "ninja not found (pip install ninja)"
    try:
        with environment(path):
            # torch's own extension folder (TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions), not
            # MICRONET_CACHE: a run pointed at a fresh cache does not compile again; the name keeps builds
            # for different CPUs apart.
            build_dir = Path(cpp_extension._get_build_directory(name, False))
            if hasattr(cpp_extension, "FileBaton"):  # torch < 2.14: a lock whose mere existence blocks
                _clear_stale_lock(build_dir)
            if not any(build_dir.glob(f"{name}*.so")):
                log.info("building the BatchNorm + hard-swish kernel in %s (once per machine, ~25 s)", build_dir)
            module = cpp_extension.load(name, [str(SOURCE)], extra_cflags=_CFLAGS, extra_ldflags=["-fopenmp"],
                                        build_directory=str(build_dir), verbose=False)
    except Exception as exc:  # a missing toolchain or a compile error: fall back to ATen, say why
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
        log.warning("BatchNorm + hard-swish kernel unavailable, using ATen (%s)", reason)
        return None, reason
    return module, None


STALE_LOCK_SECONDS = 600  # a build takes ~25 s; a lock this old was left by a killed build


def _clear_stale_lock(build_dir: Path) -> None:
    """Remove the build lock a killed build left behind, for torch < 2.14 only.

    There torch's builder waits, for ever, while its lock file exists (``FileBaton``), and a process
    killed while building or loading leaves the file (seen under torch 2.11). From 2.14 the lock is an
    OS lock released with its holder; its file stays and may be held right now, so it is left alone.
    """
    lock = build_dir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_SECONDS:
        log.warning("removing %s, left %.0f s ago by a build that did not finish", lock, age)
        lock.unlink(missing_ok=True)


class _NormActFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, act: bool):
        module, _ = _load()
        y, mean, invstd, var = module.forward(x, weight, bias, eps, act)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.act = act
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        module, _ = _load()
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_w, grad_b = module.backward(grad_y, x, weight, bias, mean, invstd, ctx.act)
        return grad_x, grad_w, grad_b, None, None


def batch_norm_train(bn: nn.BatchNorm2d, x: torch.Tensor, *, hardswish: bool = False) -> torch.Tensor:
    """``bn(x)`` (then hard-swish) in training mode through the kernel; call only where :func:`applies`."""
    y, mean, var = _NormActFunction.apply(x, bn.weight, bn.bias, bn.eps, bool(hardswish))
    with torch.no_grad():  # what nn.BatchNorm2d does to its buffers in training
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        n = x.numel() // x.shape[1]
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(var * (n / max(n - 1, 1)), alpha=factor)
    return y


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook, its own or a global one, would see ``module`` called."""
    return bool(module._forward_hooks or module._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


@contextlib.contextmanager
def aten_only():
    """Forwards inside this block run ATen's BatchNorm (``micronet bench train --aten-bn`` times it)."""
    token = _ATEN_ONLY.set(True)
    try:
        yield
    finally:
        _ATEN_ONLY.reset(token)


def stepped_aside(x) -> bool:
    """Whether no kernel may run on ``x`` here: compiling, fx tracing, inside :func:`aten_only`, not a CPU tensor."""
    # Compiling first: dynamo cannot trace the ContextVar read below, and a graph break in every block
    # made torch.compile recompile per block shape until its limit, then run eager (seen on CUDA).
    # Then x: under fx tracing x is a Proxy (comparing its dtype would be traced).
    return (torch.compiler.is_compiling() or not isinstance(x, torch.Tensor) or isinstance(x, torch.fx.Proxy)
            or x.device.type != "cpu" or _ATEN_ONLY.get())


def applies(bn: nn.Module, x, act: nn.Module | None = None) -> bool:
    """Whether :func:`batch_norm_train` may stand in for ``bn(x)`` (and the activation ``act`` after it)."""
    return (not stepped_aside(x)
            and type(bn) is nn.BatchNorm2d and bn.training and bn.affine and bn.track_running_stats
            and bn.weight.dtype == torch.float32 and bn.bias.dtype == torch.float32
            and x.dim() == 4 and x.dtype in _DTYPES
            and x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and not has_forward_hooks(bn) and not (act is not None and has_forward_hooks(act)) and available())


@functools.lru_cache(maxsize=1)
def _checked() -> str | None:
    """None when the built kernel matches float64 ATen on small inputs (outputs and input gradients, with
    and without hard-swish; and it runs on bf16), else why not."""
    module, reason = _load()
    if module is None:
        return reason
    # The first use may come under no_grad or inference_mode (e.g. BatchNorm re-estimation on a
    # channels-last model in a fresh process); the float64 reference needs autograd either way.
    with torch.inference_mode(False), torch.enable_grad():
        return _disagreement(module)


def _disagreement(module) -> str | None:
    """Why the built kernels cannot be trusted on small probe inputs, or None (see :func:`_checked`)."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 20, 5, 5, generator=gen) * 2 + 0.5).contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(20, generator=gen) + 0.5, torch.randn(20, generator=gen)
    dy = torch.randn(x.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    for act in (False, True):
        x64 = x.double().requires_grad_(True)
        z = F.batch_norm(x64, None, None, w.double(), b.double(), training=True, eps=1e-5)
        ref = F.hardswish(z) if act else z
        (ref_dx,) = torch.autograd.grad(ref, x64, dy.double())
        try:
            y, mean, invstd, _ = module.forward(x, w, b, 1e-5, act)
            dx = module.backward(dy, x, w, b, mean, invstd, act)[0]
            module.forward(x.bfloat16(), w, b, 1e-5, act)
        except RuntimeError as exc:
            return f"failed on a probe input ({exc})"
        far = ((z.detach().abs() - 3).abs() > 1e-3) if act else torch.ones_like(z, dtype=torch.bool)  # slope jumps at ±3
        for name, got, want in (("output", y, ref.detach()), ("gradient", dx, ref_dx)):
            if not torch.allclose(got.double()[far], want[far], rtol=1e-4, atol=1e-4):
                return f"disagrees with ATen ({name}, hardswish={act}, max |Δ| {(got.double() - want).abs().max():.2e})"
    return None


def available() -> bool:
    """Whether the kernel can be used in this process (built or loaded, and checked)."""
    return _checked() is None


def extension():
    """The built and checked extension module (call only where :func:`available`)."""
    return _load()[0]


def status() -> str:
    """For run records and benchmarks: :data:`FUSED` or ``"aten (<why>)"``."""
    reason = _checked()
    return FUSED if reason is None else f"aten ({reason})"
