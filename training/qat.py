"""Quantization-aware fine-tuning: train float weights through the rounding the int8 export does.

``python -m training.export --int8`` quantizes every convolution but the first and the last
(ONNX Runtime QDQ: weights int8 per output channel, symmetric; each such convolution's input and
output activations uint8 per tensor). Post-training quantization of weights that never saw that
rounding loses most on nearly sharp frames, where the correction the student adds is a few
grey levels. ``prepare_qat`` swaps those convolutions for :class:`FakeQuantConv2d`, which rounds
the same tensors the same way in training mode (straight-through gradients) and is a plain
convolution in eval mode. The parameter names do not change and the observers keep no state in
``state_dict``, so checkpoints stay ordinary float checkpoints: validation, EMA, export and the
engine see the float network, and the int8 export of such weights loses less.

Ranges are not exported: ONNX Runtime calibrates its own on the calibration clip. What the
training teaches is robustness to rounding at about that step size, not the exact scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FakeQuantConv2d",
    "RangeObserver",
    "conv_call_order",
    "fake_quant_activation",
    "fake_quant_weight",
    "prepare_qat",
]

WEIGHT_LEVELS = 127  # symmetric int8 weights: [-127, 127] * scale
ACTIVATION_LEVELS = 255  # uint8 activations: [0, 255], zero point anywhere in it


def fake_quant_weight(w: Tensor) -> Tensor:
    """Round ``w`` ``(C_out, C_in/groups, kH, kW)`` to symmetric int8, one scale per output
    channel (``max |w| / 127``), and back; gradients pass straight through."""
    amax = w.detach().abs().amax(dim=tuple(range(1, w.ndim))).clamp_min(1e-8)
    scale = (amax / WEIGHT_LEVELS).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -WEIGHT_LEVELS, WEIGHT_LEVELS)


def fake_quant_activation(x: Tensor, lo: float, hi: float) -> Tensor:
    """Round ``x`` (any shape) to uint8 over ``[lo, hi]`` (widened to hold 0, as a zero point
    must be an integer level) and back; gradients pass straight through inside the range."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / ACTIVATION_LEVELS, 1e-8)
    zero = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, ACTIVATION_LEVELS)


class RangeObserver(nn.Module):
    """Running ``[min, max]`` of what passes through (exponential average of each batch's, as
    QAT observers usually do), used to fake-quantize it in training mode.

    The range is a non-persistent buffer: it is not part of ``state_dict``, so a checkpoint of a
    prepared model loads into a plain one. After a resume it restarts from the first batch.
    """

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("range", torch.zeros(2), persistent=False)
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        with torch.no_grad():
            now = torch.stack([x.detach().min(), x.detach().max()]).float()
            if bool(self.seen):
                self.range.lerp_(now, self.momentum)
            else:
                self.range.copy_(now)
                self.seen.fill_(True)
        lo, hi = self.range.tolist()
        return fake_quant_activation(x, lo, hi)


class FakeQuantConv2d(nn.Conv2d):
    """A ``Conv2d`` whose input, weights and output are rounded as the int8 export rounds them,
    in training mode only; in eval mode it is exactly the float convolution.

    Shapes: as ``nn.Conv2d``, ``(B, C_in, H, W) -> (B, C_out, H', W')``.
    """

    def __init__(self, *args: object, momentum: float = 0.01, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.observe_in = RangeObserver(momentum)
        self.observe_out = RangeObserver(momentum)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, momentum: float = 0.01) -> FakeQuantConv2d:
        """The same convolution (its very parameters, not copies) with the rounding added."""
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"expected a plain nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode {conv.padding_mode!r} is not supported")
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            momentum=momentum,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        q.train(conv.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        y = F.conv2d(
            self.observe_in(x),
            fake_quant_weight(self.weight),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
        return self.observe_out(y)


def conv_call_order(model: nn.Module, size: int = 64) -> list[str]:
    """Names of ``model``'s ``nn.Conv2d`` modules in the order a forward pass calls them (the
    order of the exported graph, which is what "first" and "last" mean to the int8 export)."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    p = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.rand(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


def prepare_qat(model: nn.Module, momentum: float = 0.01) -> list[str]:
    """Swap, in place, every convolution of ``model`` the int8 export quantizes (all but the
    first and last called) for a :class:`FakeQuantConv2d` sharing its parameters.

    Returns the swapped modules' names. A model of two or fewer convolutions is swapped whole,
    as the export then quantizes it whole.
    """
    order = conv_call_order(model)
    targets = order[1:-1] if len(order) > 2 else order
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FakeQuantConv2d.from_float(getattr(parent, attr), momentum))
    return targets
