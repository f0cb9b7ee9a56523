"""Student networks: small deblurring CNNs distilled from a large teacher.

Every variant takes and returns ``(B, 3, H, W)`` RGB in [0, 1] for any ``H, W >= 16``: it pads
to its multiple, runs the net, adds the input back (global residual) and crops, like NAFNet's
architecture files. Only export-friendly ops are used (conv, ReLU, add, mul, pixel shuffle,
replicate pad, slice), so ONNX Runtime and OpenVINO run the graph without custom kernels.

Variants live in one registry (``STUDENTS``), timm style::

    model = create_student("fast")
    model.count_params(), model.macs_per_pixel()

* ``unet`` — the source paper's student: a U-Net of depthwise separable convolutions with skip
  connections, fixed so the output has the input's size, plus a global residual.
* ``fast`` — CPU real time at 1280x720 (~2,460 multiply-adds per pixel): a 4x4 stride-4 stem
  (pixel-unshuffle and a 1x1 conv in one op) takes the image to 1/4 scale at once, blocks
  with 5x5 depthwise kernels work at 1/4 to 1/32 (motion blur spans tens of pixels, so the
  receptive field must too: it covers the whole frame), pixel-shuffle back out, residual.
  Chosen by timing candidates with OpenVINO at 720p (channels at the fine levels cost far
  more time per multiply-add than at the coarse ones) and then by held-out PSNR after equal
  GPU minutes.
* ``fast_s`` — the first, smaller CPU student (~920 multiply-adds per pixel); ``fast_s2`` — a
  candidate that lost to ``fast``; ``fast_plus`` — ``fast`` with more blocks, grown from its
  weights (``grow_from``).
* ``hq`` — the GPU student (1080p, < 5 MB): the same design from a 1/2-scale stem, wider.
* ``tiny`` — a few thousand parameters, for tests and the smoke configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "STUDENTS",
    "DSUNet",
    "DSUNetConfig",
    "ShuffleUNet",
    "ShuffleUNetConfig",
    "create_student",
    "grow_from",
    "list_students",
    "register_student",
]


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """Pad ``(B, C, H, W)`` on the bottom/right so H and W divide by ``multiple``.

    Returns the padded tensor and the original H, W (for the crop after the net).
    """
    h, w = x.shape[-2], x.shape[-1]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    # Edge replication, not zeros: a black border would look like a strong edge to the net and
    # it would "sharpen" it into the crop. Not reflection either: a 16 px frame needs 16 px of
    # padding for a multiple of 32, more than reflection can give.
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, h, w


class StudentBase(nn.Module):
    """What every student offers besides ``forward``: size and cost reporting."""

    multiple: int = 1

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def macs_per_pixel(self, size: tuple[int, int] = (256, 256)) -> float:
        """Multiply-adds per input pixel, counted over every conv at ``size`` (H, W)."""
        total = 0

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            nonlocal total
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                total += output.numel() * (module.in_channels // module.groups) * k
            elif isinstance(module, nn.ConvTranspose2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                total += inputs[0].numel() * (module.out_channels // module.groups) * k

        handles = [
            m.register_forward_hook(hook)
            for m in self.modules()
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
        ]
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            self(torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype))
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        return total / (size[0] * size[1])


# --------------------------------------------------------------------------------------------
# fast / hq / tiny: strided-stem U-Net with inverted-residual depthwise blocks
# --------------------------------------------------------------------------------------------


@dataclass
class ShuffleUNetConfig:
    stem_scale: int = 4  # stride (and kernel) of the stem conv: the net starts at 1/stem_scale
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per level; each level halves the scale
    enc_blocks: tuple[int, ...] = (0, 1, 1, 0)  # blocks per level on the way down (last = body)
    body_blocks: int = 4  # blocks at the coarsest level, where the receptive field is built
    dec_blocks: tuple[int, ...] = (0, 1, 1)  # blocks per level on the way up, finest level first
    expansion: float = 2.0  # inverted-residual expansion of each block
    kernel: int = 5  # depthwise kernel size of the blocks
    stem_kernel: int = 3  # depthwise kernel at the stem/head scale (local detail)


class InvertedResidual(nn.Module):
    """``x + pw(relu(dw(relu(pw(x)))))``: the cheapest block that still mixes space and channels.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, expansion: float, kernel: int) -> None:
        super().__init__()
        hidden = max(8, int(round(channels * expansion)))
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.project = nn.Conv2d(hidden, channels, 1)
        # Start every block close to identity so a deep stack trains from scratch at high lr.
        nn.init.normal_(self.project.weight, std=1e-3)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.expand(x))
        y = F.relu(self.dw(y))
        return x + self.project(y)


class ShuffleUNet(StudentBase):
    """Shuffle U-Net: stem at 1/s, encoder down to 1/(s*2^(L-1)), decoder back, shuffle out.

    Input/output ``(B, 3, H, W)`` in [0, 1]; output not clamped (the export clamps).
    """

    def __init__(self, cfg: ShuffleUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        s, widths = cfg.stem_scale, cfg.widths
        levels = len(widths)
        if len(cfg.enc_blocks) != levels or len(cfg.dec_blocks) != levels - 1:
            raise ValueError(
                f"expected {levels} enc_blocks and {levels - 1} dec_blocks for widths {widths}, "
                f"got {cfg.enc_blocks} and {cfg.dec_blocks}"
            )
        self.multiple = s * 2 ** (levels - 1)

        def blocks(c: int, n: int, k: int = cfg.kernel) -> nn.Sequential:
            return nn.Sequential(*[InvertedResidual(c, cfg.expansion, k) for _ in range(n)])

        # An s x s conv of stride s is pixel-unshuffle then a 1x1 conv, in one op: the same
        # function with the same weights (viewed), without the full-resolution transpose that
        # took 13 % of OpenVINO's 1280x720 bf16 time for `fast` (38.7 -> 33.7 ms, medians of 5).
        # Checkpoints from the unshuffle form load unchanged (`_stem_weights_as_conv`).
        self.stem = nn.Conv2d(3, widths[0], s, stride=s)
        self.register_load_state_dict_pre_hook(_stem_weights_as_conv)
        # A depthwise conv at the stem scale ties neighbouring s x s cells together: without it
        # the stem is a per-cell transform and leaves cell-boundary artefacts.
        self.stem_dw = nn.Conv2d(
            widths[0], widths[0], cfg.stem_kernel, padding=cfg.stem_kernel // 2, groups=widths[0]
        )
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, c in enumerate(widths):
            n = cfg.enc_blocks[i] + (cfg.body_blocks if i == levels - 1 else 0)
            self.encoders.append(blocks(c, n))
            if i < levels - 1:
                self.downs.append(nn.Conv2d(c, widths[i + 1], 2, stride=2))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(levels - 1)):
            # 1x1 conv + pixel shuffle upsamples without the checkerboard of transposed convs.
            self.ups.append(
                nn.Sequential(nn.Conv2d(widths[i + 1], widths[i] * 4, 1), nn.PixelShuffle(2))
            )
            self.decoders.append(blocks(widths[i], cfg.dec_blocks[i]))
        self.head_dw = nn.Conv2d(
            widths[0], widths[0], cfg.stem_kernel, padding=cfg.stem_kernel // 2, groups=widths[0]
        )
        self.head = nn.Conv2d(widths[0], 3 * s * s, 1)
        self.shuffle = nn.PixelShuffle(s)
        # The residual starts at zero: the untrained net is the identity, never worse than input.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list]:
        inp = x
        x, h, w = pad_to_multiple(x, self.multiple)
        y = F.relu(self.stem(x))
        y = y + self.stem_dw(y)
        skips = []
        for i, enc in enumerate(self.encoders):
            y = enc(y)
            if i < len(self.downs):
                skips.append(y)
                y = self.downs[i](y)
        features = [y]
        for up, dec in zip(self.ups, self.decoders, strict=True):
            y = up(y) + skips.pop()
            y = dec(y)
            features.append(y)
        y = y + self.head_dw(F.relu(y))
        out = self.shuffle(self.head(y))[..., :h, :w] + inp
        if return_features:
            return out, features
        return out


def _stem_weights_as_conv(module: nn.Module, state: dict, prefix: str, *_: object) -> None:
    """Load-time view of a pixel-unshuffle + 1x1 stem weight ``(C, 3*s*s, 1, 1)`` as the
    stride-s conv weight ``(C, 3, s, s)`` it equals (unshuffle puts offset ``(i, j)`` of colour
    ``c`` at channel ``c*s*s + i*s + j``), so checkpoints from before the change still load."""
    key = prefix + "stem.weight"
    w = state.get(key)
    stem = module.stem  # type: ignore[union-attr]
    if w is not None and w.ndim == 4 and w.shape[-2:] == (1, 1) and w.shape != stem.weight.shape:
        state[key] = w.reshape(w.shape[0], 3, *stem.kernel_size)


_BLOCK_KEY = re.compile(r"^(encoders|decoders)\.(\d+)\.(\d+)\.")


def grow_from(model: nn.Module, source: dict[str, Tensor]) -> list[str]:
    """Load a shallower ShuffleUNet's weights into ``model``, which adds blocks to its stages.

    ``source`` is the state dict of a net with the same stem, widths and kernels and at most as
    many blocks per stage (``fast`` into ``fast_plus``). Every source tensor is loaded; the added
    blocks, which follow the source's blocks in each stage, get a zero ``project`` conv, so the
    grown net computes exactly what the source did and training can only add to it (net2net).
    Returns the names of the added blocks; raises ``ValueError`` if ``model`` is not a growth of
    ``source`` (not a ShuffleUNet, or a missing, extra or reshaped tensor anywhere else).
    """
    if not isinstance(model, ShuffleUNet):
        raise ValueError(f"only ShuffleUNet students grow, not {type(model).__name__}")
    source = dict(source)
    _stem_weights_as_conv(model, source, "")
    target = model.state_dict()
    problems = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape) if k in target else 'absent'}"
        for k, v in source.items()
        if k not in target or target[k].shape != v.shape
    ]
    if problems:
        raise ValueError("not a growth of the source: " + "; ".join(problems[:5]))
    depth: dict[tuple[str, int], int] = {}
    for k in source:
        m = _BLOCK_KEY.match(k)
        if m:
            stage = (m[1], int(m[2]))
            depth[stage] = max(depth.get(stage, 0), int(m[3]) + 1)
    added: set[str] = set()
    for k in target.keys() - source.keys():
        m = _BLOCK_KEY.match(k)
        if m is None or int(m[3]) < depth.get((m[1], int(m[2])), 0):
            raise ValueError(f"not a growth of the source: {k} is missing from it")
        added.add(f"{m[1]}.{m[2]}.{m[3]}")
    model.load_state_dict(source, strict=False)
    with torch.no_grad():
        for name in added:
            project = model.get_submodule(name).project
            project.weight.zero_()
            project.bias.zero_()
    return sorted(added)


# --------------------------------------------------------------------------------------------
# unet: the source paper's depthwise-separable U-Net
# --------------------------------------------------------------------------------------------


@dataclass
class DSUNetConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per level (the paper's U-Net)
    convs_per_level: int = 2  # depthwise-separable convs per encoder/decoder level


class DSConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, ReLU: ``(B, Cin, H, W) -> (B, Cout, H, W)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.pw(self.dw(x)))


class DSUNet(StudentBase):
    """Encoder/decoder U-Net of depthwise separable convs with skip connections.

    The paper's version lost the input size on odd frames; this one pads to its multiple and
    crops back, and adds the input (global residual). ``(B, 3, H, W) -> (B, 3, H, W)``.
    """

    def __init__(self, cfg: DSUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.multiple = 2 ** (len(w) - 1)

        def level(cin: int, cout: int) -> nn.Sequential:
            convs = [DSConv(cin, cout)]
            convs += [DSConv(cout, cout) for _ in range(cfg.convs_per_level - 1)]
            return nn.Sequential(*convs)

        self.inc = nn.Conv2d(3, w[0], 3, padding=1)
        self.encoders = nn.ModuleList(
            [level(w[0], w[0])] + [level(w[i - 1], w[i]) for i in range(1, len(w))]
        )
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2) for i in range(len(w) - 1, 0, -1)]
        )
        self.decoders = nn.ModuleList(
            [level(2 * w[i - 1], w[i - 1]) for i in range(len(w) - 1, 0, -1)]
        )
        self.out = nn.Conv2d(w[0], 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list]:
        inp = x
        x, h, w = pad_to_multiple(x, self.multiple)
        y = F.relu(self.inc(x))
        skips = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                y = F.max_pool2d(y, 2)
            y = enc(y)
            skips.append(y)
        skips.pop()
        features = [y]
        for up, dec in zip(self.ups, self.decoders, strict=True):
            y = dec(torch.cat([up(y), skips.pop()], dim=1))
            features.append(y)
        out = self.out(y)[..., :h, :w] + inp
        if return_features:
            return out, features
        return out


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass
class StudentSpec:
    build: Callable[..., StudentBase]
    config: object
    description: str = ""
    defaults: dict = field(default_factory=dict)


STUDENTS: dict[str, StudentSpec] = {}


def register_student(
    name: str, build: Callable[..., StudentBase], config: object, description: str
) -> None:
    """Add a named variant; ``config`` is the dataclass instance holding its defaults."""
    STUDENTS[name] = StudentSpec(build=build, config=config, description=description)


def list_students() -> list[str]:
    return sorted(STUDENTS)


def create_student(name: str, **overrides: object) -> StudentBase:
    """Build variant ``name``; keyword overrides replace fields of its config dataclass."""
    if name not in STUDENTS:
        raise KeyError(f"unknown student {name!r}; known: {', '.join(list_students())}")
    spec = STUDENTS[name]
    fields = asdict(spec.config)
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"unknown config keys for student {name!r}: {sorted(unknown)}")
    for k, v in overrides.items():
        if isinstance(fields[k], tuple) and isinstance(v, list):
            v = tuple(v)
        fields[k] = v
    model = spec.build(type(spec.config)(**fields))
    model.variant = name
    return model


register_student(
    "unet",
    DSUNet,
    DSUNetConfig(),
    "the source paper's depthwise-separable U-Net (widths 32-256), global residual",
)
register_student(
    "fast",
    ShuffleUNet,
    ShuffleUNetConfig(
        widths=(24, 48, 96, 160), enc_blocks=(1, 1, 2, 0), body_blocks=4, dec_blocks=(1, 1, 2)
    ),
    "CPU real time at 720p: stride-4 stem, widths 24-160, 5x5 depthwise blocks at 1/4-1/32",
)
# The first CPU student (2.7x fewer multiply-adds than `fast`, 1.2-1.6x faster under OpenVINO at
# 720p; on held-out blur 0.45 / 0.19 dB worse than `fast` as the GPU left it, 0.77 / 1.03 dB
# worse than the shipped one): its stem squeezes each 4x4x3 cell into 16 channels, which caps
# the fine detail it can put back.
register_student(
    "fast_s",
    ShuffleUNet,
    ShuffleUNetConfig(),
    "smaller CPU student: stride-4 stem, widths 16-128, blocks at 1/8-1/32",
)
# Tried against `fast` at the same latency (trained side by side for the same GPU minutes): no
# stem bottleneck, but too few channels per level; 0.24 dB behind on validation. Kept so the run
# reproduces.
register_student(
    "fast_s2",
    ShuffleUNet,
    ShuffleUNetConfig(
        stem_scale=2,
        widths=(12, 24, 48, 96, 128),
        enc_blocks=(0, 0, 1, 1, 0),
        body_blocks=4,
        dec_blocks=(0, 0, 1, 1),
    ),
    "CPU candidate that lost to fast: stride-2 stem, five levels down to 1/32",
)
# `fast` with more blocks at every level (enc 2/2/3, body 6, dec 2/2/3): 1.3x its OpenVINO time
# at 720p. It grows from `fast`'s weights (grow_from, the trainer's --init_from), so a CPU
# fine-tune starts where `fast` is and tests whether `fast` is out of capacity.
register_student(
    "fast_plus",
    ShuffleUNet,
    ShuffleUNetConfig(
        widths=(24, 48, 96, 160), enc_blocks=(2, 2, 3, 0), body_blocks=6, dec_blocks=(2, 2, 3)
    ),
    "fast with more blocks per level (grows from fast's weights); 1.3x its time",
)
register_student(
    "hq",
    ShuffleUNet,
    ShuffleUNetConfig(
        stem_scale=2,
        widths=(32, 64, 128, 160),
        enc_blocks=(1, 1, 2, 0),
        body_blocks=4,
        dec_blocks=(1, 1, 2),
        expansion=2.0,
        kernel=5,
    ),
    "GPU student for 1080p (< 5 MB): stride-2 stem, four levels, 5x5 depthwise blocks",
)
register_student(
    "tiny",
    ShuffleUNet,
    ShuffleUNetConfig(widths=(8, 16), enc_blocks=(0, 1), body_blocks=0, dec_blocks=(1,)),
    "a few thousand parameters, for tests and the smoke configuration",
)
