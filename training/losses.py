"""Loss terms of the distillation, each a function plus a thin module (kornia style).

All images are ``(B, 3, H, W)`` RGB in [0, 1]. ``DistillLoss`` combines the terms with the weights
of ``training.config.LossConfig`` and returns a dict of named terms plus ``"total"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d
from pytorch_msssim.ssim import _ssim as _ssim_pc

# --------------------------------------------------------------------------------------------
# Pixel, structure, edge and colour terms
# --------------------------------------------------------------------------------------------


def l1_loss(pred: torch.Tensor, target: torch.Tensor, *, charbonnier: float = 0.0) -> torch.Tensor:
    """Mean absolute error; with ``charbonnier > 0`` the smooth ``sqrt(d^2 + eps^2) - eps``."""
    diff = pred - target
    if charbonnier > 0:
        return (torch.sqrt(diff * diff + charbonnier**2) - charbonnier).mean()
    return diff.abs().mean()


def ssim_value(pred: torch.Tensor, target: torch.Tensor, *, win_size: int = 11) -> torch.Tensor:
    """Mean SSIM (data range 1); the window shrinks to fit patches smaller than it."""
    win = min(win_size, _odd_at_most(min(pred.shape[-2:])))
    return _ssim(pred.float(), target.float(), data_range=1.0, size_average=True, win_size=win)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM``: 0 for identical images."""
    return 1.0 - ssim_value(pred, target)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_value(pred: torch.Tensor, target: torch.Tensor, *, win_size: int = 11) -> torch.Tensor:
    """MS-SSIM with as many of the 5 scales as the patch allows.

    ``pytorch_msssim.ms_ssim`` asserts a side > 160 px (5 scales, window 11). Smaller patches use
    fewer scales with the standard weights renormalised (pytorch-msssim's per-scale ``_ssim``);
    one scale is plain SSIM.
    """
    side = min(pred.shape[-2:])
    scales = 5
    while scales > 1 and side <= (win_size - 1) * 2 ** (scales - 1):
        scales -= 1
    if scales == 1:
        return ssim_value(pred, target, win_size=win_size)
    x, y = pred.float(), target.float()
    if scales == 5:
        return _ms_ssim(x, y, data_range=1.0, size_average=True, win_size=win_size)
    w = x.new_tensor(MS_SSIM_WEIGHTS[:scales])
    w = w / w.sum()
    win = _fspecial_gauss_1d(win_size, 1.5).repeat([x.shape[1], 1, 1, 1]).to(x)
    mcs = []
    for i in range(scales):
        ssim_pc, cs = _ssim_pc(x, y, win=win, data_range=1.0, size_average=False, K=(0.01, 0.03))
        if i < scales - 1:
            mcs.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    stack = torch.stack(mcs + [torch.relu(ssim_pc)], dim=0)  # (scale, B, C)
    return torch.prod(stack ** w.view(-1, 1, 1), dim=0).mean()


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - MS-SSIM``: 0 for identical images."""
    return 1.0 - ms_ssim_value(pred, target)


def edge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes (kornia): rewards restored edges."""
    return (kornia.filters.sobel(pred) - kornia.filters.sobel(target)).abs().mean()


def lab_loss(pred: torch.Tensor, target: torch.Tensor, *, sigma: float = 2.0) -> torch.Tensor:
    """Colour consistency: L1 in CIE LAB (scaled by 1/100) between Gaussian low-passed images,
    so it judges colour casts, not the detail the other terms handle."""
    k = 2 * int(math.ceil(2 * sigma)) + 1
    lp = kornia.filters.gaussian_blur2d
    a = kornia.color.rgb_to_lab(lp(pred.float().clamp(0, 1), (k, k), (sigma, sigma)))
    b = kornia.color.rgb_to_lab(lp(target.float().clamp(0, 1), (k, k), (sigma, sigma)))
    return (a - b).abs().mean() / 100.0


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the 2-D real FFTs (real and imaginary parts, orthonormal scaling).

    Pixel L1 barely charges for detail the net leaves out: a blurred edge is close in value to a
    sharp one. Each frequency weighs the same here, so missing fine detail costs as much as a
    wrong mean (the frequency term of MIMO-UNet, Cho et al. 2021). ``(B, C, H, W)`` -> scalar.
    """
    a = torch.view_as_real(torch.fft.rfft2(pred.float(), norm="ortho"))
    b = torch.view_as_real(torch.fft.rfft2(target.float(), norm="ortho"))
    return (a - b).abs().mean()


def distill_loss(
    pred: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 to the teacher's output over the samples ``mask`` ``(B,)`` marks (all if ``None``);
    0 when no sample has a teacher output."""
    if mask is None:
        return (pred - teacher).abs().mean()
    keep = mask.bool().view(-1, 1, 1, 1)
    n = keep.sum() * pred[0].numel()
    if n == 0:
        return pred.sum() * 0.0
    # Left-out samples are replaced, not multiplied by 0: a teacher output that overflowed under
    # fp16 autocast (inf/NaN; teacher_gain_mask leaves it out) made NaN * 0 = NaN, in the loss
    # and in every gradient, and one such patch ended a GPU run.
    teacher = torch.where(keep, teacher, pred.detach())
    return (pred - teacher).abs().sum() / n


def _odd_at_most(n: int) -> int:
    return n if n % 2 == 1 else n - 1


class L1Loss(nn.Module):
    def __init__(self, charbonnier: float = 0.0) -> None:
        super().__init__()
        self.charbonnier = charbonnier

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target, charbonnier=self.charbonnier)


class SSIMLoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim_loss(pred, target)


class MSSSIMLoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ms_ssim_loss(pred, target)


class EdgeLoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return edge_loss(pred, target)


class LabLoss(nn.Module):
    def __init__(self, sigma: float = 2.0) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lab_loss(pred, target, sigma=self.sigma)


# --------------------------------------------------------------------------------------------
# VGG perceptual loss
# --------------------------------------------------------------------------------------------

# Layer indices of torchvision's VGG16 ``features`` and the normalised VGG-19 (shared README).
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
_VGG16_NAMES = [
    "relu1_1",
    "relu1_2",
    "relu2_1",
    "relu2_2",
    "relu3_1",
    "relu3_2",
    "relu3_3",
    "relu4_1",
    "relu4_2",
    "relu4_3",
]
_VGG19N_NAMES = ["relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1"]


class VGGFeatures(nn.Module):
    """Frozen VGG features for the perceptual loss, from one of two state-dict files.

    * ``"vgg19_normalised"`` (keys ``0.weight``, ``2.weight``, ...): layer 0 is a 1x1 conv that
      maps RGB [0, 1] to mean-subtracted BGR [0, 255]; each 3x3 conv has reflection padding 1
      before it and a ReLU after; max-pools after relu1_2 and relu2_2. Up to relu3_1.
    * ``"vgg16"``: torchvision's ``features.N.weight`` keys; input normalised with ImageNet
      mean/std; zero padding, as torchvision builds it.

    ``forward(x)`` with ``x`` ``(B, 3, H, W)`` in [0, 1] returns the requested layers' activations.
    """

    def __init__(
        self, path: str | Path, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_1")
    ) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG perceptual loss is enabled (loss.vgg > 0) but its weights file {path} does not "
                "exist; set loss.vgg_weights to the normalised VGG-19 file "
                "(../shared/weights/vgg19_normalised/vgg_normalised_conv3_1.pth) or torchvision's "
                "vgg16-*.pth, or set loss.vgg=0"
            )
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        if any(k.startswith("features.") for k in sd):
            self.kind = "vgg16"
            self.body, names = _build_vgg16(sd)
        elif "0.weight" in sd and sd["0.weight"].shape[-1] == 1:
            self.kind = "vgg19_normalised"
            self.body, names = _build_vgg19n(sd)
        else:
            raise ValueError(
                f"{path}: not a VGG state dict this project knows (expected torchvision's "
                "'features.N.weight' keys or the normalised VGG-19 '0.weight' 1x1 conv)"
            )
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise ValueError(
                f"VGG layers {unknown} not available in {self.kind}; have {sorted(names)}"
            )
        self.taps = {names[layer]: layer for layer in layers}
        self.last = max(self.taps)
        self.layers = list(layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:  # always frozen, always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "vgg16":
            x = (x - self.mean) / self.std
        feats: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                feats[self.taps[i]] = x
            if i >= self.last:
                break
        return [feats[name] for name in self.layers]


def _build_vgg16(sd: dict[str, torch.Tensor]) -> tuple[nn.Sequential, dict[str, int]]:
    mods: list[nn.Module] = []
    names: dict[str, int] = {}
    cin, block, idx = 3, 1, 1
    for v in _VGG16_CFG:
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2))
            block, idx = block + 1, 1
            continue
        conv = nn.Conv2d(cin, int(v), 3, padding=1)
        mods.append(conv)
        mods.append(nn.ReLU(inplace=False))
        names[f"relu{block}_{idx}"] = len(mods) - 1
        idx += 1
        cin = int(v)
    seq = nn.Sequential(*mods)
    own = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    needed = {k for k in seq.state_dict()}
    missing = needed - set(own)
    if missing:
        raise ValueError(f"VGG16 state dict lacks {sorted(missing)[:4]}")
    seq.load_state_dict({k: own[k] for k in needed})
    return seq, names


def _build_vgg19n(sd: dict[str, torch.Tensor]) -> tuple[nn.Sequential, dict[str, int]]:
    layout: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    names: dict[str, int] = {}
    plan = [
        ("relu1_1", 64),
        ("relu1_2", 64),
        "M",
        ("relu2_1", 128),
        ("relu2_2", 128),
        "M",
        ("relu3_1", 256),
    ]
    cin = 3
    for item in plan:
        if item == "M":
            layout.append(nn.MaxPool2d(2, 2))
            continue
        name, cout = item
        key = f"{len(layout) + 1}.weight"
        if key not in sd:
            break  # shorter files (conv1_1, conv2_1) stop early
        layout += [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=False)]
        names[name] = len(layout) - 1
        cin = cout
    seq = nn.Sequential(*layout)
    seq.load_state_dict({k: v for k, v in sd.items() if k in seq.state_dict()})
    return seq, names


def vgg_loss(pred: torch.Tensor, target: torch.Tensor, vgg: VGGFeatures) -> torch.Tensor:
    """Mean over layers of the L1 distance between VGG activations (target side without grad)."""
    fp = vgg(pred.float())
    with torch.no_grad():
        ft = vgg(target.float())
    return sum((a - b).abs().mean() for a, b in zip(fp, ft, strict=True)) / len(fp)


class VGGLoss(nn.Module):
    def __init__(
        self, path: str | Path, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_1")
    ) -> None:
        super().__init__()
        self.vgg = VGGFeatures(path, layers)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return vgg_loss(pred, target, self.vgg)


# --------------------------------------------------------------------------------------------
# Feature matching through 1x1 adapters
# --------------------------------------------------------------------------------------------


def pair_features(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]
) -> list[tuple[int, int]]:
    """Pair each student feature with the teacher feature of the nearest spatial size (log scale)."""
    pairs = []
    for i, s in enumerate(student):
        best = min(
            range(len(teacher)),
            key=lambda j: abs(math.log(s.shape[-1] / teacher[j].shape[-1])),
        )
        pairs.append((i, best))
    return pairs


def feature_loss(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    adapters: nn.ModuleList,
    pairs: Sequence[tuple[int, int]],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean L1 between ``adapter_k(student[i])``, resized to the teacher's size, and ``teacher[j]``,
    over the samples ``mask`` ``(B,)`` marks (all if ``None``) whose paired teacher features are
    all finite; 0 when none is left."""
    keep = torch.ones(student[0].shape[0], dtype=torch.bool, device=student[0].device)
    if mask is not None:
        keep = keep & mask.bool().to(keep.device)
    for _, j in pairs:
        keep = keep & torch.isfinite(teacher[j]).flatten(1).all(1)
    keep4 = keep.view(-1, 1, 1, 1)
    n_keep = keep.sum().clamp(min=1)  # a tensor: no device sync per step
    total = student[0].new_zeros(())
    for adapter, (i, j) in zip(adapters, pairs, strict=True):
        s = adapter(student[i].float())
        t = teacher[j].detach().float()
        if s.shape[-2:] != t.shape[-2:]:
            s = F.interpolate(s, size=t.shape[-2:], mode="bilinear", align_corners=False)
        # An fp16 teacher that overflowed (inf/NaN) on one sample made the whole term, and every
        # gradient through it, NaN. Its features are replaced, not multiplied by 0 (NaN * 0 is
        # NaN): |s - s| is 0 with a zero gradient.
        t = torch.where(keep4, t, s.detach())
        total = total + (s - t).abs().sum() / (n_keep * s[0].numel())
    return total / max(1, len(pairs))


class FeatureAdapters(nn.Module):
    """1x1 convs mapping student feature channels to the paired teacher feature channels."""

    def __init__(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.pairs = pair_features(student, teacher)
        self.adapters = nn.ModuleList(
            nn.Conv2d(student[i].shape[1], teacher[j].shape[1], 1) for i, j in self.pairs
        )

    def forward(
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return feature_loss(student, teacher, self.adapters, self.pairs, mask)


# --------------------------------------------------------------------------------------------
# The combination
# --------------------------------------------------------------------------------------------


class FFTLoss(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fft_loss(pred, target)


class DistillLoss(nn.Module):
    """Weighted sum of every enabled term (weights from ``LossConfig``).

    ``forward(pred, target, teacher=None, teacher_mask=None, student_feats=None,
    teacher_feats=None)`` returns ``{"total": ..., "l1": ..., ...}`` with the *unweighted* value
    of each enabled term (0-dim tensors); ``total`` is weighted. Distillation terms are skipped
    when no teacher output is given. Feature adapters are created by ``init_adapters`` before
    the optimiser so they are trained with the student.
    """

    def __init__(self, cfg) -> None:  # cfg: training.config.LossConfig
        super().__init__()
        self.cfg = cfg
        self.vgg = VGGFeatures(cfg.vgg_weights, cfg.vgg_layers) if cfg.vgg > 0 else None
        self.adapters: FeatureAdapters | None = None

    def init_adapters(
        self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]
    ) -> None:
        self.adapters = FeatureAdapters(student_feats, teacher_feats).to(student_feats[0].device)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
        student_feats: Sequence[torch.Tensor] | None = None,
        teacher_feats: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        c = self.cfg
        pred = pred.float()
        target = target.float()
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if c.l1 > 0:
            terms["l1"], weights["l1"] = l1_loss(pred, target, charbonnier=c.charbonnier), c.l1
        if c.ssim > 0:
            terms["ssim"], weights["ssim"] = ssim_loss(pred, target), c.ssim
        if c.ms_ssim > 0:
            terms["ms_ssim"], weights["ms_ssim"] = ms_ssim_loss(pred, target), c.ms_ssim
        if c.edge > 0:
            terms["edge"], weights["edge"] = edge_loss(pred, target), c.edge
        if c.lab > 0:
            terms["lab"], weights["lab"] = lab_loss(pred, target), c.lab
        if c.fft > 0:
            terms["fft"], weights["fft"] = fft_loss(pred, target), c.fft
        if c.vgg > 0 and self.vgg is not None:
            terms["vgg"], weights["vgg"] = vgg_loss(pred, target, self.vgg), c.vgg
        has_teacher = teacher is not None and (teacher_mask is None or bool(teacher_mask.any()))
        if c.distill > 0 and has_teacher:
            terms["distill"] = distill_loss(pred, teacher.float(), teacher_mask)
            weights["distill"] = c.distill
        if c.feature > 0 and self.adapters is not None and student_feats and teacher_feats:
            # The samples the output term follows, no others: the features followed every one,
            # those where the teacher made the input worse (noise, JPEG) or, bounded, was
            # beaten by the student, too. A sample whose teacher output overflowed has suspect
            # features even where they stayed finite (teacher_gain_mask leaves it out too).
            keep = None if teacher is None else torch.isfinite(teacher).flatten(1).all(1)
            if teacher_mask is not None:
                follow = teacher_mask.bool().to(student_feats[0].device)
                keep = follow if keep is None else keep & follow
            terms["feature"], weights["feature"] = (
                self.adapters(student_feats, teacher_feats, keep),
                c.feature,
            )
        total = sum(weights[k] * v for k, v in terms.items())
        if not terms:
            raise ValueError("every loss weight is 0: nothing to train")
        return {"total": total, **terms}
