"""DMPHN 1-2-4: Deep Multi-Patch Hierarchical Network (Zhang et al., CVPR 2019).

The teacher available on this project's machines. Three levels share one encoder/decoder design:
level 3 sees the image as four quarters, level 2 as two horizontal halves, level 1 as a whole;
each finer level's decoder output is added to the next level's input, and its encoder features
are added to the next level's encoder features. State-dict keys (`layer1` ... `layer24`) follow
the authors' release so the six `*.pkl` files in `../shared/weights/teachers/dmphn_1_2_4` load
strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DMPHN", "DMPHNConfig", "DMPHNEncoder", "DMPHNDecoder", "load_dmphn"]

_PARTS = ("encoder_lv1", "encoder_lv2", "encoder_lv3", "decoder_lv1", "decoder_lv2", "decoder_lv3")


@dataclass
class DMPHNConfig:
    """DMPHN 1-2-4 configuration (the released network has no other knobs)."""

    channels: tuple[int, int, int] = (32, 64, 128)  # encoder widths at 1, 1/2 and 1/4 resolution
    multiple: int = 8  # H and W must divide by 8: two stride-2 convs on half-size quarters
    pad_mode: str = "reflect"  # reflect avoids a dark border the network would try to "deblur"


def _res_block(ch: int) -> nn.Sequential:
    # Index 1 is the ReLU, so the keys are `.0` and `.2` exactly as in the released files.
    return nn.Sequential(
        nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=False), nn.Conv2d(ch, ch, 3, padding=1)
    )


class DMPHNEncoder(nn.Module):
    """(B, 3, H, W) -> (B, 128, H/4, W/4); layers numbered as in the authors' `models.py`."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.layer1 = nn.Conv2d(3, c1, 3, padding=1)
        self.layer2 = _res_block(c1)
        self.layer3 = _res_block(c1)
        self.layer5 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.layer6 = _res_block(c2)
        self.layer7 = _res_block(c2)
        self.layer9 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.layer10 = _res_block(c3)
        self.layer11 = _res_block(c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        x = self.layer2(x) + x
        x = self.layer3(x) + x
        x = self.layer5(x)
        x = self.layer6(x) + x
        x = self.layer7(x) + x
        x = self.layer9(x)
        x = self.layer10(x) + x
        return self.layer11(x) + x


class DMPHNDecoder(nn.Module):
    """(B, 128, h, w) -> (B, 3, 4h, 4w) residual image (no activation on the output)."""

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.layer13 = _res_block(c3)
        self.layer14 = _res_block(c3)
        self.layer16 = nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1)
        self.layer17 = _res_block(c2)
        self.layer18 = _res_block(c2)
        self.layer20 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.layer21 = _res_block(c1)
        self.layer22 = _res_block(c1)
        self.layer24 = nn.Conv2d(c1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer13(x) + x
        x = self.layer14(x) + x
        x = self.layer16(x)
        x = self.layer17(x) + x
        x = self.layer18(x) + x
        x = self.layer20(x)
        x = self.layer21(x) + x
        x = self.layer22(x) + x
        return self.layer24(x)


class DMPHN(nn.Module):
    """DMPHN 1-2-4 teacher: (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) in about [0, 1].

    Any H, W: the input is reflect-padded to a multiple of 8 and the output cropped back.
    ``forward(x, return_features=True)`` also returns the level-1 encoder features (after the
    finer levels' features are added), ``[(B, 128, H'/4, W'/4)]`` on the padded size.
    """

    def __init__(self, config: DMPHNConfig | None = None) -> None:
        super().__init__()
        self.config = config or DMPHNConfig()
        ch = self.config.channels
        self.encoder_lv1 = DMPHNEncoder(ch)
        self.encoder_lv2 = DMPHNEncoder(ch)
        self.encoder_lv3 = DMPHNEncoder(ch)
        self.decoder_lv1 = DMPHNDecoder(ch)
        self.decoder_lv2 = DMPHNDecoder(ch)
        self.decoder_lv3 = DMPHNDecoder(ch)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    @property
    def feature_channels(self) -> list[int]:
        """Channels of each tensor in the ``return_features`` list."""
        return [self.config.channels[2]]

    def count_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.config.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect needs pad < size; replicate is the fallback for tiny inputs.
            mode = self.config.pad_mode if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        out, feat = self._levels(x - 0.5)
        out = out[..., :h, :w] + 0.5
        if return_features:
            return out, [feat]
        return out

    def _levels(self, lv1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hierarchy on the centred, padded input (B, 3, H, W); returns (image - 0.5, features)."""
        H, W = lv1.shape[-2:]
        h2, w2 = H // 2, W // 2
        lv2_top, lv2_bot = lv1[:, :, :h2], lv1[:, :, h2:]
        quarters = [lv2_top[..., :w2], lv2_top[..., w2:], lv2_bot[..., :w2], lv2_bot[..., w2:]]

        # Level 3: the four quarters go through the encoder as one batch (same weights, faster).
        b = lv1.shape[0]
        f3 = self.encoder_lv3(torch.cat(quarters, 0))
        f3_1, f3_2, f3_3, f3_4 = f3.split(b, 0)
        f3_top = torch.cat((f3_1, f3_2), 3)
        f3_bot = torch.cat((f3_3, f3_4), 3)
        feat_lv3 = torch.cat((f3_top, f3_bot), 2)
        r3_top, r3_bot = self.decoder_lv3(torch.cat((f3_top, f3_bot), 0)).split(b, 0)

        # Level 2: halves plus the level-3 residuals; features joined and level-3 features added.
        f2_top, f2_bot = self.encoder_lv2(torch.cat((lv2_top + r3_top, lv2_bot + r3_bot), 0)).split(
            b, 0
        )
        feat_lv2 = torch.cat((f2_top, f2_bot), 2) + feat_lv3
        r2 = self.decoder_lv2(feat_lv2)

        # Level 1: the whole image plus the level-2 residual.
        feat_lv1 = self.encoder_lv1(lv1 + r2) + feat_lv2
        return self.decoder_lv1(feat_lv1), feat_lv1

    def load_parts(self, weights_dir: str | Path, map_location: str | torch.device = "cpu") -> None:
        """Load the six released state dicts (`encoder_lv1.pkl` ...) from ``weights_dir``, strictly."""
        weights_dir = Path(weights_dir)
        if not weights_dir.is_dir():
            # A file here listed all six parts as missing "in" it; a missing folder did too.
            what = "is a file" if weights_dir.is_file() else "does not exist"
            raise FileNotFoundError(
                f"DMPHN weights: {weights_dir} {what}; expected a folder with "
                + ", ".join(f"{p}.pkl" for p in _PARTS)
            )
        missing = [p for p in _PARTS if not (weights_dir / f"{p}.pkl").is_file()]
        if missing:
            raise FileNotFoundError(
                f"DMPHN weights incomplete in {weights_dir}: missing "
                + ", ".join(f"{p}.pkl" for p in missing)
            )
        for part in _PARTS:
            path = weights_dir / f"{part}.pkl"
            try:
                sd = torch.load(path, map_location=map_location, weights_only=True)
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike
                # torch's own message suggests weights_only=False, which would run whatever
                # code the file holds.
                raise RuntimeError(
                    f"{path} is not a PyTorch state dict ({type(exc).__name__})"
                ) from exc
            if not isinstance(sd, dict):
                raise RuntimeError(f"{path} holds {type(sd).__name__}, not a state dict")
            own = getattr(self, part).state_dict()
            # load_state_dict raises on a wrong shape before saying which of the six files it
            # was reading (three decoders share key names).
            wrong = [
                f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
                for k, v in sd.items()
                if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
            ]
            if wrong:
                raise RuntimeError(
                    f"{path} does not match DMPHN {part}: wrong shapes: "
                    + ", ".join(wrong[:5])
                    + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
                )
            result = getattr(self, part).load_state_dict(sd, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise RuntimeError(
                    f"{weights_dir / (part + '.pkl')} does not match DMPHN {part}: "
                    f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}"
                )


def load_dmphn(weights_dir: str | Path, device: str | torch.device = "cpu") -> DMPHN:
    """Build DMPHN 1-2-4 and load the six state dicts from ``weights_dir`` (frozen, eval mode)."""
    model = DMPHN()
    model.load_parts(weights_dir)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
