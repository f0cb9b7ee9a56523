"""Raw-frame blur synthesised on the training device instead of in DataLoader workers.

On the lent H200 the students were data-bound: each CPU worker averaged 17-23 raw-frame windows
per second while the GPU idled. The raw frames of a clip fit in device memory as uint8 (299
frames of 1280x720 are 0.8 GB), and a temporal average is a sum of crops, so the whole raw source
(crop, plain or linear-light average, the flat / barely-blurred patch filter, sensor noise,
flips and rotations) runs here as batched tensor ops. Photos, GoPro pairs and the teacher cache
stay in the workers (``training.data.DeblurDataset``); ``training.train`` concatenates the two
parts of each batch when ``data.raw_on_device`` is set.

Noise, filters and augmentation follow the worker path's definitions. JPEG (an entropy coder,
no tensor op) round-trips through OpenCV on the host for the few samples that draw it (p
``jpeg_prob``), so the input distribution stays the workers'.

A batch is a pure function of ``(seed, rank, step)``: resumed runs need no generator state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.data import RawSequence, SynthParams, jpeg_compress

RAW_STREAM = 7_919  # keeps device draws apart from the workers' streams with the same seed

_LUMA = (0.299, 0.587, 0.114)
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sharpness_batch(x: Tensor) -> Tensor:
    """Mean Sobel gradient magnitude of the luma, per image: ``(B, 3, H, W)`` -> ``(B,)``.

    The batched twin of ``training.data.sharpness`` (3x3 Sobel, reflected border).
    """
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    grey = (x * w).sum(1, keepdim=True)
    kx = x.new_tensor(_SOBEL_X).view(1, 1, 3, 3)
    k = torch.cat([kx, kx.transpose(2, 3)])
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="reflect"), k)
    return g.pow(2).sum(1).sqrt().mean((1, 2))


def psnr_batch(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB per image of ``(B, C, H, W)`` tensors in [0, 1] (100 for identical ones)."""
    mse = (a.float() - b.float()).pow(2).mean((1, 2, 3))
    return torch.where(mse <= 1e-10, torch.full_like(mse, 100.0), -10.0 * torch.log10(mse))


class DeviceRawSampler:
    """Blurry/sharp patches from temporal averages of raw frames kept on ``device``.

    ``sample(n, patch, step)`` returns ``blur`` and ``sharp`` float32 ``(n, 3, P, P)`` in [0, 1]
    on ``device`` and the number of candidate patches the filters refused (candidates are drawn
    in batches, so this counts every refused one, not retries per accepted sample).
    """

    def __init__(
        self,
        sequences: Sequence[RawSequence],
        params: SynthParams,
        device: torch.device | str,
        *,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.params = params
        self.device = torch.device(device)
        self.seed, self.rank = int(seed), int(rank)
        # (N, 3, H, W) uint8 per sequence; frames of one sequence share a size.
        self.frames = [
            torch.from_numpy(np.stack(seq.frames)).permute(0, 3, 1, 2).contiguous().to(self.device)
            for seq in sequences
            if seq.frames
        ]
        self.options = [
            (si, size, np.asarray(starts))
            for si, seq in enumerate(s for s in sequences if s.frames)
            for size in params.raw_windows
            if (starts := seq.windows(size))
        ]
        if not self.options:
            raise ValueError(
                f"no raw window of sizes {tuple(params.raw_windows)} fits the "
                f"{sum(len(s.frames) for s in sequences)} frames given"
            )

    @property
    def nbytes(self) -> int:
        return sum(f.numel() for f in self.frames)

    def _candidates(self, rng: np.random.Generator, k: int, patch: int) -> tuple[Tensor, Tensor]:
        p = self.params
        blur, sharp = [], []
        for _ in range(k):
            si, size, starts = self.options[int(rng.integers(len(self.options)))]
            s = int(starts[int(rng.integers(len(starts)))])
            frames = self.frames[si]
            h, w = frames.shape[-2:]
            ph, pw = min(patch, h), min(patch, w)
            y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            crops = frames[s : s + size, :, y : y + ph, x : x + pw].float().div_(255.0)
            if rng.uniform() < p.linear_fraction:
                b = crops.pow_(p.gamma).mean(0).clamp_(0.0, 1.0).pow_(1.0 / p.gamma)
                c = frames[s + size // 2, :, y : y + ph, x : x + pw].float().div_(255.0)
            else:
                b = crops.mean(0)
                c = crops[size // 2]
            blur.append(_fit(b, patch))  # per crop: sequences may differ in size
            sharp.append(_fit(c, patch))
        return torch.stack(blur), torch.stack(sharp)

    def _keep(self, blur: Tensor, sharp: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Which candidates pass the flat-patch filter, and which pass it and the
        too-little-blur filter: two ``(B,)`` bool arrays on the host."""
        p = self.params
        textured = sharpness_batch(sharp) >= p.sharpness_threshold
        ok = textured.clone()
        if p.max_blur_psnr > 0:
            ok &= psnr_batch(blur, sharp) <= p.max_blur_psnr
        return textured.cpu().numpy(), ok.cpu().numpy()

    def _webcam(self, blur: Tensor, rng: np.random.Generator, gen: torch.Generator) -> Tensor:
        p = self.params
        n = blur.shape[0]
        noisy = rng.uniform(size=n) < p.noise_prob
        shot = noisy & (rng.uniform(size=n) < p.poisson_prob)
        sigma = np.where(noisy, rng.uniform(*p.noise_sigma, size=n), 0.0)
        peak = np.where(shot, rng.uniform(*p.poisson_peak, size=n), 1.0)
        if shot.any():
            pk = blur.new_tensor(peak).view(n, 1, 1, 1)
            counts = torch.poisson(blur.clamp(0.0, 1.0) * pk, generator=gen) / pk
            blur = torch.where(blur.new_tensor(shot).bool().view(n, 1, 1, 1), counts, blur)
        if noisy.any():
            noise = torch.randn(blur.shape, generator=gen, device=blur.device, dtype=blur.dtype)
            blur = blur + noise * blur.new_tensor(sigma).view(n, 1, 1, 1)
        blur = blur.clamp_(0.0, 1.0)
        jpeg = np.flatnonzero(rng.uniform(size=n) < p.jpeg_prob)
        if jpeg.size:
            qualities = rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1, size=jpeg.size)
            idx = torch.from_numpy(jpeg).to(blur.device)
            host = blur[idx].permute(0, 2, 3, 1).cpu().numpy()
            back = np.stack(
                [jpeg_compress(h, int(q)) for h, q in zip(host, qualities, strict=True)]
            )
            blur[idx] = torch.from_numpy(back).to(blur.device).permute(0, 3, 1, 2)
        return blur

    @torch.no_grad()
    def sample(self, n: int, patch: int, step: int) -> tuple[Tensor, Tensor, int]:
        if n <= 0:
            raise ValueError(f"sample needs n >= 1, got {n}")
        p = self.params
        # RAW_STREAM last: numpy pads short seed lists with zeros, so the workers' keys
        # [seed, rank, index] never meet it.
        rng = np.random.default_rng([self.seed, self.rank, int(step), RAW_STREAM])
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(rng.integers(2**62)))
        # Which samples are still is drawn first, as the workers do: a still sample shows its
        # sharp frame and passes the flat-patch filter only, never the blur filter, or still
        # samples would come only from the windows that move. Drawn only when on, so that runs
        # without it keep their exact stream.
        still = (
            rng.uniform(size=n) < p.still_fraction
            if p.still_fraction > 0
            else np.zeros(n, dtype=bool)
        )
        wanted = [int(still.sum()), n - int(still.sum())]  # [still, moving] slots
        kept_b: list[list[Tensor]] = [[], []]
        kept_s: list[list[Tensor]] = [[], []]
        rejected = 0
        tries = max(1, p.max_tries)
        for attempt in range(tries):
            need = sum(wanted)
            # About a third of raw windows pass the blur filter (most of a clip barely moves;
            # `python -m training.device_data` prints the ratio): over-draw so one or two
            # rounds usually fill the batch.
            k = need if attempt == tries - 1 else max(need, math.ceil(need * 2.5))
            blur, sharp = self._candidates(rng, k, patch)
            if attempt == tries - 1:  # as the workers do: the last draw is taken as it is
                textured = ok = np.ones(k, dtype=bool)
            else:
                textured, ok = self._keep(blur, sharp)
            # Still slots are served first, in draw order and by texture alone, so which windows
            # they get does not depend on blur; moving slots take the rest that pass both.
            take: list[list[int]] = [[], []]
            for j in range(k):
                if textured[j] and len(take[0]) < wanted[0]:
                    take[0].append(j)
                elif ok[j] and len(take[1]) < wanted[1]:
                    take[1].append(j)
                elif not ok[j]:
                    rejected += 1
            for role, idx in enumerate(take):
                if idx:
                    at = torch.tensor(idx, device=blur.device)
                    kept_b[role].append(blur[at])
                    kept_s[role].append(sharp[at])
                    wanted[role] -= len(idx)
            if not any(wanted):
                break
        out_b = torch.empty((n, 3, patch, patch), device=self.device)
        out_s = torch.empty_like(out_b)
        for role, slots in enumerate((np.flatnonzero(still), np.flatnonzero(~still))):
            if slots.size:
                at = torch.from_numpy(slots).to(self.device)
                out_s[at] = torch.cat(kept_s[role])
                # a still sample's input is its sharp frame
                out_b[at] = out_s[at] if role == 0 else torch.cat(kept_b[role])
        blur, sharp = out_b, out_s
        blur = self._webcam(blur, rng, gen)
        if p.augment:
            blur, sharp = _augment(blur, sharp, rng)
        return blur.contiguous(), sharp.contiguous(), rejected


def _fit(x: Tensor, patch: int) -> Tensor:
    """Reflect-pad ``(..., C, h, w)`` crops smaller than ``patch`` up to ``(patch, patch)``."""
    h, w = x.shape[-2:]
    if h >= patch and w >= patch:
        return x
    if 2 * h <= patch or 2 * w <= patch:
        raise ValueError(f"frames of {h}x{w} are too small for {patch} px patches")
    return F.pad(x, (0, max(0, patch - w), 0, max(0, patch - h)), mode="reflect")


def _augment(blur: Tensor, sharp: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """One random 90-degree rotation and horizontal flip per pair, alike on both."""
    ks = rng.integers(0, 4, size=blur.shape[0])
    flips = rng.integers(0, 2, size=blur.shape[0]).astype(bool)
    out_b, out_s = [], []
    for i in range(blur.shape[0]):
        b, s = blur[i], sharp[i]
        if ks[i]:
            b, s = torch.rot90(b, int(ks[i]), dims=(1, 2)), torch.rot90(s, int(ks[i]), dims=(1, 2))
        if flips[i]:
            b, s = b.flip(2), s.flip(2)
        out_b.append(b)
        out_s.append(s)
    return torch.stack(out_b), torch.stack(out_s)


def main(argv: list[str] | None = None) -> None:
    """``python -m training.device_data FRAME_DIR [--device cuda]``: raw patches per second from
    this sampler and from one worker's path (``DeblurDataset``), same filters, same patch size."""
    import argparse
    import time

    from training.data import DeblurDataset

    parser = argparse.ArgumentParser(
        prog="python -m training.device_data", description=main.__doc__
    )
    parser.add_argument("frames", help="a folder of consecutive raw frames")
    parser.add_argument(
        "--config",
        default=str(Path(__file__).parent / "configs" / "gpu_fast.yaml"),
        help="training config whose data settings (windows, filters, noise, JPEG) to use",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--last", type=int, default=239)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=11, help="raw samples per step")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker-samples", type=int, default=40)
    args = parser.parse_args(argv)
    # Refused here, in one line: a zero patch, batch or step count was a traceback after the
    # frames were decoded (ZeroDivisionError, a zero-size conv), and no worker samples
    # printed "0.0/s" as if it had measured something. 16: the smallest stage patch train takes.
    for flag, value, least in (
        ("--patch", args.patch, 16),
        ("--batch", args.batch, 1),
        ("--steps", args.steps, 1),
        ("--worker-samples", args.worker_samples, 1),
        ("--first", args.first, 1),
        ("--last", args.last, args.first),
    ):
        if value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    if not Path(args.frames).is_dir():
        parser.error(f"no folder {args.frames}")
    if not Path(args.config).is_file():
        parser.error(f"no config {args.config}")
    from training.config import load_config
    from training.train import device_option, synth_params

    device = device_option(parser, args.device)
    params = synth_params(load_config(args.config))
    seq = RawSequence.load(args.frames, first=args.first, last=args.last)
    try:
        sampler = DeviceRawSampler([seq], params, device)
        sampler.sample(args.batch, args.patch, step=0)  # warm-up
    except ValueError as exc:  # too few frames for a window, frames too small for the patch
        raise SystemExit(f"{parser.prog}: error: {args.frames}: {exc}") from None
    sync = torch.cuda.synchronize if sampler.device.type == "cuda" else (lambda: None)
    sync()
    t0, rejected = time.perf_counter(), 0
    for step in range(1, args.steps + 1):
        rejected += sampler.sample(args.batch, args.patch, step)[2]
    sync()
    dev_rate = args.steps * args.batch / (time.perf_counter() - t0)
    dataset = DeblurDataset(raw=[seq], params=params, patch=args.patch)
    t0 = time.perf_counter()
    for i in range(args.worker_samples):
        dataset[i]
    worker_rate = args.worker_samples / (time.perf_counter() - t0)
    print(
        f"{len(seq.frames)} frames ({sampler.nbytes / 1e6:.0f} MB) on {sampler.device}; "
        f"{args.patch} px raw patches: device sampler {dev_rate:.1f}/s "
        f"({rejected / (args.steps * args.batch):.1f} refused per kept), "
        f"one worker {worker_rate:.1f}/s (torch threads {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    main()
