"""Export a student to ONNX (fp32 + fp16) and TorchScript, prove each against eager PyTorch, and
write the engine's `manifest.json`.

    python -m training.export --checkpoint runs/fast/best.pt --out weights --name student_fast
    python -m training.export --variant tiny --random-init --out /tmp/w      # tests, smoke

Each exported graph follows the model contract of docs/ARCHITECTURE.md: one input ``input``
``(1, 3, H, W)`` RGB in [0, 1] with dynamic H and W, one output ``output`` of the same shape,
clamped to [0, 1] inside the graph; the fp16 file has float16 input and output. Every file is run
at 721x1279 (odd, so the padding path is exercised) and compared with eager PyTorch: fp32 ONNX
must be within 1e-4 (max abs) or the export fails; fp16's difference is reported. A second,
small odd size checks that H and W really are dynamic and nothing was baked in at trace time.

Where the ``openvino`` package is installed, each ONNX file is also run through OpenVINO on the
CPU, compiled as the engine's OpenVINO backend compiles it by default (OpenVINO picks its own
inference precision: bf16 on CPUs with AVX512-BF16 / AMX, f16 on some ARM, else f32), on the
same inputs, and must stay within the tolerance of the precision OpenVINO really used
(``OPENVINO_TOLERANCE``; int8: the PSNR bounds below) or the export fails. Where that default
is not f32, each float ONNX file is also run with float32 forced (``INFERENCE_PRECISION_HINT``
f32, what the engine runs with ``precision="f32"``) at the small check size, held to the f32
tolerance. Without OpenVINO the export runs and reports that check as skipped.

``--int8`` adds ``{name}_int8.onnx``: static int8 quantization of the convolutions (QDQ, weights
per channel; the first, the last and those at the finest scale stay float), calibrated on frames
of a clip or image folder (default: the project's own ``assets/demo.mp4``). What OpenVINO runs
on x86 CPUs. On frames of the source left out of calibration its output must stay within ``INT8_MIN_PSNR``
dB PSNR of eager PyTorch and its correction within ``INT8_MIN_SNR`` dB of the float one, or the
export fails.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import RUN_CONTROL_KEYS, ConfigError, config_from_dict
from training.config import config_digest as train_digest
from training.models.student import ShuffleUNet, _stem_weights_as_conv, create_student
from training.teachers import describe_key_mismatch, sha256_file

log = logging.getLogger("training.export")

__all__ = [
    "BF16_TOLERANCE",
    "CHECK_SIZE",
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "OPENVINO_CONFIG",
    "OPENVINO_F32_SIZES",
    "OPENVINO_TOLERANCE",
    "ExportError",
    "ExportResult",
    "ExportWrapper",
    "OpenVinoRun",
    "OpenVinoUnavailable",
    "check_openvino",
    "check_openvino_int8",
    "config_digest",
    "export_all",
    "export_onnx",
    "export_torchscript",
    "external_data_files",
    "folder_refusal",
    "load_student",
    "main",
    "manifest_entry",
    "openvino_tolerance",
    "sha256_file",
    "stored_config_digest",
    "stored_config_history",
    "update_manifest",
]

SCHEMA = "sharpcam-manifest/1"  # docs/ARCHITECTURE.md; engine/manifest.py reads the same JSON
CHECK_SIZE = (721, 1279)  # (H, W): odd on both sides, near 720p
SECOND_SIZE = (37, 53)  # a different odd size: proves the graph is not fixed to CHECK_SIZE
FP32_TOLERANCE = 1e-4
# fp16 weights and activations: measured 5.7e-4 on the shipped students; 1e-2 (2.5 steps of
# 1/255) still catches a broken conversion (overflow, NaN) long before it is visible.
FP16_TOLERANCE = 1e-2
# OpenVINO's bf16 (its default on AVX512-BF16 / AMX CPUs) keeps 8 significant bits to fp16's
# 11: measured 1.2e-3 to 2.4e-3 on the shipped students (fp32 and fp16 files, both check
# sizes), 3.9e-3 on the tests' tiny student. 2e-2 (5 steps of 1/255) leaves room for other
# weights and still catches a broken graph (NaN, overflow, a wrong layout) by far.
BF16_TOLERANCE = 2e-2
# max abs tolerance of the OpenVINO check by the inference precision OpenVINO reports having
# used (a name not listed here gets the loosest, bf16's); the fp16 file gets at least fp16's.
OPENVINO_TOLERANCE = {"f32": FP32_TOLERANCE, "f16": FP16_TOLERANCE, "bf16": BF16_TOLERANCE}
# The compile config of engine/backends.py's OpenVinoBackend with its defaults (precision=None:
# no INFERENCE_PRECISION_HINT, OpenVINO chooses; threads=None: no INFERENCE_NUM_THREADS), on
# device CPU, the model reshaped to a static (1, 3, H, W) per frame size as it does there.
# training/ does not import engine/: keep this in step with OpenVinoBackend.__init__ by hand.
OPENVINO_CONFIG: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
# Where OpenVINO's default is not f32 (bf16, f16), the float files are run with f32 forced too:
# the engine's OpenVINO backend takes `precision="f32"`, and the looser default tolerance would
# hide an f32-only fault (a wrong kernel, a bad layout) by far. At the small size only: it
# proves the numbers, the default check already proved the shapes at both.
OPENVINO_F32_SIZES = [SECOND_SIZE]
# int8 rounds every activation, so a max-abs bound means little; PSNR (dB) of the int8 output
# against eager fp32 on real frames (held-out raw-frame averages lose ~0.1 dB at ~45 dB here).
INT8_MIN_PSNR = 35.0
# ... and its correction (output - input) within 10 dB of the float one's: a graph that passes
# the image through scores 0 dB here but ~33 dB in PSNR. The shipped file: ~23 dB.
INT8_MIN_SNR = 10.0
INT8_CALIB_FRAMES = 24
INT8_CHECK_FRAMES = 2  # calibration-source frames kept out of calibration, to check on
FAMILY = (".onnx", "_fp16.onnx", ".ts", "_int8.onnx")  # the files one export of NAME writes
DEMO_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo.mp4"
MIN_SIZE = 16
_HEX = "0123456789abcdefABCDEF"
# s: a manifest update (with an export's moves of its files) holds its lock for well under a
# second; one held this long was left behind by an export that was killed while it held it.
MANIFEST_LOCK_TIMEOUT = 30.0


class ExportError(RuntimeError):
    """An exported model failed its parity check or could not be written."""


class ExportWrapper(nn.Module):
    """The exported function: ``clamp(student(x), 0, 1)``, ``(B, 3, H, W) -> (B, 3, H, W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.model(x), 0.0, 1.0)


@dataclass
class ExportResult:
    """What one export run produced; ``parity`` maps file name to max abs diffs per size (ONNX
    Runtime, TorchScript), ``parity_openvino`` the same for OpenVINO at its default precision
    (int8: per check frame), ``parity_openvino_f32`` for OpenVINO with f32 forced (float files,
    only where the default is not f32; at `OPENVINO_F32_SIZES`)."""

    files: dict[str, Path] = field(default_factory=dict)
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    parity_psnr: dict[str, dict[str, float]] = field(default_factory=dict)  # int8: dB per frame
    parity_snr: dict[str, dict[str, float]] = field(default_factory=dict)  # int8: residual SNR
    parity_openvino: dict[str, dict[str, float]] = field(default_factory=dict)
    parity_openvino_psnr: dict[str, dict[str, float]] = field(default_factory=dict)  # int8
    parity_openvino_snr: dict[str, dict[str, float]] = field(default_factory=dict)  # int8
    parity_openvino_f32: dict[str, dict[str, float]] = field(default_factory=dict)
    openvino_precision: str = ""  # inference precision OpenVINO used: "f32", "bf16", "f16"
    openvino_version: str = ""
    openvino_skipped: str = ""  # why the OpenVINO check did not run; "" when it ran
    float_convs: dict[str, list[str]] = field(default_factory=dict)  # int8: modules kept float
    exporter: str = ""  # ONNX exporter that worked: "dynamo" or "torchscript"
    torchscript_method: str = ""  # "script" or "trace"
    manifest: Path | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # manifest entries written


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _find_variant(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Student variant name and constructor overrides from a trainer's resolved config.

    `training.config.TrainConfig` stores them as ``student`` and ``student_kwargs``; a nested
    ``model: {name: ...}`` section is accepted too.
    """
    if isinstance(config.get("student"), str):
        return config["student"], dict(config.get("student_kwargs") or {})
    section = config.get("model")
    if isinstance(section, str):
        return section, {}
    if isinstance(section, Mapping) and isinstance(section.get("name"), str):
        return section["name"], dict(section.get("kwargs") or {})
    raise ExportError(
        "cannot find the student variant in the checkpoint's config "
        f"(looked for config['student']); top-level keys: {sorted(config)}"
    )


def load_student(
    checkpoint: str | Path | None = None,
    *,
    variant: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build a student in eval mode; returns ``(model, variant, resolved_config)``.

    ``checkpoint`` is a trainer checkpoint (``{"model": state_dict, "config": {...}}``, variant
    read from the config) or a bare state dict (then ``variant`` is required). With
    ``random_init`` no checkpoint is read and the weights come from ``seed``.
    """
    config: dict[str, Any] = {}
    state: Mapping[str, torch.Tensor] | None = None
    if checkpoint is not None and not random_init:
        ckpt = _read_checkpoint(Path(checkpoint))
        if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
            state = ckpt["model"]
            config = dict(ckpt.get("config") or {})
        elif isinstance(ckpt, Mapping):
            state = ckpt
        else:
            raise ExportError(
                f"{checkpoint}: expected a dict checkpoint, got {type(ckpt).__name__}"
            )
        overrides: dict[str, Any] = {}
        own: str | None = None
        from_config = variant is None
        if variant is None:
            if not config:
                # Worded for every tool that reads it: `training.evaluate` has no --variant.
                raise ExportError(
                    f"{checkpoint} holds no config (a bare state dict), so its student variant "
                    "is unknown: export it with --variant NAME, or use a trainer checkpoint"
                )
            variant, overrides = _find_variant(config)
        elif config:
            # The checkpoint's own variant named on the command line: the constructor overrides
            # it was trained with (a grown student's extra blocks) still describe its weights,
            # in whichever form the config records them.
            try:
                own, own_overrides = _find_variant(config)
            except ExportError:
                own, own_overrides = None, {}
            if own == variant:
                overrides = own_overrides
        model = _build_student(variant, overrides, checkpoint, from_config=from_config)
        # EMA / DDP checkpoints prefix keys with "module."
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}

        def mismatch(detail: object) -> ExportError:
            if own is not None and own != variant:
                # torch's thirty lines of "size mismatch for ..." never said what it holds.
                return ExportError(
                    f"{checkpoint} holds a {own!r} student, not {variant!r}: leave out "
                    f"--variant, or name {own!r}"
                )
            return ExportError(f"{checkpoint} does not match student {variant!r}: {detail}")

        # Counted here, not left to torch: a student of another shape gave thirty lines to
        # 11 KB of "size mismatch for ...", a bare state dict of another network every key.
        state = dict(state)
        if isinstance(model, ShuffleUNet):
            # Compared in the view its load hook gives an old stem's weights, as they load.
            _stem_weights_as_conv(model, state, "")
        own_state = model.state_dict()
        shapes = [
            f"{k} {tuple(v.shape)} vs {tuple(own_state[k].shape)}"
            for k, v in state.items()
            if k in own_state and isinstance(v, torch.Tensor) and v.shape != own_state[k].shape
        ]
        missing = [k for k in own_state if k not in state]
        unexpected = [k for k in state if k not in own_state]
        if shapes or missing or unexpected:
            raise mismatch(describe_key_mismatch(missing, unexpected, shapes))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # what the counts above do not cover: one line of it
            raise mismatch(str(exc).splitlines()[0]) from exc
    else:
        if variant is None:
            raise ExportError("pass --checkpoint, or --variant with --random-init")
        torch.manual_seed(seed)
        model = _build_student(variant, {}, None)
        config = {"student": variant, "student_kwargs": {}, "random_init": True, "seed": seed}
    model.eval()
    return model, variant, config


def _read_checkpoint(path: Path) -> Any:
    """``torch.load`` of a trainer checkpoint, tensors and plain data only; ExportError when
    the file is missing or is no such checkpoint."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise ExportError(f"checkpoint {what}: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails in many ways
        # torch's own message runs to a paragraph (or is a bare KeyError of a pickle memo id).
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ExportError(
            f"cannot read checkpoint {path} (damaged, or not a trainer checkpoint): "
            f"{type(exc).__name__}: {first.strip()}"
        ) from exc


def _build_student(
    variant: str,
    overrides: Mapping[str, Any],
    checkpoint: str | Path | None,
    *,
    from_config: bool = False,
) -> nn.Module:
    """``create_student`` with its refusals (a variant renamed or removed since the checkpoint
    was written, overrides it no longer has) as ExportError."""
    try:
        return create_student(variant, **overrides)
    except (KeyError, TypeError, ValueError) as exc:
        reason = exc.args[0] if exc.args else exc  # KeyError's str() adds quotes
        where = f"{checkpoint}: " if checkpoint is not None else ""
        renamed = from_config and isinstance(exc, KeyError)
        hint = " (renamed since? name the variant with --variant)" if renamed else ""
        raise ExportError(f"{where}{reason}{hint}") from exc


def stored_config_digest(checkpoint: str | Path) -> str | None:
    """The config digest a trainer checkpoint stores beside its config (``config_digest``:
    `training.config.config_digest` as the trainer computed it when it saved); None when it
    stores none (a `training.average` soup, a bare state dict).

    Preferred to `config_digest` of the stored config: that fills in the defaults of keys added
    to the code since, so the same checkpoint's digest changed with the code, and the engine
    pairs ``student_fast_int8.onnx`` with ``student_fast.onnx`` by it."""
    ckpt = _read_checkpoint(Path(checkpoint))
    digest = ckpt.get("config_digest") if isinstance(ckpt, Mapping) else None
    if isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef"):
        return digest
    return None


def stored_config_history(checkpoint: str | Path) -> list[dict[str, Any]]:
    """The configs a trainer checkpoint's run went through before its own ``config``
    (``config_history``: one entry each time ``--resume`` went on under a changed config, with
    ``until_step``, ``config_digest``, ``changed`` and ``config``); [] when it never changed, and
    for a checkpoint that keeps none (a bare state dict, one from before it was kept)."""
    ckpt = _read_checkpoint(Path(checkpoint))
    history = ckpt.get("config_history") if isinstance(ckpt, Mapping) else None
    if not isinstance(history, list):
        return []
    return [dict(h) for h in history if isinstance(h, Mapping)]


def config_digest(config: Mapping[str, Any]) -> str:
    """The trainer's digest of a checkpoint's config (`training.config.config_digest`: run-control
    keys such as ``resume`` left out), so the manifest names the run that made the weights. A
    config that is not a training config (``--random-init``) is hashed as canonical JSON."""
    try:
        return train_digest(config_from_dict(dict(config)))
    except ConfigError:
        data = {k: v for k, v in config.items() if k not in RUN_CONTROL_KEYS}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# exporters
# --------------------------------------------------------------------------------------------


def _name_dynamic_dims(path: Path) -> None:
    """Give input and output the same readable dim names (batch 1, 3, "height", "width").

    The dynamo exporter names output dims by symbolic expressions of the padding arithmetic; the
    output size equals the input size by contract, so say so in the graph.
    """
    import onnx

    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        dims[0].Clear()
        dims[0].dim_value = 1
        dims[1].Clear()
        dims[1].dim_value = 3
        for d, name in ((dims[2], "height"), (dims[3], "width")):
            d.Clear()
            d.dim_param = name
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    # The dynamo exporter writes the weights beside the graph (NAME.onnx.data); onnx.load pulled
    # them in and onnx.save embedded them, so the side file is stale: ship one self-contained,
    # hashable file.
    Path(str(path) + ".data").unlink(missing_ok=True)


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = 18) -> str:
    """Write ``ExportWrapper(model)`` as ONNX with dynamic H, W; returns the exporter used.

    Tries torch's dynamo exporter (``torch.export`` with ``dynamic_shapes``), the default since
    torch 2.9; falls back to the TorchScript-based exporter (``dynamo=False``) where that fails.
    The dynamo path writes opset 18 natively: asking it for 17 makes it down-convert, which fails
    on ``Pad``; so ``opset=17`` goes to the legacy exporter first (it honours 17).
    """
    path = Path(path)
    wrapper = ExportWrapper(model).eval()
    x = torch.rand(1, 3, 64, 96)
    errors = []
    h = torch.export.Dim("height", min=MIN_SIZE, max=8192)
    w = torch.export.Dim("width", min=MIN_SIZE, max=8192)
    attempts = [
        (
            "dynamo",
            dict(dynamo=True, dynamic_shapes={"x": {2: h, 3: w}}, opset_version=max(opset, 18)),
        ),
        (
            "torchscript",
            dict(
                dynamo=False,
                opset_version=opset,
                dynamic_axes={
                    "input": {2: "height", 3: "width"},
                    "output": {2: "height", 3: "width"},
                },
            ),
        ),
    ]
    if opset < 18:
        attempts.reverse()  # only the TorchScript-based exporter writes opset 17 as asked
    for name, kwargs in attempts:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                _quiet_export(wrapper, x, path, kwargs)
            _name_dynamic_dims(path)
            return name
        except Exception as exc:  # noqa: BLE001 - try the next exporter, report all at the end
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            path.unlink(missing_ok=True)
    raise ExportError("every ONNX exporter failed:\n  " + "\n  ".join(errors))


def _quiet_export(wrapper: nn.Module, x: torch.Tensor, path: Path, kwargs: dict) -> None:
    """torch.onnx.export with its progress chatter sent to the log instead of stdout."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        torch.onnx.export(
            wrapper,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            **kwargs,
        )
    if buf.getvalue().strip():
        log.debug("%s", buf.getvalue().strip())


def convert_fp16(src: str | Path, dst: str | Path) -> None:
    """fp32 ONNX -> fp16 ONNX with float16 input and output (the contract's ``*_fp16.onnx``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model16 = convert_float_to_float16(model, keep_io_types=False)
    onnx.save(model16, str(dst))


def export_torchscript(model: nn.Module, path: str | Path) -> str:
    """Write ``ExportWrapper(model)`` as TorchScript; returns "script" or "trace".

    Scripting keeps the padding arithmetic general; tracing is the fallback (its shape
    arithmetic is recorded from tensor sizes, and the parity check at two sizes proves it).
    """
    wrapper = ExportWrapper(model).eval()
    errors = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(wrapper)
        scripted.save(str(path))
        return "script"
    except Exception as exc:  # noqa: BLE001
        errors.append(f"script: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, torch.rand(1, 3, 64, 96), check_trace=False)
        traced.save(str(path))
        return "trace"
    except Exception as exc:  # noqa: BLE001
        errors.append(f"trace: {type(exc).__name__}: {exc}")
    raise ExportError("TorchScript export failed:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------


def _inputs(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, h, w, generator=g) for h, w in sizes]


def _cpu_session(path: str | Path) -> Any:
    """A quiet ONNX Runtime CPU session: the checks compare numbers, not providers."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _worst(diffs: Mapping[str, float]) -> float:
    """The largest of ``diffs`` (max abs differences per size), NaN when any is NaN.

    Not Python's ``max``: every comparison with NaN is False, so it returns NaN only when NaN
    comes first, and a graph that breaks at the second check size would pass its parity check.
    """
    return float(np.max(np.asarray(list(diffs.values()), dtype=np.float64)))


def _least(values: Mapping[str, float]) -> float:
    """The smallest of ``values`` (dB per frame), NaN when any is NaN (see ``_worst``)."""
    return float(np.min(np.asarray(list(values.values()), dtype=np.float64)))


def check_onnx(
    model: nn.Module, path: str | Path, sizes: list[tuple[int, int]], *, fp16: bool = False
) -> dict[str, float]:
    """Max abs diff between ONNX Runtime and eager ``clamp(model(x))`` at each size."""
    sess = _cpu_session(path)
    names = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
    if names != (["input"], ["output"]):
        raise ExportError(f"{path}: expected input 'input' and output 'output', got {names}")
    return _max_abs_diffs(model, path, sizes, lambda x: sess.run(None, {"input": x})[0], fp16)


def _max_abs_diffs(
    model: nn.Module,
    path: str | Path,
    sizes: list[tuple[int, int]],
    run: Callable[[np.ndarray], np.ndarray],
    fp16: bool = False,
) -> dict[str, float]:
    """Max abs diff between ``run(x)`` (a runtime's output for ``x``) and eager
    ``clamp(model(x))`` on the check inputs (`_inputs`) at each size; ``fp16``: fed as float16."""
    wrapper = ExportWrapper(model).eval()
    out: dict[str, float] = {}
    for x in _inputs(sizes):
        with torch.no_grad():
            ref = wrapper(x).numpy()
        feed = x.numpy().astype(np.float16 if fp16 else np.float32)
        got = run(feed)
        if got.shape != ref.shape:
            raise ExportError(f"{path}: output shape {got.shape} for input {feed.shape}")
        out[f"{x.shape[2]}x{x.shape[3]}"] = float(np.abs(got.astype(np.float32) - ref).max())
    return out


def calibration_frames(
    source: str | Path = DEMO_CLIP, *, count: int = 24, size: tuple[int, int] = (352, 640)
) -> list[np.ndarray]:
    """``count`` frames spread over a video or an image folder, resized to ``size`` (H, W), as
    float32 ``(1, 3, H, W)`` RGB in [0, 1]: what int8 calibration sees."""
    import cv2

    source = Path(source)
    images: list[np.ndarray] = []
    if source.is_dir():
        paths = sorted(
            p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
        )
        picks = np.unique(np.linspace(0, len(paths) - 1, num=min(count, len(paths))).round())
        images = [img for i in picks.astype(int) if (img := cv2.imread(str(paths[i]))) is not None]
    elif source.is_file():
        # Count the frames by reading them and spread the picks: container frame counts (and
        # seeking) are unreliable for some files. Only the picked frames are kept: holding
        # every frame of a long clip (10,000 frames of 1080p are 62 GB) ran out of memory.
        cap = cv2.VideoCapture(str(source))
        n = 0
        while n < 10_000 and cap.grab():
            n += 1
        cap.release()
        if n:
            picks = set(np.linspace(0, n - 1, num=min(count, n)).round().astype(int).tolist())
            cap = cv2.VideoCapture(str(source))
            for i in range(n):
                if not cap.grab():
                    break
                if i in picks and (got := cap.retrieve())[0]:
                    images.append(got[1])
            cap.release()
    else:
        raise ExportError(f"calibration source not found: {source}")
    if not images:
        raise ExportError(f"no readable frames in calibration source {source}")
    h, w = size
    return [
        (cv2.cvtColor(cv2.resize(img, (w, h)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
        .transpose(2, 0, 1)[None]
        .copy()
        for img in images[:count]
    ]


def int8_float_modules(model: nn.Module, probe: int = 128) -> list[str]:
    """Names of the convolutions the int8 export keeps in float, in call order: the first and
    the last called, and every one whose input has the finest scale any other convolution sees.

    Rounding at that scale shows directly as pixel noise, while coarser levels are smoothed by
    the upsampling; on the ``fast`` student it is most of the int8 error (on the check frames the
    int8 correction's SNR against the float one rose from 18-19 to 23-24 dB) for about a fifth of
    its multiply-adds. A model of two or fewer convolutions is quantized whole.
    """
    area = _conv_input_areas(model, probe)
    order = list(area)
    if len(order) <= 2:
        return []
    finest = max(area[n] for n in order[1:-1])
    return [n for i, n in enumerate(order) if i in (0, len(order) - 1) or area[n] == finest]


def _conv_input_areas(model: nn.Module, probe: int = 128) -> dict[str, int]:
    """``{name: input H*W}`` of ``model``'s convolutions, in the order a forward pass on a
    ``probe`` x ``probe`` frame first calls them."""
    area: dict[str, int] = {}

    def hook(name: str):
        def record(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            area.setdefault(name, int(inp[0].shape[-2] * inp[0].shape[-1]))

        return record

    hooks = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.rand(1, 3, probe, probe, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
    return area  # dicts keep insertion order: the call order


def _conv_call_order(model: nn.Module, probe: int = 128) -> list[str]:
    """Names of ``model``'s convolutions in the order a forward pass calls them."""
    return list(_conv_input_areas(model, probe))


def onnx_conv_nodes(model: nn.Module, onnx_path: str | Path, modules: list[str]) -> list[str]:
    """The ONNX Conv node names of ``model``'s convolutions ``modules``, matched by their weights
    and biases (exporters name nodes as they like); ExportError when one is not found.

    Convolutions with identical weights and biases (the zero ``project`` convs of blocks added
    by ``grow_from``, an untrained zero head) cannot be told apart by value: among those, the
    k-th one the model calls is the k-th such node of the graph (nodes are in execution order).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {i.name: i for i in graph.initializer}
    made_by = {o: node for node in graph.node for o in node.output}

    def value(name: str) -> np.ndarray | None:
        """A constant tensor: an initializer, or one behind Identity nodes (the exporters
        share equal initializers that way) or a Constant node; None when computed."""
        for _ in range(len(graph.node) + 1):
            if name in weights:
                return numpy_helper.to_array(weights[name])
            node = made_by.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                attrs = [a for a in node.attribute if a.name == "value"]
                return numpy_helper.to_array(attrs[0].t) if attrs else None
            if node.op_type != "Identity":
                return None
            name = node.input[0]
        return None

    def same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
        return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    def with_bias(w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        # no bias is a zero bias: the exporter's optimiser drops bias inputs that are all zero
        return w, np.zeros(w.shape[0], dtype=w.dtype) if b is None else b

    def module_params(name: str) -> tuple[np.ndarray, np.ndarray]:
        conv = model.get_submodule(name)
        bias = None if conv.bias is None else conv.bias.detach().cpu().numpy()
        return with_bias(conv.weight.detach().cpu().numpy(), bias)

    nodes: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        w = value(node.input[1])
        bias = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or (bias is None and len(node.input) > 2 and node.input[2]):
            continue
        nodes.append((node.name, with_bias(w, bias)))
    order = _conv_call_order(model)
    params = {n: module_params(n) for n in dict.fromkeys([*order, *modules])}
    found: dict[str, str] = {}
    for name in modules:
        twins = [n for n in order if same(params[n], params[name])]
        matches = [n for n, wb in nodes if same(wb, params[name])]
        if not matches:
            continue
        if name not in twins or len(twins) != len(matches):
            raise ExportError(
                f"{onnx_path}: cannot tell which Conv node is {name}: {len(matches)} node(s) "
                f"and {len(twins)} convolution(s) ({', '.join(twins)}) have its weights"
            )
        found[name] = matches[twins.index(name)]
    missing = [n for n in modules if n not in found]
    if missing:
        raise ExportError(f"{onnx_path}: no Conv node with the weights of {', '.join(missing)}")
    return [found[n] for n in modules]


def quantize_int8(
    fp32_path: str | Path, out_path: str | Path, frames: list[np.ndarray], keep_float: list[str]
) -> None:
    """Static int8 QDQ quantization of the convolutions of ``fp32_path``, calibrated on
    ``frames`` (1st-99.999th percentile of each activation); the Conv nodes named in
    ``keep_float`` stay float (``int8_float_modules`` through ``onnx_conv_nodes``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(frames)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            _Frames(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            nodes_to_exclude=list(keep_float),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
        )


def check_int8(
    model: nn.Module, path: str | Path, frames: list[np.ndarray]
) -> tuple[dict[str, float], dict[str, float]]:
    """How close ONNX Runtime's int8 output is to eager ``clamp(model(x))`` on ``frames`` (give
    ones left out of calibration) and an odd-sized crop of the last (dynamic H and W kept).

    Returns ``(psnr, residual_snr)`` in dB per ``"HxW#i"``. The student's output is mostly its
    input (~33 dB from it), so PSNR alone would pass a graph that does nothing; the residual SNR
    compares the int8 correction ``got - x`` with the float one ``ref - x`` (0 dB: no correction
    or a wrong one)."""
    sess = _cpu_session(path)
    psnr, snr, _ = _int8_scores(model, path, frames, lambda x: sess.run(None, {"input": x})[0])
    return psnr, snr


def _int8_scores(
    model: nn.Module,
    path: str | Path,
    frames: list[np.ndarray],
    run: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """`check_int8`'s PSNR and residual SNR of ``run(x)`` (a runtime's output for ``x``), and
    the max abs diffs, per ``"HxW#i"`` of ``frames`` and an odd-sized crop of the last."""
    wrapper = ExportWrapper(model).eval()
    psnr: dict[str, float] = {}
    snr: dict[str, float] = {}
    diff: dict[str, float] = {}
    crop = np.ascontiguousarray(frames[-1][:, :, : SECOND_SIZE[0], : SECOND_SIZE[1]])
    for i, feed in enumerate([*frames, crop]):
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(feed)).numpy().astype(np.float64)
        got = run(feed).astype(np.float64)
        if got.shape != ref.shape:
            raise ExportError(f"{path}: output shape {got.shape} for input {feed.shape}")
        err = float(np.mean((got - ref) ** 2))
        residual = float(np.mean((ref - feed) ** 2))
        key = f"{feed.shape[2]}x{feed.shape[3]}#{i}"
        psnr[key] = 100.0 if err == 0 else float(-10 * np.log10(err))
        snr[key] = 100.0 if err == 0 else float(10 * np.log10(max(residual, 1e-20) / err))
        diff[key] = float(np.abs(got - ref).max())
    return psnr, snr, diff


def check_torchscript(
    model: nn.Module, path: str | Path, sizes: list[tuple[int, int]]
) -> dict[str, float]:
    loaded = torch.jit.load(str(path), map_location="cpu").eval()
    wrapper = ExportWrapper(model).eval()
    out: dict[str, float] = {}
    for x in _inputs(sizes):
        with torch.no_grad():
            ref, got = wrapper(x), loaded(x)
        if got.shape != ref.shape:
            raise ExportError(f"{path}: output shape {tuple(got.shape)} for input {tuple(x.shape)}")
        out[f"{x.shape[2]}x{x.shape[3]}"] = float((got - ref).abs().max())
    return out


# --------------------------------------------------------------------------------------------
# OpenVINO parity (optional: only where the openvino package is installed)
# --------------------------------------------------------------------------------------------


class OpenVinoUnavailable(RuntimeError):
    """OpenVINO cannot run here (not installed, no CPU device): its check is skipped."""


_OV_CORE: Any = None
_OV_CORE_LOCK = threading.Lock()


def _openvino() -> tuple[Any, Any]:
    """``(openvino, core)``: the module and this module's one ``openvino.Core``, made on first
    use and never destroyed (as engine/backends.py's ``_ov_core``: a Core destroyed puts back the
    signal stack it found, and two closed out of order left Ctrl-C a segfault).

    Raises:
        OpenVinoUnavailable: openvino does not import, does not start, or has no CPU device.
    """
    global _OV_CORE
    try:
        import openvino as ov
    except ImportError as exc:  # an optional dependency
        raise OpenVinoUnavailable(f"openvino is not installed ({exc})") from exc
    with _OV_CORE_LOCK:
        try:
            if _OV_CORE is None:
                _OV_CORE = ov.Core()
            devices = list(_OV_CORE.available_devices)
        except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
            raise OpenVinoUnavailable(f"OpenVINO does not start here: {_one_line(exc)}") from exc
    if "CPU" not in devices:
        raise OpenVinoUnavailable(f"OpenVINO has no CPU device here (devices: {devices})")
    return ov, _OV_CORE


def _one_line(exc: BaseException) -> str:
    """An exception as one line, without the C++ source locations OpenVINO's messages list
    (``Exception from src/...cpp:84:``), as engine/backends.py's ``_one_line`` does."""
    lines = (line.strip() for line in str(exc).splitlines())
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return " ".join(kept) or type(exc).__name__


def _ov_precision_name(hint: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``) as a short name: bf16 (the names of
    engine/backends.py's ``_ov_precision_name``)."""
    text = str(hint)
    names = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
    return next((short for long, short in names.items() if f"'{long}'" in text), text)


class OpenVinoRun:
    """An exported ONNX file run by OpenVINO on the CPU as the engine's OpenVINO backend runs
    it by default: `OPENVINO_CONFIG`, the model reshaped to each input's static shape. Inputs
    and outputs stay float (the engine adds a uint8 conversion around the graph, checked by its
    own tests); ``precision`` is the inference precision OpenVINO used, after the first `run`.

    ``precision_hint`` (``"f32"``, ``"bf16"``, ``"f16"``) forces an inference precision, as the
    backend's ``precision`` option does; None lets OpenVINO choose.
    """

    def __init__(self, path: str | Path, precision_hint: str | None = None) -> None:
        self.ov, self.core = _openvino()
        self.path = Path(path)
        self.precision_hint = precision_hint
        self.config = dict(OPENVINO_CONFIG)
        if precision_hint:
            self.config["INFERENCE_PRECISION_HINT"] = precision_hint
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors
            raise ExportError(f"{self.path}: OpenVINO cannot read it: {_one_line(exc)}") from exc
        self.precision = ""

    def run(self, x: np.ndarray) -> np.ndarray:
        """OpenVINO's output for ``x`` ``(1, 3, H, W)``, compiled for exactly that shape."""
        h, w = x.shape[2:]
        model = self.model.clone()
        try:
            model.reshape({model.inputs[0]: self.ov.PartialShape(list(x.shape))})
            compiled = self.core.compile_model(model, "CPU", dict(self.config))
            request = compiled.create_infer_request()
            request.infer({0: x})
            out = np.array(request.get_output_tensor(0).data, copy=True)
            self.precision = _ov_precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception as exc:  # noqa: BLE001
            raise ExportError(
                f"{self.path}: OpenVINO cannot run it at {w}x{h} on the CPU: {_one_line(exc)}"
            ) from exc
        return out


def openvino_tolerance(precision: str, *, fp16: bool = False) -> float:
    """The OpenVINO check's max abs tolerance for inference ``precision`` (`OPENVINO_TOLERANCE`;
    the loosest for a name not listed); the fp16 file is held to at least `FP16_TOLERANCE`."""
    tolerance = OPENVINO_TOLERANCE.get(precision, max(OPENVINO_TOLERANCE.values()))
    return max(tolerance, FP16_TOLERANCE) if fp16 else tolerance


def check_openvino(
    model: nn.Module,
    path: str | Path,
    sizes: list[tuple[int, int]],
    *,
    fp16: bool = False,
    precision_hint: str | None = None,
) -> tuple[dict[str, float], str]:
    """Max abs diff between OpenVINO (`OpenVinoRun`, ``precision_hint`` None: its default
    precision) and eager ``clamp(model(x))`` at each size, on `check_onnx`'s inputs, and the
    inference precision OpenVINO used.

    Raises:
        OpenVinoUnavailable: OpenVINO cannot run here.
        ExportError: OpenVINO cannot read, compile or run the file.
    """
    ov_run = OpenVinoRun(path, precision_hint)
    return _max_abs_diffs(model, path, sizes, ov_run.run, fp16), ov_run.precision


def check_openvino_int8(
    model: nn.Module, path: str | Path, frames: list[np.ndarray]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], str]:
    """`check_int8` through OpenVINO (`OpenVinoRun`) on the same frames: ``(psnr, residual_snr,
    max_abs_diff, precision)``, the last the inference precision of the convolutions it keeps
    in float."""
    ov_run = OpenVinoRun(path)
    psnr, snr, diff = _int8_scores(model, path, frames, ov_run.run)
    return psnr, snr, diff, ov_run.precision


def _openvino_parity(
    model: nn.Module,
    path: Path,
    sizes: list[tuple[int, int]],
    result: ExportResult,
    *,
    fp16: bool = False,
) -> None:
    """`check_openvino` of ``path`` into ``result`` at OpenVINO's default precision, and where
    that is not f32, with f32 forced too (`OPENVINO_F32_SIZES`); ExportError past the
    `openvino_tolerance` of each."""
    diffs, precision = check_openvino(model, path, sizes, fp16=fp16)
    result.parity_openvino[path.name] = diffs
    result.openvino_precision = precision
    _check_openvino_diffs(path, diffs, precision, openvino_tolerance(precision, fp16=fp16))
    if precision == "f32":
        return  # the default check was the f32 one
    diffs, used = check_openvino(model, path, OPENVINO_F32_SIZES, fp16=fp16, precision_hint="f32")
    result.parity_openvino_f32[path.name] = diffs
    # f32's tolerance whatever OpenVINO reports: a hint it ignored must not loosen the check.
    _check_openvino_diffs(path, diffs, used, openvino_tolerance("f32", fp16=fp16), forced=True)


def _check_openvino_diffs(
    path: Path, diffs: Mapping[str, float], precision: str, tolerance: float, forced: bool = False
) -> None:
    worst = _worst(diffs)
    if not worst <= tolerance:  # also refuses NaN
        how = f"{precision}, forced" if forced else precision
        raise ExportError(
            f"{path}: OpenVINO (CPU, inference precision {how}) differs from PyTorch by "
            f"{worst:.3g} (max abs) > {tolerance:g}: {diffs}"
        )


# --------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------


def _precision_of(fname: str, name: str) -> str:
    """The precision of ``fname``, the file of export ``name`` it is (`FAMILY`): from the part
    after the stem, as ``--name cam_fp16`` writes a float32 ``cam_fp16.onnx``."""
    return {"_fp16.onnx": "fp16", "_int8.onnx": "int8"}.get(fname[len(name) :], "fp32")


def external_data_files(path: str | Path) -> list[str]:
    """The external data files (locations relative to the model's folder, as the graph names
    them) that the ONNX model at ``path`` keeps tensors in; empty for a self-contained model and
    for bytes that are not an ONNX protobuf.

    Every TensorProto anywhere in the model counts (initializers, Constant and other attribute
    values, If/Loop bodies, functions): the engine refuses a model referencing a file its entry
    does not list, so this must find at least what the engine's own reader finds.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError):
        return []  # not ONNX (the runtime refuses it itself): it references nothing
    found: dict[str, None] = {}
    stack: list[Any] = [model]
    while stack:
        message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            if message.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in message.external_data}
                if "location" in info:  # without one ONNX Runtime refuses the model anyway
                    found.setdefault(info["location"])
            continue
        for fd, value in message.ListFields():
            if fd.message_type is None:
                continue  # a scalar or a string
            # A repeated field's container has no ListFields (and FieldDescriptor.label, which
            # would say so, is gone from protobuf 7).
            if hasattr(value, "ListFields"):
                stack.append(value)
            else:
                stack.extend(value)
    return list(found)


def _external_data_entry(path: Path) -> dict[str, dict[str, Any]]:
    """``external_data`` of ``path``'s manifest entry: sha256 and size of each file it names."""
    out: dict[str, dict[str, Any]] = {}
    for location in external_data_files(path):
        side = _external_path(path, location)
        if not side.is_file():
            raise ExportError(f"{path}: its external data file {side} does not exist")
        out[location] = {"sha256": sha256_file(side), "bytes": side.stat().st_size}
    return out


def _external_path(model: Path, location: str) -> Path:
    """``model``'s folder / ``location``; ExportError when that is outside the folder (absolute,
    ``..``, a link elsewhere): ONNX Runtime and the engine refuse such a model, and export_all
    would have moved a file outside the export's folders. The same rule as
    ``engine.manifest._external_path``, written twice because training never imports the engine."""
    folder = model.parent
    side = folder / location
    try:
        inside = side.resolve().is_relative_to(folder.resolve())  # links followed, as ORT does
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL in the name: no file
        inside = False
    if not location or Path(location).anchor or not inside:
        raise ExportError(
            f"{model}: its external data file {location!r} is not inside its folder {folder} "
            "(ONNX Runtime refuses such a model)"
        )
    return side


def manifest_entry(
    path: Path,
    *,
    fmt: str,
    precision: str,
    variant: str,
    device: str,
    multiple: int,
    params: int,
    macs_per_pixel: float,
    metrics: Mapping[str, Any],
    digest: str,
    parity: Mapping[str, float] | None = None,
    config_history: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One ``files`` entry of `manifest.json`, exactly the keys of docs/ARCHITECTURE.md; an ONNX
    file that keeps tensors in external data files gets ``external_data`` too (their sha256:
    the file's own sha256 does not cover them), and weights from a run resumed under a changed
    config ``config_history`` (`stored_config_history`, without each earlier whole config: its
    digest names it)."""
    dtype = "float16" if precision == "fp16" else "float32"
    entry: dict[str, Any] = {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "format": fmt,
        "precision": precision,
        "variant": variant,
        "device": device,
        "input": {
            "name": "input",
            "dtype": dtype,
            "layout": "NCHW",
            "color": "RGB",
            "range": [0, 1],
            "min_size": MIN_SIZE,
            "multiple": multiple,
        },
        "output": {
            "name": "output",
            "dtype": dtype,
            "layout": "NCHW",
            "color": "RGB",
            "range": [0, 1],
        },
        "params": params,
        "macs_per_pixel": round(float(macs_per_pixel), 1),
        "metrics": dict(metrics),
        "config_digest": digest,
    }
    if fmt == "onnx":
        external = _external_data_entry(path)
        if external:  # only then: self-contained files keep the keys they always had
            entry["external_data"] = external
    if parity is not None:
        entry["parity_max_abs_diff"] = dict(parity)  # extra key: the engine keeps unknown keys
    if config_history:  # only then: the entries of a run that never changed keep their keys
        entry["config_history"] = [
            {
                "until_step": h.get("until_step"),
                "config_digest": h.get("config_digest"),
                "changed": list(h.get("changed") or []),
            }
            for h in config_history
        ]
    return entry


def _existing_files(path: Path) -> dict[str, Any]:
    """The ``files`` of an existing manifest (none: empty); ExportError when it is unusable."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"existing {path} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read existing {path}: {exc}") from exc
    if not isinstance(old, dict) or old.get("schema") != SCHEMA:
        got = old.get("schema") if isinstance(old, dict) else type(old).__name__
        raise ExportError(f"existing {path} has schema {got!r}, not {SCHEMA!r}")
    files = old.get("files", {})
    if not isinstance(files, dict):
        # The engine refuses such a manifest too ('files' must be an object).
        raise ExportError(f"existing {path}: 'files' must be an object, got {type(files).__name__}")
    return dict(files)


def update_manifest(
    directory: str | Path,
    entries: Mapping[str, Mapping[str, Any]],
    remove: Iterable[str] = (),
) -> Path:
    """Merge ``entries`` into ``directory/manifest.json`` (other files kept, those named in
    ``remove`` dropped), atomically.

    Each entry replaces the listed one whole (`manifest_entry`'s keys, changed ones included),
    and must name a file in ``directory`` with its sha256: the engine refuses a manifest with
    an entry that has none (every model in the folder then) and a file that differs from its
    entry, so ExportError here, before anything is written.
    """
    path = Path(directory) / "manifest.json"
    _check_entries(path.parent, entries)
    # Read, merge and replace under a lock: two exports into one folder finishing together
    # each read the old manifest, and the one that replaced it last dropped the other's entry.
    with _manifest_lock(path):
        _merge_manifest(path, entries, remove)
    return path


def _is_sha256(sha: Any) -> bool:
    return isinstance(sha, str) and len(sha) == 64 and set(sha) <= set(_HEX)


def _check_entries(directory: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """ExportError unless each of ``entries`` names a file in ``directory`` with its sha256,
    and an ONNX file's entry lists each of its external data files with theirs."""
    for fname, entry in entries.items():
        file = directory / fname
        _check_listed(
            file,
            entry.get("sha256") if isinstance(entry, Mapping) else None,
            f"manifest entry {fname!r}",
            no_sha="pass the whole entry (manifest_entry(), or the listed entry with its keys "
            "changed)",
        )
        _check_external_entry(file, entry)


def _check_listed(file: Path, sha: Any, what: str, no_sha: str = "") -> None:
    """ExportError unless ``sha`` is a sha256 and ``file`` exists with it: a manifest entry
    and each of its external data files are held to the same three checks."""
    if not _is_sha256(sha):
        raise ExportError(f"{what} has no sha256" + (f": {no_sha}" if no_sha else ""))
    if not file.is_file():
        raise ExportError(f"{what}: no such file {file}")
    actual = sha256_file(file)
    if actual != sha.lower():
        raise ExportError(
            f"{what} has sha256 {sha[:12]}…, the file is {actual[:12]}… (entries are for the "
            "files as they are)"
        )


def _check_external_entry(file: Path, entry: Mapping[str, Any]) -> None:
    """ExportError unless ``entry["external_data"]`` lists every external data file of ``file``
    (an ONNX model) with its sha256: the engine refuses the model otherwise."""
    listed = entry.get("external_data") or {}
    if not isinstance(listed, Mapping):
        raise ExportError(f"manifest entry {file.name!r}: 'external_data' must be an object")
    referenced = external_data_files(file) if entry.get("format", "onnx") == "onnx" else []
    for location in dict.fromkeys([*referenced, *listed]):
        side = _external_path(file, location)
        if location not in listed:
            raise ExportError(
                f"manifest entry {file.name!r} does not list the external data file {side} "
                "its graph keeps tensors in (manifest_entry() lists it)"
            )
        item = listed[location]
        _check_listed(
            side,
            item.get("sha256") if isinstance(item, Mapping) else None,
            f"manifest entry {file.name!r}: external data {location!r}",
        )


def _merge_manifest(
    path: Path, entries: Mapping[str, Mapping[str, Any]], remove: Iterable[str]
) -> None:
    """:func:`update_manifest`'s read, merge and atomic replace; the caller holds the lock."""
    manifest: dict[str, Any] = {"schema": SCHEMA, "files": _existing_files(path)}
    for fname in remove:
        manifest["files"].pop(fname, None)
    for fname in entries:
        # Where names ignore case (Windows, macOS), `--name Student_Fast` rewrote the file
        # listed as student_fast.onnx: that entry's old sha256 would refuse the new bytes.
        for old in [k for k in manifest["files"] if k != fname and k.lower() == fname.lower()]:
            if _same_file(path.parent / old, path.parent / fname):
                del manifest["files"][old]
    manifest["files"].update({k: dict(v) for k, v in entries.items()})
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the manifest ships with the weights
    os.replace(tmp, path)


@contextlib.contextmanager
def _manifest_lock(path: Path) -> Iterator[None]:
    """Hold ``path.lock`` (created exclusively: portable, unlike flock) while the manifest is
    read and replaced (in an export, also while its files move in); ExportError when another
    holder keeps it past MANIFEST_LOCK_TIMEOUT."""
    lock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + MANIFEST_LOCK_TIMEOUT
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise ExportError(
                    f"{path} is locked by another export ({lock} held for over "
                    f"{MANIFEST_LOCK_TIMEOUT:g} s): delete {lock} if no export is running"
                ) from None
            time.sleep(0.05)  # an update holds it for milliseconds
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")  # who holds it, for a person looking
        yield
    finally:
        lock.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is gone
        return False


def _check_metrics_measured(
    metrics: Mapping[str, Any], name: str, checkpoint_sha256: str | None
) -> None:
    """ExportError unless the ``training.evaluate`` summary ``metrics`` measured what is
    exported: a row named ``name`` (the exported file, evaluated), or a row measured on the
    checkpoint's bytes (``checkpoint_sha256`` among its ``model_sha256``). Otherwise its tables, measured on another
    variant's file or on earlier weights, would ship as these weights' numbers."""
    sets = metrics.get("sets")
    if not isinstance(sets, Mapping) or not sets:
        return
    named = {m for st in sets.values() for m in (st.get("methods") or {})}
    if name in named:
        return  # a row of that name measured on other bytes is refused by export_all
    if checkpoint_sha256 in set((metrics.get("model_sha256") or {}).values()):
        return
    raise ExportError(
        f"the --metrics summary measured neither {name}.onnx nor this checkpoint (its rows: "
        f"{', '.join(sorted(named)) or 'none'}): evaluate the exported file or the checkpoint, "
        "then export again with that summary"
    )


def _metrics_for(metrics_file: str | Path | None) -> dict[str, Any]:
    """The ``metrics`` block: a `training.evaluate` summary.json reduced to its tables."""
    if metrics_file is None:
        return {}
    try:
        data = json.loads(Path(metrics_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read --metrics {metrics_file}: {exc}") from exc
    if isinstance(data, dict) and "sets" in data:
        not_held_out = data.get("not_held_out") or []
        if not_held_out:
            # evaluate names the sets alike whatever frames they scored: in the manifest, scores
            # on training frames read as held-out ones.
            raise ExportError(
                f"the --metrics summary {metrics_file} scored frames a model was trained on "
                f"({'; '.join(map(str, not_held_out))}): evaluate on the held-out frames, then "
                "export again with that summary"
            )
        keep = {"sets": data["sets"]}
        # options: how the numbers were measured (windows, crop, limit): a 48-pixel crop's
        # scores read like the whole frames' without them.
        for key in ("teacher", "data", "options", "generated", "model_sha256"):
            if key in data:
                keep[key] = data[key]
        return keep
    return data if isinstance(data, dict) else {"value": data}


def _own_rows(metrics: Mapping[str, Any], shipped: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the rows of models this export does not ship (named in the
    summary's ``model_sha256`` under a stem not in ``shipped``, their ``@scale`` / ``@ens``
    rows too): the baselines, the teacher and this export's own rows stay."""
    measured = metrics.get("model_sha256") or {}
    others = {n for n in measured if n not in shipped}
    if not others or not isinstance(metrics.get("sets"), Mapping):
        return dict(metrics)
    sets = {}
    for key, st in metrics["sets"].items():
        if isinstance(st, Mapping) and isinstance(st.get("methods"), Mapping):
            methods = st["methods"]
            st = {
                **st,
                "methods": {m: r for m, r in methods.items() if m.split("@")[0] not in others},
            }
        sets[key] = st
    return {
        **metrics,
        "sets": sets,
        "model_sha256": {n: v for n, v in measured.items() if n not in others},
    }


# --------------------------------------------------------------------------------------------
# the whole export
# --------------------------------------------------------------------------------------------


def export_all(
    model: nn.Module,
    out_dir: str | Path,
    *,
    name: str,
    variant: str,
    config: Mapping[str, Any],
    fp16: bool = True,
    torchscript: bool = True,
    opset: int = 18,
    device: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    check_size: tuple[int, int] = CHECK_SIZE,
    int8: bool = False,
    calib: str | Path = DEMO_CLIP,
    checkpoint_sha256: str | None = None,
    digest: str | None = None,
    config_history: Sequence[Mapping[str, Any]] = (),
) -> ExportResult:
    """Export ``model`` under ``out_dir`` as ``{name}.onnx`` (+ ``{name}_fp16.onnx``,
    ``{name}.ts``), check each against eager PyTorch, and update ``out_dir/manifest.json``.

    Where openvino is installed each ONNX file is run through OpenVINO too
    (`check_openvino`); without it ``result.openvino_skipped`` says why not, and it is logged.
    ``metrics`` rows named like a file must have measured its bytes, or ``checkpoint_sha256``'s
    (the checkpoint the model came from). ``digest`` is the manifest's ``config_digest`` (the
    checkpoint's own, `stored_config_digest`); without one it is `config_digest` of ``config``.
    ``config_history`` (the checkpoint's `stored_config_history`) goes into each entry.

    Raises:
        ExportError: fp32 ONNX differs from PyTorch by more than 1e-4, or TorchScript by more
            than 1e-4, or OpenVINO by more than `openvino_tolerance` (int8: the PSNR bounds),
            or an export fails; nothing is added to the manifest then.
    """
    _check_name(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Everything is written and checked in a staging folder first and moved into place only
    # when every check passed: a failed re-export must not leave a new model beside a manifest
    # that still lists the old one's sha256 (the engine would refuse it).
    stage = Path(tempfile.mkdtemp(prefix=".export.", dir=out))
    try:
        try:
            result = _export_checked(
                model,
                stage,
                name=name,
                variant=variant,
                config=config,
                fp16=fp16,
                torchscript=torchscript,
                opset=opset,
                device=device,
                metrics=metrics,
                check_size=check_size,
                int8=int8,
                calib=calib,
                checkpoint_sha256=checkpoint_sha256,
                digest=digest,
                config_history=config_history,
            )
        except ExportError as exc:
            # Its messages named the staging copy (".export.x1y2/student_fast.onnx"), deleted
            # below: name the file as it would have been, and say the folder is as it was.
            raise ExportError(
                f"{_unstaged(str(exc), stage, out)} (nothing in {out} was changed)"
            ) from exc
        manifest = out / "manifest.json"
        # Locked before anything moves: a lock that cannot be taken (another export's, or one a
        # killed export left behind) stops this one with the old files in place. Taken after the
        # move, it left the new files beside a manifest listing the old ones' sha256.
        with _manifest_lock(manifest):
            # Checked before anything moves: new files beside a manifest that cannot take them
            # would be refused by the engine (sha256 of the old ones).
            _existing_files(manifest)
            for fname, path in list(result.files.items()):
                # An ONNX file's external data files go with it: its graph names them relative
                # to its own folder.
                for location in result.entries[fname].get("external_data", {}):
                    (out / location).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path.parent / location, out / location)
                os.replace(path, out / fname)
                result.files[fname] = out / fname
            # A file of this name's family not made this time must not stay listed or on disk
            # (the engine would load, say, an old int8 file before the new float). Its weights
            # may be the same ones (a re-export of one checkpoint), so the message does not say
            # they are old: only that this export did not make it.
            stale = [f"{name}{sfx}" for sfx in FAMILY if f"{name}{sfx}" not in result.files]
            _check_entries(out, result.entries)
            _merge_manifest(manifest, result.entries, stale)
            result.manifest = manifest
            for fname in stale:
                if (out / fname).is_file():
                    (out / fname).unlink()
                    log.info(
                        "removed %s: it was not made by this export, and the engine would load "
                        "it beside the new weights",
                        fname,
                    )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result


def _unstaged(message: str, stage: Path, out: Path) -> str:
    """``message`` with the staging folder's paths (in any spelling a message may use) turned
    into the bare file names, and the folder itself into ``out``."""
    for spelling in {str(stage), stage.as_posix(), repr(str(stage))[1:-1]}:
        message = message.replace(spelling + os.sep, "").replace(spelling + "/", "")
        message = message.replace(spelling, str(out))
    return message


def _check_name(name: str) -> None:
    """Refuse a ``name`` that is not a bare file stem: ``student_fast.onnx`` would write
    ``student_fast.onnx.onnx`` and leave the old ``student_fast.onnx`` listed and loaded, and a
    path would write outside ``out_dir`` (or fail deep inside the exporter)."""
    if not name or Path(name).name != name or name in (".", "..") or "\\" in name:
        raise ExportError(f"--name must be a file stem such as student_fast, got {name!r}")
    if Path(name).suffix.lower() in (".onnx", ".ts", ".pt", ".pth"):
        raise ExportError(
            f"--name is the file stem, without a suffix: {Path(name).stem!r}, not {name!r}"
        )


def _export_checked(
    model: nn.Module,
    out: Path,
    *,
    name: str,
    variant: str,
    config: Mapping[str, Any],
    fp16: bool,
    torchscript: bool,
    opset: int,
    device: str | None,
    metrics: Mapping[str, Any] | None,
    check_size: tuple[int, int],
    int8: bool = False,
    calib: str | Path = DEMO_CLIP,
    checkpoint_sha256: str | None = None,
    digest: str | None = None,
    config_history: Sequence[Mapping[str, Any]] = (),
) -> ExportResult:
    """The exports and their parity checks, all inside ``out``; raises ExportError on failure."""
    model = model.float().eval()
    sizes = [check_size, SECOND_SIZE]
    result = ExportResult()
    if int8:  # a bad calibration source fails before any other export has run
        frames = calibration_frames(calib, count=INT8_CALIB_FRAMES + INT8_CHECK_FRAMES)
        if len(frames) <= INT8_CHECK_FRAMES:
            raise ExportError(
                f"calibration source {calib}: {len(frames)} frame(s), need more than "
                f"{INT8_CHECK_FRAMES} (some are kept out of calibration to check the result)"
            )

    # OpenVINO is what the engine runs the ONNX files with on most CPUs: each ONNX file is
    # checked through it too, where it is installed (an optional dependency).
    try:
        ov, _ = _openvino()
        result.openvino_version = str(getattr(ov, "__version__", "")).split("-")[0]
    except OpenVinoUnavailable as exc:
        result.openvino_skipped = str(exc)
        log.info("OpenVINO parity check skipped: %s", exc)
    with_openvino = not result.openvino_skipped

    onnx_path = out / f"{name}.onnx"
    result.exporter = export_onnx(model, onnx_path, opset=opset)
    result.files[onnx_path.name] = onnx_path
    result.parity[onnx_path.name] = check_onnx(model, onnx_path, sizes)
    worst = _worst(result.parity[onnx_path.name])
    if not worst <= FP32_TOLERANCE:
        raise ExportError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by {worst:.3g} (max abs) > "
            f"{FP32_TOLERANCE:g}: {result.parity[onnx_path.name]}"
        )
    if with_openvino:
        _openvino_parity(model, onnx_path, sizes, result)

    if fp16:
        fp16_path = out / f"{name}_fp16.onnx"
        convert_fp16(onnx_path, fp16_path)
        result.files[fp16_path.name] = fp16_path
        result.parity[fp16_path.name] = check_onnx(model, fp16_path, sizes, fp16=True)
        worst = _worst(result.parity[fp16_path.name])
        if not worst <= FP16_TOLERANCE:  # also refuses NaN
            raise ExportError(
                f"{fp16_path}: fp16 ONNX differs from PyTorch by {worst:.3g} (max abs) > "
                f"{FP16_TOLERANCE:g}: {result.parity[fp16_path.name]}"
            )
        if with_openvino:
            # The engine's OpenVINO backend takes an fp16 file too (`--model *_fp16.onnx` on a
            # CPU: `auto` tries OpenVINO first); it computes in its own inference precision.
            _openvino_parity(model, fp16_path, sizes, result, fp16=True)

    if torchscript:
        ts_path = out / f"{name}.ts"
        result.torchscript_method = export_torchscript(model, ts_path)
        result.files[ts_path.name] = ts_path
        result.parity[ts_path.name] = check_torchscript(model, ts_path, sizes)
        worst = _worst(result.parity[ts_path.name])
        if not worst <= FP32_TOLERANCE:
            raise ExportError(f"{ts_path}: TorchScript differs from PyTorch by {worst:.3g}")

    if int8:
        int8_path = out / f"{name}_int8.onnx"
        calib_set, check_set = frames[:-INT8_CHECK_FRAMES], frames[-INT8_CHECK_FRAMES:]
        try:
            kept = int8_float_modules(model)
            keep = onnx_conv_nodes(model, onnx_path, kept)
            quantize_int8(onnx_path, int8_path, calib_set, keep_float=keep)
        except Exception as exc:  # ONNX Runtime's quantizer raises plain errors (no Conv, ...)
            raise ExportError(f"int8 quantization of {onnx_path.name} failed: {exc}") from exc
        result.files[int8_path.name] = int8_path
        result.float_convs[int8_path.name] = kept
        psnr, snr = check_int8(model, int8_path, check_set)
        result.parity_psnr[int8_path.name] = psnr
        result.parity_snr[int8_path.name] = snr
        if not (_least(psnr) >= INT8_MIN_PSNR and _least(snr) >= INT8_MIN_SNR):
            raise ExportError(
                f"{int8_path}: int8 output too far from PyTorch's on frames left out of "
                f"calibration (need PSNR >= {INT8_MIN_PSNR:g} dB and residual SNR >= "
                f"{INT8_MIN_SNR:g} dB): PSNR {psnr}, residual SNR {snr}"
            )
        if with_openvino:
            # What the engine runs by default on x86 CPUs (`prefer_int8`): int8 convolutions,
            # the float ones in OpenVINO's inference precision; held to the same bounds.
            # No forced-f32 run as for the float files: a forced precision makes the engine
            # load the float file instead (`prefer_int8`).
            psnr, snr, diff, precision = check_openvino_int8(model, int8_path, check_set)
            result.parity_openvino_psnr[int8_path.name] = psnr
            result.parity_openvino_snr[int8_path.name] = snr
            result.parity_openvino[int8_path.name] = diff
            result.openvino_precision = precision
            if not (_least(psnr) >= INT8_MIN_PSNR and _least(snr) >= INT8_MIN_SNR):
                raise ExportError(
                    f"{int8_path}: OpenVINO (CPU, int8, float parts in {precision}) output too "
                    f"far from PyTorch's on frames left out of calibration (need PSNR >= "
                    f"{INT8_MIN_PSNR:g} dB and residual SNR >= {INT8_MIN_SNR:g} dB): PSNR "
                    f"{psnr}, residual SNR {snr}, max abs diff {diff}"
                )

    params = sum(p.numel() for p in model.parameters())
    macs = float(model.macs_per_pixel()) if hasattr(model, "macs_per_pixel") else 0.0
    multiple = int(getattr(model, "multiple", 1))
    device = device or ("gpu" if variant == "hq" else "cpu")
    digest = digest or config_digest(config)
    entries = {}
    # methods with a column of their own in the evaluation summary (named by file stem)
    named = {m for st in (metrics or {}).get("sets", {}).values() for m in st.get("methods", {})}
    for fname, path in result.files.items():
        entries[fname] = manifest_entry(
            path,
            fmt="torchscript" if path.suffix == ".ts" else "onnx",
            precision=_precision_of(fname, name),
            variant=variant,
            device=device,
            multiple=multiple,
            params=params,
            macs_per_pixel=macs,
            metrics=metrics or {},
            digest=digest,
            parity=result.parity.get(fname),
            config_history=config_history,
        )
        if fname in result.parity_psnr:
            entries[fname]["parity_psnr_db"] = result.parity_psnr[fname]
            entries[fname]["parity_residual_snr_db"] = result.parity_snr[fname]
            entries[fname]["float_convs"] = result.float_convs[fname]
            # What the engine pairs it with its float file by (the config digest alone also
            # matched an int8 file of another run of the same config).
            entries[fname]["quantized_from"] = sha256_file(onnx_path)
        if fname in result.parity_openvino:
            # extra key, absent where OpenVINO was not installed (and in older manifests)
            entries[fname]["parity_openvino"] = _openvino_entry(result, fname)
        if entries[fname]["precision"] == "int8":
            # int8 is not bounded tightly enough by its parity to borrow the float file's
            # numbers: it keeps the summary only when the summary has its own column.
            if Path(fname).stem not in named:
                entries[fname]["metrics"] = {}
        elif metrics and fname != onnx_path.name:
            # Only the fp32 ONNX file was evaluated; the others carry its numbers because
            # their parity (above) bounds how far they can differ from it.
            entries[fname]["metrics_of"] = onnx_path.name
    measured = (metrics or {}).get("model_sha256") or {}
    # A row is named by a file stem, which the fp32 ONNX file and the TorchScript file share
    # (student.onnx, student.ts): the row is this export's when it measured either of them.
    shipped: dict[str, set[str]] = {}
    for fname, entry in entries.items():
        # A row measured on the checkpoint these files were exported from is theirs too (their
        # parity bounds the difference): `--name student_fast` of checkpoints/student_fast.pt.
        shipped.setdefault(Path(fname).stem, {checkpoint_sha256} - {None}).add(entry["sha256"])
    for fname, entry in entries.items():
        stem = Path(fname).stem
        if entry.get("metrics") and stem in measured and measured[stem] not in shipped[stem]:
            # The summary's row for this file name was measured on other bytes: shipping its
            # numbers beside these weights would misreport them.
            raise ExportError(
                f"the --metrics summary's row {stem!r} was measured on a different file "
                f"(sha256 {str(measured[stem])[:12]}…, this export {entry['sha256'][:12]}…): "
                "evaluate the exported file, then export again with that summary"
            )
    if metrics:
        # Another model's rows (student's in student_fast's summary) were shipped beside these
        # weights and went stale when that model was retrained: its own entry has its numbers.
        own = _own_rows(metrics, shipped)
        for entry in entries.values():
            if entry.get("metrics"):
                entry["metrics"] = own
    result.entries = entries
    return result


def _openvino_entry(result: ExportResult, fname: str) -> dict[str, Any]:
    """The manifest's ``parity_openvino`` of ``fname``: OpenVINO's version and default inference
    precision, max abs diffs vs eager PyTorch per check size (int8: per check frame, with PSNR
    and residual SNR in dB); where that precision is not f32 and ``fname`` is a float file,
    ``"f32": {"max_abs_diff": {...}}`` of the check with f32 forced.

    The keys of the default check keep their meaning: a reader of older manifests reads these
    the same way, and a manifest written on an f32 CPU has no ``"f32"`` key (nothing forced).
    """
    entry: dict[str, Any] = {
        "openvino": result.openvino_version,
        "inference_precision": result.openvino_precision,
        "max_abs_diff": result.parity_openvino[fname],
    }
    if fname in result.parity_openvino_psnr:
        entry["psnr_db"] = result.parity_openvino_psnr[fname]
        entry["residual_snr_db"] = result.parity_openvino_snr[fname]
    if fname in result.parity_openvino_f32:
        entry["f32"] = {"max_abs_diff": result.parity_openvino_f32[fname]}
    return entry


def folder_refusal(folder: Path) -> str | None:
    """Why ``folder`` cannot be made or written in, as a phrase (``"notes is a file, not a
    folder"``), checked on it or on the nearest of its parents that exists; None when nothing
    is in the way. Asked before the work: mkdir and the first write failed only after the
    models had loaded, in a traceback."""
    for path in (folder, *folder.parents):
        if path.exists():  # False below a file (ENOTDIR): its parent is looked at next
            if not path.is_dir():
                return f"{path} is a file, not a folder"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"cannot write in {path} (permission denied)"
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a student to ONNX (fp32, fp16) and TorchScript, checked against "
        "PyTorch at 721x1279 (ONNX files with ONNX Runtime, and with OpenVINO where it is "
        "installed), and update DIR/manifest.json. Files NAME.onnx, NAME_fp16.onnx, NAME.ts "
        "and NAME_int8.onnx already in DIR that this export does not make are removed (the "
        "engine would load them beside the new weights); nothing else is.",
    )
    p.add_argument("--checkpoint", type=Path, help="trainer checkpoint .pt ({'model', 'config'})")
    p.add_argument("--variant", help="student variant (read from the checkpoint when omitted)")
    p.add_argument(
        "--random-init", action="store_true", help="no checkpoint: seeded random weights"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="output folder (holds manifest.json)"
    )
    p.add_argument("--name", default="student", help="file stem (default: student)")
    p.add_argument(
        "--no-fp16",
        dest="fp16",
        action="store_false",
        help="skip the fp16 ONNX (and remove DIR/NAME_fp16.onnx of an earlier export)",
    )
    p.add_argument("--fp16", dest="fp16", action="store_true", default=True, help="(default)")
    p.add_argument(
        "--no-torchscript",
        dest="torchscript",
        action="store_false",
        help="skip TorchScript (and remove DIR/NAME.ts of an earlier export)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument("--device", choices=("cpu", "gpu"), help="manifest 'device' (default: hq=gpu)")
    p.add_argument("--metrics", type=Path, help="summary.json written by training.evaluate")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also NAME_int8.onnx: int8 convolutions, finest scale float; the engine's default "
        "under OpenVINO on CPUs where it runs f32 or bf16 (engine.backends.prefer_int8); "
        "without it, DIR/NAME_int8.onnx of an earlier export is removed",
    )
    p.add_argument(
        "--calib",
        type=Path,
        default=DEMO_CLIP,
        help="int8 calibration video or image folder (default: assets/demo.mp4)",
    )
    args = p.parse_args(argv)
    # Only this module's progress at INFO: libraries (onnxscript's optimiser) are chatty there.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.opset < 17:
        p.error("--opset must be >= 17")
    if args.checkpoint is None and not args.random_init:
        p.error("pass --checkpoint PATH, or --variant NAME --random-init")
    if args.checkpoint is not None and args.random_init:
        # The checkpoint was ignored without a word: random weights shipped under its name.
        p.error("--checkpoint and --random-init exclude each other: pick one")
    refusal = folder_refusal(args.out)
    if refusal is not None:
        # mkdir failed on it only after the checkpoint was read, in a traceback.
        p.error(f"--out {args.out}: {refusal}")

    try:
        _check_name(args.name)  # before a checkpoint is read
        # A checkpoint that does not fit the variant is refused like a failed parity check:
        # one line and exit status 1, not a traceback.
        metrics = _metrics_for(args.metrics)
        model, variant, config = load_student(
            args.checkpoint, variant=args.variant, random_init=args.random_init, seed=args.seed
        )
        checkpoint_sha256 = sha256_file(args.checkpoint) if args.checkpoint else None
        digest = stored_config_digest(args.checkpoint) if args.checkpoint else None
        history = stored_config_history(args.checkpoint) if args.checkpoint else []
        _check_metrics_measured(metrics, args.name, checkpoint_sha256)
        result = export_all(
            model,
            args.out,
            name=args.name,
            variant=variant,
            config=config,
            fp16=args.fp16,
            torchscript=args.torchscript,
            opset=args.opset,
            device=args.device,
            metrics=metrics,
            int8=args.int8,
            calib=args.calib,
            checkpoint_sha256=checkpoint_sha256,
            digest=digest,
            config_history=history,
        )
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    ts = f", TorchScript by {result.torchscript_method}" if result.torchscript_method else ""
    print(f"student {variant!r} -> {args.out} (ONNX exporter: {result.exporter}{ts})")
    ov = f"OpenVINO {result.openvino_precision}"
    for fname, diffs in result.parity.items():
        shown = ", ".join(f"{k}: {v:.2e}" for k, v in diffs.items())
        print(f"  {fname:28s} max abs diff vs PyTorch  {shown}")
        if fname in result.parity_openvino:
            shown = ", ".join(f"{k}: {v:.2e}" for k, v in result.parity_openvino[fname].items())
            print(f"  {'':28s} {ov}: max abs diff  {shown}")
        if fname in result.parity_openvino_f32:
            shown = ", ".join(f"{k}: {v:.2e}" for k, v in result.parity_openvino_f32[fname].items())
            print(f"  {'':28s} OpenVINO f32 (forced): max abs diff  {shown}")
    for fname, psnrs in result.parity_psnr.items():
        shown = ", ".join(
            f"{k}: {v:.1f} dB (residual {result.parity_snr[fname][k]:.1f})"
            for k, v in psnrs.items()
        )
        print(f"  {fname:28s} PSNR vs PyTorch  {shown}")
        if fname in result.parity_openvino_psnr:
            shown = ", ".join(
                f"{k}: {v:.1f} dB (residual {result.parity_openvino_snr[fname][k]:.1f}, "
                f"max abs {result.parity_openvino[fname][k]:.2e})"
                for k, v in result.parity_openvino_psnr[fname].items()
            )
            print(f"  {'':28s} {ov} + int8: PSNR  {shown}")
        print(f"  {'':28s} kept in float: {', '.join(result.float_convs[fname]) or 'none'}")
    if result.openvino_skipped:
        print(f"  OpenVINO check skipped: {result.openvino_skipped}")
    print(f"  manifest: {result.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
