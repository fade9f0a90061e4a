"""One training step as one function, run eagerly or captured once and replayed on CUDA (issue #33).

:class:`TrainStep` is the step ``fit`` runs for every batch (docs/method.md §5.5, §5.3, §6.1, §8.1):
forward (autocast per the execution mode), the label loss λ·ℓ(y_a) + (1 − λ)·ℓ(y_b) + coef·orthogonality,
backward, the optimiser step (Nesterov SGD with weight decay), the pruning masks re-applied.

:class:`StaticStep` (``TrainConfig.capture_step`` "graph" or "compile") runs the same function over static
buffers: the batch, both label vectors, λ and 1 − λ, and the learning rate as a device tensor that every
parameter group shares. Nothing in the step then reads a Python number that changes from batch to batch,
which is what a CUDA graph needs:

- ``"graph"``: :data:`WARMUP_STEPS` eager steps on a side stream (lazy initialisation, momentum buffers),
  then the whole step is recorded once as a ``torch.cuda.CUDAGraph`` and replayed for every later batch
  (dropout and the orthogonality start vectors come from the default CUDA generator, which graphs advance
  as eager calls would);
- ``"compile"``: the function under ``torch.compile(mode="reduce-overhead")`` (inductor's CUDA graphs).

On CUDA the optimiser switches to PyTorch's fused SGD, the implementation that reads a tensor learning
rate on the device (the foreach one reads it back to the host, which a capture forbids); it rounds within
float tolerance of the foreach update. On a CPU both kinds run the static function eagerly with the
optimiser unchanged, so the CPU tests compare it with :class:`TrainStep` bit for bit. A batch of another
size (an epoch's last) runs eagerly through the same function. fp16 (the grad scaler reads the host) is
refused by ``TrainConfig``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from micronet_lib.accel import execution
from micronet_lib import pruning, regularizers  # by module: a test may replace one of their functions

__all__ = ["CAPTURE_KINDS", "WARMUP_STEPS", "TrainStep", "StaticStep", "make_step"]

log = logging.getLogger(__name__)

CAPTURE_KINDS = ("off", "graph", "compile")
WARMUP_STEPS = 3  # eager steps before the capture, as PyTorch's whole-network capture recipe does


class TrainStep:
    """forward → loss + coef·ortho → backward → optimiser step → masks; returns (logits, loss_cls, ortho, loss).

    Called as ``step(x, y_a, y_b, lam)`` (``y_b=None``: no mixing). :meth:`run` takes λ and 1 − λ apart
    (Python floats or 0-d tensors); its arithmetic is ``LabelLoss.forward``'s, λ·ℓ(y_a) + (1 − λ)·ℓ(y_b).
    """

    def __init__(self, model: nn.Module, forward, loss_fn, optimizer: torch.optim.Optimizer, *, ortho_coef: float,
                 ortho_layers: str, mode: execution.ExecutionMode, device: torch.device, scaler=None) -> None:
        self.model, self.forward, self.loss_fn, self.optimizer = model, forward, loss_fn, optimizer
        self.ortho_coef, self.ortho_layers = float(ortho_coef), ortho_layers
        self.mode, self.device, self.scaler = mode, device, scaler

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, x, y_a, y_b, lam):
        lam = float(lam)
        return self.run(x, y_a, y_b, lam, 1.0 - lam)

    def run(self, x, y_a, y_b, lam_a, lam_b):
        with execution.autocast(self.mode, self.device):
            logits = self.forward(x)
        # fp32 loss under autocast; a float64 model (tests/test_fidelity.py) keeps float64
        z = logits if logits.dtype == torch.float64 else logits.float()
        loss_cls = self.loss_fn(z, y_a)
        if y_b is not None:
            loss_cls = lam_a * loss_cls + lam_b * self.loss_fn(z, y_b)
        ortho = (regularizers.orthogonality_penalty(self.model, layers=self.ortho_layers) if self.ortho_coef > 0
                 else torch.zeros((), device=self.device))
        loss = loss_cls + self.ortho_coef * ortho
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # fit's scaler, a pass-through unless fp16
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        pruning.apply_masks(self.model)
        return logits, loss_cls, ortho, loss


class StaticStep:
    """:class:`TrainStep` over static buffers, captured on CUDA (module docstring); same call signature as
    ``fit`` uses: ``step(x, y_a, y_b_or_None, lam)`` → (logits, loss_cls, ortho, loss).

    The returned tensors are the step's static outputs: read them before the next call.
    """

    def __init__(self, step: TrainStep, *, kind: str, batch_size: int) -> None:
        if kind not in CAPTURE_KINDS[1:]:
            raise ValueError(f"capture kind {kind!r}; allowed: {', '.join(map(repr, CAPTURE_KINDS[1:]))}")
        if step.scaler is not None and step.scaler.is_enabled():
            raise ValueError("a captured step cannot use the fp16 grad scaler (it reads the host); use fp32 or bf16")
        device = step.device
        self.kind, self.batch_size, self.device = kind, int(batch_size), device
        self.on_cuda = device.type == "cuda"
        if self.on_cuda and step.mode.compile:
            log.info("capture_step=%r records the eager forward; the execution mode's torch.compile is not used", kind)
        # the graph records the kernels of the plain forward; "compile" compiles the whole step itself
        self.step = TrainStep(step.model, step.model, step.loss_fn.to(device), step.optimizer, ortho_coef=step.ortho_coef,
                              ortho_layers=step.ortho_layers, mode=step.mode, device=device)
        # The learning rate as one device tensor shared by every group: float32 on CUDA, the dtype the fused
        # kernel reads (the eager update rounds it to float there too); float64 on a CPU, where the
        # optimiser reads it back as the exact Python float the eager step uses.
        self.lr = torch.zeros((), dtype=torch.float32 if self.on_cuda else torch.float64, device=device)
        for group in step.optimizer.param_groups:
            self.lr.fill_(float(group["lr"]))
            group["lr"] = self.lr
            # on CUDA the implementation that takes a device lr without a host read; on a CPU the default
            group["fused"], group["foreach"] = (True, False) if self.on_cuda else (None, None)
        dtype = next(step.model.parameters()).dtype
        loss_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.lam_a = torch.ones((), dtype=loss_dtype, device=device)
        self.lam_b = torch.zeros((), dtype=loss_dtype, device=device)
        self.x = self.y_a = self.y_b = None  # allocated at the first full batch (its shape and memory format)
        self.calls = 0
        self.graph = None
        self.outputs = None
        self.compiled = None

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    def _static_call(self):
        return self.step.run(self.x, self.y_a, self.y_b, self.lam_a, self.lam_b)

    def __call__(self, x: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor | None, lam: float):
        lam = float(lam)
        self.lam_a.fill_(lam)
        self.lam_b.fill_(1.0 - lam)  # formed in Python as LabelLoss.forward does, then rounded once
        if y_b is None:  # no mixing: λ = 1 gives 1·ℓ(y_a) + 0·ℓ(y_a), the same value and gradient
            y_b = y_a
        if x.shape[0] != self.batch_size:
            return self.step.run(x, y_a, y_b, self.lam_a, self.lam_b)
        if self.x is None:
            self.x, self.y_a, self.y_b = torch.empty_like(x), torch.empty_like(y_a), torch.empty_like(y_b)
        self.x.copy_(x)
        self.y_a.copy_(y_a)
        self.y_b.copy_(y_b)
        self.calls += 1
        if not self.on_cuda:
            return self._static_call()
        if self.kind == "compile":
            return self._compiled_call()
        return self._graph_call()

    def _compiled_call(self):
        if self.compiled is None:
            self.compiled = torch.compile(self._static_call, mode="reduce-overhead")
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled()

    def _graph_call(self):
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.calls <= WARMUP_STEPS:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._static_call()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        # recording does not run the kernels: capture, then replay for this batch
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._static_call()
        self.graph.replay()
        return self.outputs


def make_step(kind: str, model: nn.Module, forward, loss_fn, optimizer, *, config, mode, device, scaler):
    """The step ``fit`` runs for ``config.capture_step`` (``kind``): eager, or static and captured."""
    step = TrainStep(model, forward, loss_fn, optimizer, ortho_coef=config.ortho_coef, ortho_layers=config.ortho_layers,
                     mode=mode, device=device, scaler=scaler)
    return step if kind == "off" else StaticStep(step, kind=kind, batch_size=config.batch_size)
