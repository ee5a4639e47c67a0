"""The library functions behind the CLI, callable from Python."""
from __future__ import annotations

import os

import numpy as np
import torch

from . import artifact, examples
from .data import load_data
from .errors import NupesError
from .evaluate import EvalReport, evaluate
from .importers import import_module, import_pt2
from .ir import Graph
from .qmodel import QuantModel
from .quant.driver import quantize_graph


def load_graph(spec: str, progress: bool = True) -> tuple[Graph, str]:
    """A model spec → (graph, name): a bundled example name or a torch.export .pt2 file."""
    if spec in examples.NAMES:
        net = examples.model(spec, progress=progress)
        return import_module(net, examples.models.example_input(spec), spec), spec
    name = os.path.splitext(os.path.basename(spec))[0]
    if spec.endswith(".pt2"):
        return import_pt2(spec), name
    if spec.endswith(".tflite"):
        from .importers import import_tflite

        return import_tflite(spec), name
    if not os.path.exists(spec):
        raise NupesError(f"{spec}: no such file, and not a bundled example ({', '.join(examples.NAMES)})")
    ext = os.path.splitext(spec)[1].lower()
    hint = {".onnx": "; convert it to .tflite (e.g. onnx2tf) or export the PyTorch model with torch.export",
            ".pth": "; a state dict holds no network: load it into your nn.Module, then "
                    "torch.export.save(torch.export.export(net, (x,)), 'net.pt2') (docs/api.md)",
            ".pt": "; a pickled model cannot be loaded safely: save it with torch.export.save as a .pt2 (docs/api.md)",
            ".h5": "; convert the Keras model to .tflite with TensorFlow's TFLiteConverter",
            ".keras": "; convert the Keras model to .tflite with TensorFlow's TFLiteConverter"}.get(ext, "")
    raise NupesError(f"{spec}: unsupported model format (expected a torch.export .pt2 file, a float or int8 .tflite, "
                     f"or a bundled example name){hint}")


def quantize(model, data, method: str = "nupes", wbits: int = 4, out: str | None = None,
             overrides: dict[str, int] | None = None, seed: int = 0, progress: bool = True,
             example_input: torch.Tensor | None = None, name: str | None = None,
             flash_budget: int | str | None = None, recalibrate: bool = False,
             keep_softmax: bool | None = None, levels: int = 16, state: str = "reset") -> tuple[QuantModel, str]:
    """Quantize ``model`` calibrating on ``data``; returns the model and its hash.

    model: a bundled example name, a .pt2 / .tflite path, or a ``torch.nn.Module`` together with
    ``example_input`` (one batch of the input, N x C x H x W). data: a bundled name (its calib
    split), an .npz path (its ``x``), or a float32 array shaped as the model takes it. Writes
    ``out`` atomically when given. flash_budget: bytes (or a size such as '24K'): per-layer bits
    chosen so the model's flash fits it (``overrides`` then pins layers); see docs/mixed_precision.md.
    An int8 .tflite keeps its own activation quantization (and at uniform W8 its weights: the file's
    model exactly), so ``data`` may be None for data-free methods; ``recalibrate`` computes the
    activation quantization again from ``data`` instead. keep_softmax: a final Softmax runs on the
    device (int8 probabilities) instead of the caller getting logits; default only for a kept int8 file.
    levels: 16 (int16 table levels) or 8 (int8 levels times a power of two: Helium's; quantize_graph).
    state: "reset" (every inference from the reset state) or "carry" (an LSTM's / SVDF's state carried
    from one inference to the next, as TFLite Micro runs a streaming model: nupes_edge/state.py).
    """
    torch.set_num_threads(int(os.environ.get("NUPES_EDGE_THREADS", "1")))
    if isinstance(model, torch.nn.Module):
        if example_input is None:
            raise NupesError("quantize(nn.Module): pass example_input, one batch of the model's input")
        graph, name = import_module(model.eval(), example_input, name or type(model).__name__), name or type(model).__name__
    else:
        graph, name = load_graph(model, progress)
    if data is None:
        x = None
    elif isinstance(data, str):
        x, _ = load_data(data, "calib", graph.input_shape, layout=graph.input_layout)
    else:
        from .data import to_graph_layout

        x = to_graph_layout(np.ascontiguousarray(data, np.float32), graph.input_shape, graph.input_layout, "data")
        if tuple(x.shape[1:]) != tuple(graph.input_shape):
            raise NupesError(f"calibration data has shape {list(x.shape)}, the model takes N×{list(graph.input_shape)}")
        data = f"array {list(x.shape)}"
    if isinstance(flash_budget, str):
        from .quant.mixed import parse_size

        try:
            flash_budget = parse_size(flash_budget)
        except ValueError as e:
            raise NupesError(f"flash budget: {e}") from None
    qm = quantize_graph(graph, x, method, wbits, overrides, seed, progress, name=name, flash_budget=flash_budget,
                        recalibrate=recalibrate, keep_softmax=keep_softmax, levels=levels, state=state)
    # a file is recorded by its absolute path, so verify/run/analyze find it from any folder
    qm.meta["calibration"]["data"] = os.path.abspath(data) if isinstance(data, str) and os.path.isfile(data) else data
    h = artifact.save(qm, out) if out else artifact.hash_of(qm)
    qm.meta["hash"] = h
    return qm, h


def eval_model(path_or_model, data: str) -> EvalReport:
    """Evaluate a model.nq (or QuantModel) on ``data`` (the test split of a bundled name, or a whole .npz)."""
    torch.set_num_threads(int(os.environ.get("NUPES_EDGE_THREADS", "1")))
    qm = artifact.load(path_or_model) if isinstance(path_or_model, str) else path_or_model
    if data == "random":  # as verify and run take it: 200 random int8 inputs, the float model's top-1 as labels
        x, y = random_inputs(qm, 200)
    else:
        x, y = load_data(data, "test", qm.graph.input_shape, _n_classes(qm), qm.graph.input_layout)
    return evaluate(qm, x, y)


def _n_classes(qm: QuantModel) -> int:
    """The model's output size: the number of classes its labels index."""
    import math

    return math.prod(qm.graph.output_shape)


def codegen(model_path: str, out_dir: str, name: str | None = None, data: str | None = None):
    """Generate the C model library for a model.nq into ``out_dir``; returns codegen.Generated.

    Beside the library: CMakeLists.txt, model.mk and example_main.c (docs/integration.md), whose
    input is the first calibration input of ``data`` (default: the data the model was calibrated
    on, when it can still be found; else a zero input).
    The folder appears whole or not at all (written beside it, then renamed): an existing one is
    replaced only if it holds nothing but a previous codegen's files, else refused."""
    from . import codegen as cg
    from .locking import folder_lock, fresh_folder

    from .locking import checked_output_folder

    checked_output_folder(out_dir)
    if os.path.realpath(os.path.dirname(os.path.abspath(model_path))).startswith(
            os.path.realpath(out_dir).rstrip(os.sep) + os.sep):
        raise NupesError(f"{out_dir}: holds the model {model_path}; codegen replaces its output folder whole, "
                         "so give it a folder of its own")
    qm = artifact.load(model_path)
    if os.path.isdir(out_dir):
        foreign = [f for f in os.listdir(out_dir) if not (f.startswith("nupes_model_") or f in cg.OWN_FILES)]
        if foreign:
            raise NupesError(f"{out_dir}: holds other files ({', '.join(sorted(foreign)[:3])}...); codegen replaces "
                             f"its output folder whole, so give it an empty or new folder")
    elif os.path.exists(out_dir):
        raise NupesError(f"{out_dir}: exists and is not a folder")
    x = calibration_data(qm, data)
    with folder_lock(out_dir, "codegen"), fresh_folder(out_dir) as work:
        gen = cg.generate(qm, work, name, project=True, example_input=None if x is None or not len(x) else x[0])
    gen.out_dir = out_dir
    return gen


def build_host(model_path: str, out_dir: str, sanitize: bool = False, dsp: bool = False,
               ram_budget: int | str | None = None):
    """Generate and compile the host runner for a model.nq; returns build.HostBuild."""
    from . import build
    from .firmware import ram_plan

    qm = artifact.load(model_path)
    budget = _size(ram_budget)
    bands = None if budget is None else ram_plan(qm, budget)
    return build.build_host(qm, out_dir, sanitize=sanitize, dsp=dsp, inplace=bands is not None, max_bands=bands)


def _verify_inputs(qm: QuantModel, data: str | None, n: int):
    """The first ``n`` test inputs and labels (default data: the set the model was calibrated on)."""
    if n <= 0:
        raise NupesError(f"-n must be positive, got {n}")
    if data == "random":
        return random_inputs(qm, n)
    if not data and qm.meta.get("calibration", {}).get("n") == 0:
        raise NupesError("this model was quantized without data: pass --data (an .npz whose x is as the model "
                         "takes it) or --data random (random int8 inputs: bit-exactness needs no labels)")
    if not data:
        data = qm.meta.get("calibration", {}).get("data") or qm.name
        if data not in examples.NAMES:
            import sys

            print(f"nupes-edge: note: no --data: measuring on the data the model was calibrated on ({data}); "
                  "pass --data with held-out data for a fair accuracy", file=sys.stderr)
    x, y = load_data(data, "test", qm.graph.input_shape, _n_classes(qm), qm.graph.input_layout)
    return x[:n], None if y is None else y[:n]


def random_inputs(qm: QuantModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly random int8 inputs, as the real values that quantize to exactly those codes,
    and as labels the float model's own top-1 (so "top-1" reads as agreement with the float model)."""
    from . import torch_exec

    q = qm.input_q
    codes = np.random.default_rng(seed).integers(-128, 128, (n, *qm.graph.input_shape))
    x = ((codes - q.zero_point) * np.float64(q.scale)).astype(np.float32)
    from .state import carries

    y = torch_exec.run_numpy(qm.graph, x, carry=carries(qm)).reshape(n, -1).argmax(axis=1)
    return x, y


def verify_host(model_path: str, data: str | None = None, n: int = 200, out_dir: str | None = None,
                sanitize: bool = False, dsp: bool = False):
    """Build the host runner, feed it ``n`` inputs, compare with the integer reference."""
    import tempfile

    from . import build
    from .verify import compare, reference_io

    qm = artifact.load(model_path)
    x, y = _verify_inputs(qm, data, n)
    with tempfile.TemporaryDirectory(prefix="nupes-host-") as tmp:
        hb = build.build_host(qm, out_dir or tmp, sanitize=sanitize, dsp=dsp)
        dev_in, ref = reference_io(qm, x)
        out = build.run_host(hb.runner, dev_in)
    return compare(qm, x, y, ref, out)


def build_board(model_path: str, board_name: str, out_dir: str, ram_budget: int | str | None = None, before_swap=None):
    """Generate and cross-compile firmware for a board; returns firmware.FirmwareBuild.
    ``ram_budget`` (bytes or a size such as '96K'): the fastest arena plan whose arena + scratch fits it
    (firmware.ram_plan)."""
    from . import boards, firmware

    board = boards.get(board_name)
    qm = artifact.load(model_path)
    return firmware.build_firmware(qm, board, out_dir, model_file=model_path, ram_budget=_size(ram_budget),
                                   before_swap=before_swap)


def _size(value) -> int | None:
    if value is None or isinstance(value, int):
        return value
    from .quant.mixed import parse_size

    try:
        return parse_size(value)
    except ValueError as e:
        raise NupesError(f"--ram-budget: {e}") from None


def verify_port(model_path: str, url: str, data: str | None = None, n: int = 200, profile: bool = False,
                timeout: float = 5.0, progress: bool = True):
    """Verify a running board over serial (``/dev/ttyACM0`` or ``socket://host:port``)."""
    from .protocol import Client
    from .verify import verify_device

    qm = artifact.load(model_path)
    x, y = _verify_inputs(qm, data, n)
    with Client(url, timeout=timeout) as c:
        c.wait_banner()
        return verify_device(qm, c, x, y, profile=profile, progress=progress)


def run_emulated(model_path: str, board_name: str, out_dir: str, data: str | None = None, n: int = 200,
                 profile: bool = False, progress: bool = True, ram_budget: int | str | None = None):
    """Build, start the emulator, verify over its serial port, stop it. Returns (build, report)."""
    from . import boards, flash

    board = boards.get(board_name)
    if not board.emulated:
        raise NupesError(f"board '{board.name}' is real hardware: build, `nupes-edge flash --probe ...`, then "
                         f"`nupes-edge verify --port /dev/ttyACM0`")
    fb = build_board(model_path, board.name, out_dir, ram_budget)
    with flash.start_qemu(board, fb.elf, max_seconds=1800) as q:
        report = verify_port(model_path, q.url, data, n, profile, progress=progress)
    return fb, report


def export_tflite(model_path: str, out: str, fmt: str = "int8") -> int:
    """Write model.nq as a .tflite file (atomically); returns its size in bytes."""
    from . import tflite_export
    from .fileio import atomic_write_bytes

    data = tflite_export.export(artifact.load(model_path), fmt)
    atomic_write_bytes(out, data)
    return len(data)


def calibration_data(qm: QuantModel, data: str | None = None) -> np.ndarray | None:
    """``data`` (its calib split / whole .npz), else the data the model was calibrated on when it
    can still be found (a bundled name, or an .npz path that still exists); None otherwise."""
    spec = data or qm.meta.get("calibration", {}).get("data")
    if not isinstance(spec, str):
        return None
    try:
        return load_data(spec, "calib", qm.graph.input_shape, layout=qm.graph.input_layout)[0]
    except NupesError:
        if data:
            raise
        return None


def analyze(model_path: str, data: str | None = None, board_name: str | None = None, out_dir: str | None = None,
            profile: bool = False, port: str | None = None, n: int = 5):
    """The per-layer analysis (nupes_edge/analyze.py) of a model.nq; with ``board_name`` the
    firmware is built in ``out_dir`` for its real sizes, and with ``profile`` (an emulated board) or
    ``port`` (a running board) the per-layer counts of ``n`` inferences are measured."""
    from .analyze import analyze as analyze_qm

    qm = artifact.load(model_path)
    x = calibration_data(qm, data)
    sizes = counts = kind = whole = None
    if board_name and board_name != "host":
        if profile and not port:
            fb, rep = run_emulated(model_path, board_name, out_dir, n=n, profile=True, progress=False)
            counts, kind, whole = rep.profile, rep.count_kind, rep.count_last
        else:
            fb = build_board(model_path, board_name, out_dir)
        sizes = {**fb.sizes, "board": fb.board.name}
    if port:
        rep = verify_port(model_path, port, n=n, profile=True, progress=False)
        counts, kind, whole = rep.profile, rep.count_kind, rep.count_last
    label = f"--data {os.path.basename(data)}" if data else "the calibration data"
    return qm, analyze_qm(qm, x, sizes, counts, kind, label, whole)


def write_report(qm: QuantModel, analysis, path: str, layer: str | None = None) -> str:
    """The self-contained HTML report, written atomically; returns its path."""
    from .fileio import atomic_write_bytes
    from .report_html import render

    if layer is not None and layer not in {n.name for n in qm.graph.weight_nodes()}:
        raise NupesError(f"--layer: no weight layer named '{layer}' "
                         f"(layers: {', '.join(n.name for n in qm.graph.weight_nodes())})")
    atomic_write_bytes(path, render(analysis, qm, layer).encode())
    return path
