"""Inference backends and exports: torch eager, or OpenVINO on CPU; one forward over the whole crop.

OpenVINO (``pip install "volseg[openvino]"``) runs the same 3D convolutions 1.6-2x faster than
torch eager on x86 CPUs (docs/performance.md). The torch network is converted once with
``openvino.convert_model`` (dynamic batch and spatial sizes) and the IR is cached on disk, keyed
by the network's class, input channels and weights, so later processes only compile it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
EXPORT_FORMATS = ("torchscript", "onnx", "openvino")
IR_REVISION = "r2"  # bump when export_network changes the OpenVINO graph it writes, so cached IRs are rebuilt


def openvino_available() -> bool:
    """True where the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """``"auto"`` -> ``"openvino"`` on CPU where OpenVINO is installed, else ``"torch"``.

    ``$VOLSEG_BACKEND`` replaces ``"auto"`` (a bundle's default) where set; None means ``"auto"``.

    Raises:
        ValueError: unknown backend, or ``"openvino"`` asked for on a CUDA device.
        ImportError: ``"openvino"`` asked for but not installed; the message gives the install command.
    """
    backend = backend or "auto"
    if backend == "auto":
        backend = os.environ.get("VOLSEG_BACKEND", "auto")
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "openvino" if on_cpu and openvino_available() else "torch"
    if backend == "openvino":
        if not on_cpu:
            raise ValueError(f"the openvino backend runs on CPU; device is {device}")
        if not openvino_available():
            raise ImportError('the openvino backend needs OpenVINO: pip install "volseg[openvino]"')
    return backend


def default_cache_dir() -> Path:
    """``$VOLSEG_CACHE`` or ``~/.cache/volseg``: converted models live under ``openvino/``."""
    return Path(os.environ.get("VOLSEG_CACHE", Path.home() / ".cache" / "volseg"))


def network_key(network: torch.nn.Module, in_channels: int) -> str:
    """A short hash of the network's class, input channels and weights (cache key of its IR)."""
    digest = hashlib.sha256(f"{type(network).__module__}.{type(network).__qualname__}:{in_channels}".encode())
    for name, value in network.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _quiet_loggers(levels: dict[str, int]):
    """Raise these loggers' levels for the block: the ONNX exporter's passes log every step at INFO
    (40 lines an export) and torch warns that torchvision, which VolSeg does not use, is missing."""
    saved = {name: logging.getLogger(name).level for name in levels}
    try:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _plain_copy(network: torch.nn.Module) -> torch.nn.Module:
    """The network on CPU, contiguous (not channels-last), in eval mode, for tracing."""
    import copy

    return copy.deepcopy(network).cpu().to(memory_format=torch.contiguous_format).eval()


def export_network(network: torch.nn.Module, fmt: str, path: str | Path, in_channels: int, example_size: int = 96) -> Path:
    """Write ``network`` for deployment, atomically (a temporary file, then a rename).

    Args:
        network: the torch module with its weights loaded.
        fmt: ``"torchscript"`` (MONAI ``convert_to_torchscript``, scripted; a ``.pt``/``.ts`` file), ``"onnx"``
            (``torch.onnx.export(dynamo=True, opset_version=18)`` with dynamic batch and spatial
            axes) or ``"openvino"`` (``openvino.convert_model`` IR: ``path`` is the ``.xml``, the
            weights go beside it in ``.bin``; stride-2 transposed convolutions become sub-pixel
            convolutions, :mod:`app.networks.subpixel`, 1.6x faster for MONAI's UNet on CPU).
        path: output file.
        in_channels: input channels ``C`` of ``(B, C, H, W, D)`` inputs.
        example_size: side of the cubic example input used for tracing (a multiple of 16).
            The traced exports (ONNX, OpenVINO) keep the branch the example took: feed them sides that are multiples
            of the network's divisor (16 for the 4-level U-Net, 8 for DeepLab3D at output stride
            8), as sliding windows and the bundles' whole-volume mode (``DivisiblePadd``) do.

    Returns:
        ``path``.

    Raises:
        ValueError: unknown format.
        ImportError: ONNX or OpenVINO not installed.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _plain_copy(network)
    example = torch.zeros(1, in_channels, example_size, example_size, example_size)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.tmp") as tmp:
        staged = Path(tmp) / path.name
        if fmt == "torchscript":
            from monai.networks.utils import convert_to_torchscript

            convert_to_torchscript(net, filename_or_obj=str(staged), use_trace=False)  # scripted: no size branch frozen
        elif fmt == "onnx":
            auto = torch.export.Dim.AUTO
            with _quiet_loggers({"onnx_ir": logging.WARNING, "onnxscript": logging.WARNING, "torch.onnx._internal.exporter._registration": logging.ERROR}):
                torch.onnx.export(net, (example,), str(staged), dynamo=True, opset_version=18, input_names=["image"], output_names=["pred"],
                                  dynamic_shapes=({0: auto, 2: auto, 3: auto, 4: auto},), external_data=False, verbose=False)
            name_onnx_axes(staged)
        else:
            import openvino as ov

            from app.networks.subpixel import to_subpixel

            net = to_subpixel(net)  # OpenVINO's transposed 3D convolutions are slow float32 kernels
            with warnings.catch_warnings():  # the tracer's "might not generalize" notes on the network's size checks: the traced branch is the one sliding windows take
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace")  # OpenVINO's converter traces; torch marks that deprecated
                model = ov.convert_model(net, example_input=example, input=[ov.PartialShape([-1, in_channels, -1, -1, -1])])
            ov.save_model(model, str(staged))
        for produced in sorted(Path(tmp).iterdir(), key=lambda f: f == staged):  # the main file (.xml) last
            os.replace(produced, path.parent / produced.name)
    return path


ONNX_AXES = {0: "batch", 2: "height", 3: "width", 4: "depth"}


def name_onnx_axes(path: str | Path, axes: dict[int, str] | None = None) -> None:
    """Rename, in place, the dynamic axes of an ONNX model exported by ``torch.onnx.export(dynamo=True)``.

    The exporter names each dynamic input axis after its internal symbol (``s77``, ``s53``) and
    each output axis by an expression of those (``2*(((s53 - 1)//2)) + 2``), which is what ONNX
    Runtime, Netron and the model's users see. The symbols of the first input's axes become
    ``axes`` (default :data:`ONNX_AXES`: batch, height, width, depth of ``(B, C, H, W, D)``)
    wherever they occur: inputs, outputs and intermediate value infos.

    Raises:
        ValueError: an axis of ``axes`` is not dynamic in the model's first input.
    """
    import re

    import onnx

    axes = ONNX_AXES if axes is None else axes
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    symbols = {}
    for axis, name in axes.items():
        if not dims[axis].dim_param:
            raise ValueError(f"{path}: axis {axis} of input '{model.graph.input[0].name}' is not dynamic (size {dims[axis].dim_value})")
        symbols[dims[axis].dim_param] = name
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, symbols)) + r")\b")
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: symbols[m.group(1)], dim.dim_param)
    onnx.save(model, str(path))


class OpenVINONetwork(torch.nn.Module):
    """Run a torch network through OpenVINO on CPU: ``(B, C, H, W, D)`` float32 in, logits out.

    The network is converted once (``openvino.convert_model``, dynamic batch and spatial sizes)
    and the IR is cached under ``cache_dir/openvino/<key>-<IR_REVISION>-ov<version>/`` (see :func:`network_key`); compiled
    kernels are cached by OpenVINO itself (``CACHE_DIR``). Outputs match torch to about 1e-2 in
    logits (OpenVINO's instance norm sums in another order): compare labels, not bits.

    Args:
        network: the torch network with its weights loaded.
        in_channels: input channels.
        cache_dir: cache root (default :func:`default_cache_dir`).
        precision: OpenVINO ``INFERENCE_PRECISION_HINT``. Explicitly ``"f32"`` by default: on a
            CPU with AVX-512 BF16 OpenVINO would otherwise run in bf16 and give labels that differ
            by a few hundred voxels per case from the same model on another CPU. The precision
            used is in ``self.precision`` (and in the run record).
        ir: an int8 IR made from these weights (:func:`app.inference.int8.find_int8_ir`) to run
            instead of converting ``network``; ``self.precision`` is then ``"int8"``.
        input_shape: the ``(B, C, H, W, D)`` input the caller will mostly send (a sliding window's
            ``(sw_batch_size, C, *roi_size)``): the model is compiled for that static shape, which
            OpenVINO's CPU plugin runs faster than the dynamic one (docs/performance.md); any
            other shape runs the dynamic model, compiled on first use. None: dynamic only.

    Raises:
        ImportError: OpenVINO is not installed.
    """

    def __init__(self, network: torch.nn.Module | None, in_channels: int, cache_dir: str | Path | None = None, precision: str = "f32",
                 ir: str | Path | None = None, input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        import openvino as ov

        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if ir is not None:
            xml = Path(ir)
        else:
            if network is None:
                raise ValueError("OpenVINONetwork needs a network or an IR")
            key = f"{network_key(network, in_channels)}-{IR_REVISION}-ov{ov.__version__.split('-')[0]}"
            xml = root / "openvino" / key / "model.xml"
            if not xml.is_file():
                logger.info("converting the network to OpenVINO once (cached in %s)", xml.parent)
                export_network(network, "openvino", xml, in_channels)
        self._core = ov.Core()
        self._config = {"CACHE_DIR": str(root / "openvino" / "kernels"), "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": precision}
        self.xml = xml
        self.input_shape = tuple(int(n) for n in input_shape) if input_shape is not None else None
        self.compiled = self._compile(self.input_shape)
        self._dynamic = None if self.input_shape is not None else self.compiled
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = "int8" if ir is not None else (hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint))  # "f32", "bf16"

    def _compile(self, shape: tuple[int, ...] | None) -> object:
        """The IR compiled for the CPU: for ``shape`` only (static), or for any shape (None)."""
        model = self._core.read_model(str(self.xml))
        if shape is not None:
            model.reshape(list(shape))
        return self._core.compile_model(model, "CPU", self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().contiguous().cpu().numpy()
        if self.input_shape is not None and array.shape != self.input_shape:
            if self._dynamic is None:
                self._dynamic = self._compile(None)
            return torch.from_numpy(self._dynamic(array)[0])
        return torch.from_numpy(self.compiled(array)[0])
