"""Restormer (Zamir et al., CVPR 2022): the source paper's teacher, for users who have its weights.

Written from the paper; module names follow the official release so that its
`motion_deblurring.pth` (a dict with a ``params`` key) loads with ``strict=True``. Defaults are the
official constructor's (dim 48, blocks [4, 6, 6, 8], 4 refinement blocks, heads [1, 2, 4, 8],
FFN expansion 2.66, no conv bias, WithBias LayerNorm): 26.13 M parameters.

Reshapes use plain ``view``/``reshape`` (no einops) so the model exports and scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Restormer",
    "RestormerConfig",
    "load_checkpoint",
    "load_restormer",
    "load_state_dict_strict",
]


@dataclass
class RestormerConfig:
    """Official constructor arguments (names as in the release)."""

    inp_channels: int = 3
    out_channels: int = 3
    dim: int = 48  # channels at full resolution; doubles at each of the 3 downsamplings
    num_blocks: list[int] = field(default_factory=lambda: [4, 6, 6, 8])  # per level, 1 -> 4
    num_refinement_blocks: int = 4  # extra blocks at full resolution after the decoder
    heads: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # attention heads per level
    ffn_expansion_factor: float = 2.66  # gated-dconv FFN hidden width = int(dim * factor)
    bias: bool = False  # conv bias everywhere except LayerNorm
    LayerNorm_type: str = "WithBias"  # "WithBias" (deblurring weights) or "BiasFree" (denoising)
    dual_pixel_task: bool = False  # True only for dual-pixel defocus deblurring (6-ch input)


class _LayerNormCore(nn.Module):
    """LayerNorm over the last dim of (B, N, C); bias-free variant keeps the mean (as released)."""

    def __init__(self, dim: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.with_bias = with_bias
        if with_bias:
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(-1, keepdim=True, unbiased=False)
        if self.with_bias:
            mu = x.mean(-1, keepdim=True)
            return (x - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias
        return x / torch.sqrt(var + 1e-5) * self.weight


class LayerNorm(nn.Module):
    """Channel LayerNorm on (B, C, H, W): normalises each pixel's C values."""

    def __init__(self, dim: int, layer_norm_type: str) -> None:
        super().__init__()
        if layer_norm_type not in ("WithBias", "BiasFree"):
            raise ValueError(
                f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {layer_norm_type!r}"
            )
        self.body = _LayerNormCore(dim, with_bias=layer_norm_type == "WithBias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.body(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        return y.transpose(1, 2).reshape(b, c, h, w)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): GELU(branch 1) * branch 2."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, O(HW C^2)."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        # (B, heads, C/heads, HW)
        q = q.reshape(b, self.num_heads, -1, h * w)
        k = k.reshape(b, self.num_heads, -1, h * w)
        v = v.reshape(b, self.num_heads, -1, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        out = (attn @ v).reshape(b, c, h, w)
        return self.project_out(out)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        layer_norm_type: str,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, layer_norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 conv embedding (B, in_c, H, W) -> (B, embed_dim, H, W)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, 2C, H/2, W/2): conv to C/2 then pixel-unshuffle."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C/2, 2H, 2W): conv to 2C then pixel-shuffle."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Restormer(nn.Module):
    """Restormer: (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W), global residual.

    Any H, W: reflect-padded to a multiple of 8 inside ``forward`` and cropped back.
    ``forward(x, return_features=True)`` also returns ``[latent (B, 8*dim, H'/8, W'/8),
    decoder level 1 after refinement (B, 2*dim, H', W')]`` on the padded size.
    """

    multiple = 8  # three 2x downsamplings

    def __init__(self, config: RestormerConfig | None = None, **overrides: object) -> None:
        super().__init__()
        cfg = config or RestormerConfig()
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise TypeError(f"unknown Restormer option {key!r}")
            setattr(cfg, key, value)
        self.config = cfg
        dim, heads, nb = cfg.dim, cfg.heads, cfg.num_blocks

        def stage(width: int, n_heads: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                *[
                    TransformerBlock(
                        width, n_heads, cfg.ffn_expansion_factor, cfg.bias, cfg.LayerNorm_type
                    )
                    for _ in range(n)
                ]
            )

        self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, dim)
        self.encoder_level1 = stage(dim, heads[0], nb[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(dim * 2, heads[1], nb[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(dim * 4, heads[2], nb[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(dim * 8, heads[3], nb[3])

        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=cfg.bias)
        self.decoder_level3 = stage(dim * 4, heads[2], nb[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=cfg.bias)
        self.decoder_level2 = stage(dim * 2, heads[1], nb[1])
        self.up2_1 = Upsample(dim * 2)
        # Level 1 keeps 2*dim channels after the skip concat (no 1x1 reduction, as released).
        self.decoder_level1 = stage(dim * 2, heads[0], nb[0])
        self.refinement = stage(dim * 2, heads[0], cfg.num_refinement_blocks)

        self.dual_pixel_task = cfg.dual_pixel_task
        if cfg.dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=cfg.bias)
        self.output = nn.Conv2d(dim * 2, cfg.out_channels, 3, padding=1, bias=cfg.bias)

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each tensor in the ``return_features`` list."""
        return [self.config.dim * 8, self.config.dim * 2]

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != self.config.inp_channels:
            raise ValueError(
                f"expected (B, {self.config.inp_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)

        embedded = self.patch_embed(x)
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))

        dec3 = self.decoder_level3(
            self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1))
        )
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))

        if self.dual_pixel_task:
            # The release skips from the patch embedding, not from the first encoder stage:
            # its dual-pixel weights were trained that way.
            out = self.output(dec1 + self.skip_conv(embedded))
        else:
            out = self.output(dec1) + x
        out = out[..., :h, :w]
        if return_features:
            return out, [latent, dec1]
        return out


def load_state_dict_strict(
    model: nn.Module, checkpoint: object, source: str = "checkpoint"
) -> None:
    """Load ``checkpoint`` (``{"params": sd}``, ``{"state_dict": sd}`` or a raw state dict) strictly.

    Raises ``RuntimeError`` naming every missing and unexpected key, and shape mismatches.
    """
    sd = checkpoint
    for key in ("params", "params_ema", "state_dict"):
        if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
            sd = checkpoint[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        found = f"keys {sorted(map(str, sd))[:8]}" if isinstance(sd, dict) else type(sd).__name__
        raise RuntimeError(
            f"{source} holds no state dict (a dict of tensors, or one under 'params', "
            f"'params_ema' or 'state_dict'): found {found}"
        )
    # DataParallel checkpoints prefix every key with "module."
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        hint = ""
        if missing and all(
            k.endswith("norm1.body.bias") or k.endswith("norm2.body.bias") for k in missing
        ):
            # The denoising releases have the same layers without LayerNorm biases.
            hint = (
                " (a BiasFree LayerNorm checkpoint: Restormer's denoising weights, "
                "not motion_deblurring.pth?)"
            )
        raise RuntimeError(
            f"{source} does not match {type(model).__name__}{hint}: "
            f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {shapes}"
        )
    model.load_state_dict(sd, strict=True)


def load_checkpoint(path: str | Path) -> object:
    """``torch.load`` of a weights file (tensors only), with errors that name the file.

    torch's own message for a file that is not a checkpoint suggests ``weights_only=False``,
    which would run whatever code a downloaded file holds."""
    path = Path(path)
    if path.is_dir():
        raise RuntimeError(f"{path} is a folder: expected one weights file (.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
        raise RuntimeError(
            f"{path} is not a PyTorch checkpoint of tensors ({type(exc).__name__})"
        ) from exc


def load_restormer(weights: str | Path, device: str | torch.device = "cpu") -> Restormer:
    """Build Restormer with official defaults and load ``weights`` (e.g. `motion_deblurring.pth`)."""
    model = Restormer()
    load_state_dict_strict(model, load_checkpoint(weights), source=str(weights))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
