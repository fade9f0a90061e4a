"""Post-training quantisation of our models, fake-quantised in PyTorch, and how far it takes the score.

``quantize_model(model, weight_bits=4, act_bits=8, calibration=images)`` returns a copy in which

* every BatchNorm is folded into a per-channel scale layer :class:`ChannelScale` (y = x·a_c + b_c, its
  2·C values stored at 32 bits) -- the layout of the challenge's quantised entries; registered with the
  scorer through the public :func:`micronet_lib.scoring.register_module` (1 mult + 1 add per element);
* every conv/linear weight is fake-quantised per output channel, symmetric, to ``weight_bits``
  (torch.ao ``PerChannelMinMaxObserver`` + ``torch.fake_quantize_per_channel_affine``); zeros stay
  exactly zero, so pruning masks are kept and the sparsity is unchanged;
* every conv/linear input is fake-quantised per tensor to ``act_bits`` (affine, ``HistogramObserver`` on the
  calibration images, ``torch.fake_quantize_per_tensor_affine`` in a forward pre-hook);
* each conv/linear carries ``param_bits``, ``act_bits`` and ``bias_bits`` (32: own biases stay fp32)
  attributes, which ``count(..., param_bits="model", ...)`` reads (:func:`score_quantized`).

Ops outside the convs/linears (HSwish, sigmoid, pools, adds, the channel scales) run on 32-bit inputs
and are charged at 32 bits: quantising below 16 bits forfeits the 16-bit freebie (docs/scoring.md §2.2).

:func:`agreement` is the top-1 agreement of two models on the same images -- the fraction of images on
which the quantised model predicts the fp32 model's class. It is *not* accuracy: the only real CIFAR-100
pixels here are 20 test images, and CIFAR-10 test images are natural images of other classes.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
import torch.nn as nn
from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver

from micronet_lib.data import (  # read_images: public here since #14
    CIFAR100_MEAN,
    CIFAR100_STD,
    first_per_class,
    load_labelled_samples,
    normalize,
    read_images,
    resolve_image_folder,
)
from micronet_lib.scoring import count, register_module

__all__ = ["ChannelScale", "quantize_model", "score_quantized", "predictions", "agreement", "read_images", "quantization_table",
           "CIFAR100_MEAN", "CIFAR100_STD"]



class ChannelScale(nn.Module):
    """Per-channel affine y = x·weight[c] + bias[c]: an inference BatchNorm folded into one layer."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> "ChannelScale":
        scale = cls(bn.num_features)
        with torch.no_grad():
            a = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                a = a * bn.weight
            scale.weight.copy_(a)
            scale.bias.copy_((bn.bias if bn.bias is not None else 0) - bn.running_mean * a)
        return scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


register_module(ChannelScale, mults=1, adds=1, name="channel_scale")  # docs/scoring.md §4: unfused BN = 1 mult + 1 add


def _check_bits(bits: int, field: str, low: int = 2) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= 8:
        raise ValueError(f"{field}={bits!r} must be an integer in [{low}, 8] (torch's 8-bit observers hold the range)")
    return bits


def _fold_batchnorms(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, ChannelScale.from_batchnorm(child))


def _input_quantizer(scale: float, zero_point: int, qmax: int):
    def hook(module, args):
        return (torch.fake_quantize_per_tensor_affine(args[0], scale, zero_point, 0, qmax),) + tuple(args[1:])
    return hook


def quantize_model(model: nn.Module, *, weight_bits: int, act_bits: int = 8, calibration: torch.Tensor) -> nn.Module:
    """A fake-quantised copy of ``model`` (see the module docstring); ``calibration``: normalised float
    images ``[N, 3, H, W]`` that fix the activation ranges. The caller's model is unchanged."""
    _check_bits(weight_bits, "weight_bits")
    _check_bits(act_bits, "act_bits")
    if not isinstance(calibration, torch.Tensor) or calibration.dim() != 4 or not calibration.is_floating_point():
        raise ValueError("calibration must be normalised float images [N, 3, H, W]")
    q = copy.deepcopy(model).eval()
    _fold_batchnorms(q)
    layers = [m for m in q.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    qmax_w = 2 ** (weight_bits - 1) - 1
    with torch.no_grad():
        for m in layers:
            obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                           quant_min=-qmax_w, quant_max=qmax_w)
            obs(m.weight)
            scale, zero_point = obs.calculate_qparams()
            m.weight.copy_(torch.fake_quantize_per_channel_affine(m.weight, scale, zero_point.to(torch.int32), 0,
                                                                  -qmax_w, qmax_w))
            m.param_bits, m.act_bits, m.bias_bits = weight_bits, act_bits, 32
        # Activation ranges: observe each layer's input on the calibration images, then install the quantiser.
        # HistogramObserver (torch's default for x86 post-training quantisation) picks the range that minimises
        # the quantisation error; plain min-max flipped 4 % more CIFAR-10 predictions at 8 bits on v1_pr_60.
        observers = {m: HistogramObserver(dtype=torch.quint8, quant_min=0, quant_max=2 ** act_bits - 1) for m in layers}
        def observe(mod, args):
            observers[mod](args[0])

        handles = [m.register_forward_pre_hook(observe) for m in layers]
        try:
            q(calibration)
        finally:
            for h in handles:
                h.remove()
        for m in layers:
            scale, zero_point = observers[m].calculate_qparams()
            m.register_forward_pre_hook(_input_quantizer(float(scale), int(zero_point), 2 ** act_bits - 1))
    return q


def score_quantized(model: nn.Module, *, convention: str = "official", input_size=(1, 3, 32, 32)):
    """``count`` with the widths a :func:`quantize_model` copy declares; BN lives in the channel scales,
    so a conv is charged a bias only where it has its own (``bias="present"``)."""
    return count(model, input_size, convention=convention, param_bits="model", act_bits="model", bias_bits="model",
                 bias="present")


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Top-1 class of each image (eval-mode forward in batches)."""
    return torch.cat([model(chunk).argmax(1) for chunk in images.split(batch_size)])


def agreement(reference: nn.Module | torch.Tensor, candidate: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """(images where both models predict the same class, images): top-1 agreement, not accuracy.
    ``reference`` may be a model or its :func:`predictions` on ``images`` (computed once for many candidates)."""
    ref = reference if isinstance(reference, torch.Tensor) else predictions(reference, images)
    return int((ref == predictions(candidate, images)).sum()), int(images.shape[0])


def _normalized(images_uint8: torch.Tensor) -> torch.Tensor:
    return normalize(images_uint8, CIFAR100_MEAN, CIFAR100_STD)


def quantization_table(models: dict[str, nn.Module], *, weight_bits=(8, 6, 4), act_bits: int = 8,
                       natural_images: int = 300, calibration_images: int = 128,
                       cifar100_samples: str = "cifar100-samples", natural: str = "cifar10-jpeg") -> pd.DataFrame:
    """One row per (model, width): the rules' score of the quantised model (official convention) and its
    top-1 agreement with the fp32 model on the 20 real CIFAR-100 test images and on ``natural_images``
    CIFAR-10 test images (calibrated on ``calibration_images`` CIFAR-10 *train* images)."""
    from tqdm.auto import tqdm

    for bits in weight_bits:
        _check_bits(bits, "weight_bits")

    # A few hundred files are read directly: load_dataset("imagefolder:…") would decode (and cache) all 60,000.
    folder = resolve_image_folder(natural)
    c100 = _normalized(load_labelled_samples(cifar100_samples)[0].images)
    c10 = _normalized(read_images(first_per_class(folder / "test", natural_images)))
    calib = _normalized(read_images(first_per_class(folder / "train", calibration_images)))
    rows = []
    for name, model in tqdm(list(models.items()), desc="quantise", leave=False):
        model = model.eval()
        ref100, ref10 = predictions(model, c100), predictions(model, c10)
        fp32 = count(model, convention="official").summary
        rows.append(dict(checkpoint=name, weight_bits="fp32 (freebie)", act_bits="fp32", params_s=fp32["params_s"],
                         ops_s=fp32["ops_s"], score=fp32["score"], agree_c100=1.0, agree_natural=1.0))
        for bits in weight_bits:
            q = quantize_model(model, weight_bits=bits, act_bits=act_bits, calibration=calib)
            s = score_quantized(q).summary
            a100, n100 = agreement(ref100, q, c100)
            a10, n10 = agreement(ref10, q, c10)
            rows.append(dict(checkpoint=name, weight_bits=str(bits), act_bits=str(act_bits), params_s=s["params_s"],
                             ops_s=s["ops_s"], score=s["score"], agree_c100=a100 / n100, agree_natural=a10 / n10))
    table = pd.DataFrame(rows)
    table.attrs.update(images_c100=int(c100.shape[0]), images_natural=int(c10.shape[0]),
                       calibration_images=int(calib.shape[0]))
    return table
