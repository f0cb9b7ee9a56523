"""Small models that honour the SharpCam model contract, built for tests (no trained weights).

The ONNX graphs are written with `onnx.helper` (no torch needed); the TorchScript twins are
built from the same seeded numpy weights, so the two formats compute the same function.

Every graph follows the contract in docs/ARCHITECTURE.md: input `input` float32 `(1, 3, H, W)`
in [0, 1] with dynamic H and W, output `output` of the same shape clamped to [0, 1]. Inside, the
frame is edge-padded up to `multiple`, processed, cropped back and clamped, so odd sizes really
go through the padding path.

Kinds:
  * ``identity`` — pad, crop, clamp: output equals input.
  * ``sharpen``  — depthwise 3x3 sharpening convolution.
  * ``conv``     — a small residual conv stack with a stride-2 stage and a pixel shuffle
                   (about 940 multiply-adds per pixel), a stand-in for a real student.

    make_onnx_model(tmp_path / "m.onnx", kind="conv")
    write_manifest(tmp_path, {"m.onnx": {}})
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("identity", "sharpen", "conv")
BAD_PROBLEMS = (
    "two_inputs",
    "two_outputs",
    "channels",
    "rank",
    "nhwc",
    "halves",
    "one_channel",
    "unpadded",
)

# conv stack: (out_channels, in_channels, stride); the last stage feeds a pixel shuffle of 2.
_CONV_STAGES = ((8, 3, 1), (16, 8, 2), (12, 16, 1))


def conv_macs_per_pixel() -> float:
    """Multiply-adds per output pixel of the ``conv`` kind (the half-res stages count 1/4)."""
    macs = 0.0
    res = 1.0
    for cout, cin, stride in _CONV_STAGES:
        res /= stride * stride
        macs += cout * cin * 9 * res
    return macs


def _weights(kind: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded (weight, bias) pairs per conv layer; shared by the ONNX and TorchScript builders."""
    if kind == "identity":
        return []
    if kind == "sharpen":
        delta = np.zeros((3, 3), np.float32)
        delta[1, 1] = 1.0
        box = np.full((3, 3), 1.0 / 9.0, np.float32)
        k = delta * 1.8 - box * 0.8  # input + 0.8 * (input - local mean)
        return [(np.stack([k[None]] * 3).astype(np.float32), np.zeros(3, np.float32))]
    if kind == "conv":
        rng = np.random.default_rng(seed)
        layers = []
        for i, (cout, cin, _stride) in enumerate(_CONV_STAGES):
            # He init keeps activations alive; the last layer is scaled down so the residual
            # is a visible correction (std ~0.05) rather than noise that saturates the clamp.
            scale = np.sqrt(2.0 / (cin * 9)) * (0.15 if i == len(_CONV_STAGES) - 1 else 1.0)
            w = (rng.standard_normal((cout, cin, 3, 3)) * scale).astype(np.float32)
            b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
            layers.append((w, b))
        return layers
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def make_onnx_model(
    path: str | Path,
    kind: str = "identity",
    multiple: int = 8,
    *,
    dtype: str = "float32",
    seed: int = 0,
) -> Path:
    """Write a contract-conforming ONNX model and return its path.

    Args:
        path: file to write.
        kind: ``identity`` | ``sharpen`` | ``conv`` (see module docstring).
        multiple: the graph pads H and W up to this multiple internally (``conv`` needs it even).
        dtype: ``float32`` or ``float16`` (an fp16 variant: half input and output, fp32 inside).
        seed: weight seed for ``conv``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind == "conv" and multiple % 2:
        raise ValueError("kind='conv' has a stride-2 stage: multiple must be even")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    x = "input"
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT))
        x = "x32"

    # pad = (multiple - hw % multiple) % multiple, computed from the runtime shape.
    m = const("mult", np.array([multiple, multiple], np.int64))
    nodes += [
        helper.make_node("Shape", [x], ["shape"]),
        helper.make_node(
            "Slice",
            ["shape", const("s2", np.array([2], np.int64)), const("s4", np.array([4], np.int64))],
            ["hw"],
        ),
        helper.make_node("Mod", ["hw", m], ["hw_mod"]),
        helper.make_node("Sub", [m, "hw_mod"], ["pad_raw"]),
        helper.make_node("Mod", ["pad_raw", m], ["pad_hw"]),
        helper.make_node(
            "Concat", [const("zeros6", np.zeros(6, np.int64)), "pad_hw"], ["pads"], axis=0
        ),
        helper.make_node("Pad", [x, "pads"], ["padded"], mode="edge"),
    ]

    body = "padded"
    layers = _weights(kind, seed)
    if kind == "sharpen":
        w, b = layers[0]
        nodes.append(
            helper.make_node(
                "Conv", [body, const("w0", w), const("b0", b)], ["sharp"], group=3, pads=[1] * 4
            )
        )
        body = "sharp"
    elif kind == "conv":
        cur = body
        for i, ((w, b), (_cout, _cin, stride)) in enumerate(zip(layers, _CONV_STAGES, strict=True)):
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, const(f"w{i}", w), const(f"b{i}", b)],
                    [f"c{i}"],
                    pads=[1] * 4,
                    strides=[stride, stride],
                )
            )
            cur = f"c{i}"
            if i < len(layers) - 1:
                nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
                cur = f"r{i}"
        nodes += [
            helper.make_node("DepthToSpace", [cur], ["shuffled"], blocksize=2, mode="CRD"),
            helper.make_node("Add", ["padded", "shuffled"], ["residual"]),
        ]
        body = "residual"

    final = "output" if dtype == "float32" else "out32"
    nodes += [
        helper.make_node(
            "Slice",
            [body, const("zeros2", np.zeros(2, np.int64)), "hw", const("axes23", np.array([2, 3]))],
            ["cropped"],
        ),
        helper.make_node(
            "Clip",
            [
                "cropped",
                const("lo", np.array(0.0, np.float32)),
                const("hi", np.array(1.0, np.float32)),
            ],
            [final],
        ),
    ]
    if dtype == "float16":
        nodes.append(helper.make_node("Cast", ["out32"], ["output"], to=TensorProto.FLOAT16))

    shape = [1, 3, "H", "W"]
    graph = helper.make_graph(
        nodes,
        f"contract_{kind}",
        [helper.make_tensor_value_info("input", elem, shape)],
        [helper.make_tensor_value_info("output", elem, shape)],
        initializer=inits,
    )
    return _save_onnx(graph, path)


def _save_onnx(graph: Any, path: str | Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by runtimes older than the onnx package that wrote it
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_external_data_model(path: str | Path, *, one_file: bool = True, seed: int = 0) -> Path:
    """A tiny torch conv (3 -> 3 channels, dynamic H and W) exported to ONNX at ``path``, its
    tensors moved into ONNX external data files beside it: ``NAME.data`` with ``one_file``, else
    one file per tensor named by the tensor (what ``onnx.save(..., save_as_external_data=True)``
    writes for large models). Needs torch and onnx."""
    import onnx
    import torch

    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            conv,
            (torch.rand(1, 3, 16, 16),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}},
            dynamo=False,  # fast, and writes no side file of its own
        )
    onnx.save(
        onnx.load(str(path)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location=f"{path.name}.data" if one_file else None,
        size_threshold=0,  # the bias too: a few bytes, but still weights outside the graph
    )
    return path


def make_bad_onnx_model(path: str | Path, problem: str) -> Path:
    """Write an ONNX model that breaks the contract in one way.

    problem: ``two_inputs`` | ``two_outputs`` | ``channels`` (4-channel input) |
    ``rank`` (3-D input ``(3, H, W)``) | ``nhwc`` (channels last with dynamic N, H and W, as
    TensorFlow models come: ``(N, H, W, 3)``, a 1x1 conv between two transposes) |
    ``halves`` (a 2x2 average pool declared ``(n, c, h, w)``: nothing declared says it is
    wrong, so it loads, and every frame then comes back half its size) |
    ``one_channel`` (the channels' mean, declared ``(n, c, h, w)``: a grey frame as large as
    the input) | ``unpadded`` (``x + 0 * up(pool(x))``, a half-resolution branch added back
    with no padding first, as a U-Net exported without its padding: the identity at even H
    and W, a broadcast error at odd ones).
    """
    from onnx import TensorProto, helper, numpy_helper

    def vi(name: str, shape: list) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    nchw = [1, 3, "H", "W"]
    if problem == "two_inputs":
        nodes = [helper.make_node("Add", ["input", "extra"], ["output"])]
        inputs, outputs = [vi("input", nchw), vi("extra", nchw)], [vi("output", nchw)]
    elif problem == "two_outputs":
        nodes = [
            helper.make_node("Identity", ["input"], ["output"]),
            helper.make_node("Identity", ["input"], ["extra"]),
        ]
        inputs, outputs = [vi("input", nchw)], [vi("output", nchw), vi("extra", nchw)]
    elif problem == "channels":
        shape = [1, 4, "H", "W"]
        nodes = [helper.make_node("Identity", ["input"], ["output"])]
        inputs, outputs = [vi("input", shape)], [vi("output", shape)]
    elif problem == "rank":
        shape = [3, "H", "W"]
        nodes = [helper.make_node("Identity", ["input"], ["output"])]
        inputs, outputs = [vi("input", shape)], [vi("output", shape)]
    elif problem == "nhwc":
        shape = ["N", "H", "W", 3]
        eye = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
        nodes = [
            helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "w"], ["conv"]),
            helper.make_node("Transpose", ["conv"], ["output"], perm=[0, 2, 3, 1]),
        ]
        inputs, outputs = [vi("input", shape)], [vi("output", shape)]
        graph = helper.make_graph(nodes, "bad_nhwc", inputs, outputs, initializer=[eye])
        return _save_onnx(graph, path)
    elif problem == "halves":
        nodes = [
            helper.make_node(
                "AveragePool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2]
            )
        ]
        inputs, outputs = [vi("input", nchw)], [vi("output", ["n", "c", "h", "w"])]
    elif problem == "one_channel":
        nodes = [helper.make_node("ReduceMean", ["input"], ["output"], axes=[1], keepdims=1)]
        inputs, outputs = [vi("input", nchw)], [vi("output", ["n", "c", "h", "w"])]
    elif problem == "unpadded":
        consts = [
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ]
        nodes = [
            helper.make_node(
                "AveragePool", ["input"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]
            ),
            helper.make_node("Resize", ["pool", "", "scales"], ["up"], mode="nearest"),
            helper.make_node("Mul", ["up", "zero"], ["branch"]),
            helper.make_node("Add", ["input", "branch"], ["output"]),
        ]
        inputs, outputs = [vi("input", nchw)], [vi("output", nchw)]
        graph = helper.make_graph(nodes, "bad_unpadded", inputs, outputs, initializer=consts)
        return _save_onnx(graph, path)
    else:
        raise ValueError(f"unknown problem {problem!r}; expected one of {BAD_PROBLEMS}")
    return _save_onnx(helper.make_graph(nodes, f"bad_{problem}", inputs, outputs), path)


def make_torch_module(kind: str = "identity", multiple: int = 8, *, seed: int = 0) -> Any:
    """The eager `torch.nn.Module` twin of `make_onnx_model` (same weights, same function).

    forward: `(1, 3, H, W)` float in [0, 1] -> `(1, 3, H, W)` float in [0, 1].
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    layers = _weights(kind, seed)

    class ContractNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.multiple = multiple
            self.kind = kind
            self.convs = nn.ModuleList()
            stages = _CONV_STAGES if kind == "conv" else ((3, 1, 1),) * len(layers)
            for (w, b), (_cout, _cin, stride) in zip(layers, stages, strict=True):
                groups = 3 if kind == "sharpen" else 1
                conv = nn.Conv2d(
                    w.shape[1] * groups, w.shape[0], 3, stride=stride, padding=1, groups=groups
                )
                conv.weight.data = torch.from_numpy(w.copy())
                conv.bias.data = torch.from_numpy(b.copy())
                self.convs.append(conv)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2], x.shape[-1]
            ph = (self.multiple - h % self.multiple) % self.multiple
            pw = (self.multiple - w % self.multiple) % self.multiple
            y = F.pad(x, (0, pw, 0, ph), mode="replicate")
            if self.kind == "sharpen":
                for conv in self.convs:
                    y = conv(y)
            elif self.kind == "conv":
                z = y
                n = len(self.convs)
                for i, conv in enumerate(self.convs):
                    z = conv(z)
                    if i < n - 1:
                        z = torch.relu(z)
                y = y + F.pixel_shuffle(z, 2)
            return y[:, :, :h, :w].clamp(0.0, 1.0)

    return ContractNet().eval()


def make_torch_model(
    path: str | Path, kind: str = "identity", multiple: int = 8, *, seed: int = 0
) -> Path:
    """Write the TorchScript twin of `make_onnx_model(path, kind, multiple, seed=seed)`."""
    import torch

    if kind == "conv" and multiple % 2:
        raise ValueError("kind='conv' has a stride-2 stage: multiple must be even")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 deprecates jit
        scripted = torch.jit.script(make_torch_module(kind, multiple, seed=seed))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def write_manifest(
    directory: str | Path, files: Mapping[str, Mapping[str, Any]] | Iterable[str]
) -> Path:
    """Write `directory/manifest.json` listing `files` (names inside `directory`).

    `files` maps each name to field overrides (e.g. ``{"sha256": "0" * 64}`` to fake a
    mismatch); a plain list of names uses the real hash and contract defaults.
    """
    from engine.manifest import make_entry
    from engine.manifest import write_manifest as _write

    directory = Path(directory)
    if not isinstance(files, Mapping):
        files = {name: {} for name in files}
    entries = [make_entry(directory / name, **dict(fields)) for name, fields in files.items()]
    return _write(directory, entries)


def read_manifest_json(directory: str | Path) -> dict[str, Any]:
    """The raw JSON of `directory/manifest.json` (for tests that corrupt it by hand)."""
    return json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
