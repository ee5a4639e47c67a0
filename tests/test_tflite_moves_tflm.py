"""Operators that only rearrange values (TRANSPOSE, STRIDED_SLICE, PACK, UNPACK, SPLIT, SPLIT_V,
CONCATENATION along any axis), REDUCE_MAX, and the shape arithmetic Keras writes before a RESHAPE
(SHAPE, STRIDED_SLICE, PACK on constants, folded at import), in hand-built int8 .tflite files of
ranks 1 to 5, checked against TFLite Micro's own kernels: the kept model's integer reference, its
host build and its int8 export give exactly the bytes TFLite Micro gives on the original file."""
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as S

from nupes_edge import build, tflite_export
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_tflite_bytes
from nupes_edge.intref import run_int
from nupes_edge.layout import from_device, to_device
from nupes_edge.oracle import run_source
from nupes_edge.quant.driver import quantize_graph
from tests.test_tflite_ops_tflm import Model, inputs, reference_rows, tflm_rows


def _ints(m: Model, values) -> int:
    v = np.asarray(values, np.int32)
    return m.b.tensor(f"c{len(m.b.tensors)}", list(v.shape), np.int32, v)


def _int_act(m: Model, shape) -> int:  # an int32 tensor computed from shapes (no buffer)
    return m.b.tensor(f"s{len(m.b.tensors)}", list(shape), np.int32)


def strided_slice(m, x, out, begin, end, strides, begin_mask=0, end_mask=0, shrink=0):
    o = S.StridedSliceOptionsT()
    o.beginMask, o.endMask, o.shrinkAxisMask = begin_mask, end_mask, shrink
    m.b.op(S.BuiltinOperator.STRIDED_SLICE, 4, [x, _ints(m, begin), _ints(m, end), _ints(m, strides)], [out],
           S.BuiltinOptions.StridedSliceOptions, o)


def pack(m, xs, out, axis):
    o = S.PackOptionsT()
    o.valuesCount, o.axis = len(xs), axis
    m.b.op(S.BuiltinOperator.PACK, 2, xs, [out], S.BuiltinOptions.PackOptions, o)


def transpose(m, x, out, perm):
    m.b.op(S.BuiltinOperator.TRANSPOSE, 2, [x, _ints(m, perm)], [out], S.BuiltinOptions.TransposeOptions,
           S.TransposeOptionsT())


def concat(m, xs, out, axis):
    o = S.ConcatenationOptionsT()
    o.axis = axis
    m.b.op(S.BuiltinOperator.CONCATENATION, 2, xs, [out], S.BuiltinOptions.ConcatenationOptions, o)


def reduce_max(m, x, out, axes, keep):
    o = S.ReducerOptionsT()
    o.keepDims = keep
    m.b.op(S.BuiltinOperator.REDUCE_MAX, 2, [x, _ints(m, axes)], [out], S.BuiltinOptions.ReducerOptions, o)


def keras_flatten() -> bytes:
    """Keras' Reshape/Flatten with a free batch: SHAPE -> STRIDED_SLICE (the batch) -> PACK -> RESHAPE."""
    m = Model()
    x = m.act([1, 4, 4, 3], 0.02, -3)
    c = m.act([1, 4, 4, 5], 0.05, -128)
    m.conv(x, 0.02, (4, 4, 3), 5, c)
    shape = _int_act(m, [4])
    m.b.op(S.BuiltinOperator.SHAPE, 1, [c], [shape], S.BuiltinOptions.ShapeOptions, S.ShapeOptionsT())
    batch = _int_act(m, [])
    strided_slice(m, shape, batch, [0], [1], [1], shrink=1)
    new_shape = _int_act(m, [2])
    pack(m, [batch, _ints(m, -1)], new_shape, 0)
    flat = m.act([1, 80], 0.05, -128)
    m.b.op(S.BuiltinOperator.RESHAPE, 1, [c, new_shape], [flat])
    out = m.act([1, 4], 0.1, 3)
    m.fc(flat, 0.05, 80, 4, out)
    return m.finish(x, out)


def sequence_rearranged() -> bytes:
    """A rank-3 sequence transposed, sliced with a stride, unpacked, packed on another axis and
    concatenated along time; then a dense layer on the result."""
    m = Model()
    x = m.act([1, 6, 5], 0.03, 4)
    t = m.act([1, 5, 6], 0.03, 4)
    transpose(m, x, t, [0, 2, 1])
    s = m.act([1, 2, 6], 0.03, 4)
    strided_slice(m, t, s, [0, 1, 0], [1, 5, 6], [1, 2, 1])
    rows = [m.act([1, 6], 0.03, 4) for _ in range(2)]
    o = S.UnpackOptionsT()
    o.num, o.axis = 2, 1
    m.b.op(S.BuiltinOperator.UNPACK, 2, [s], rows, S.BuiltinOptions.UnpackOptions, o)
    p = m.act([1, 6, 2], 0.03, 4)
    pack(m, rows[::-1], p, 2)
    r = m.act([1, 4, 1], 0.03, 4)  # the reverse of time steps 0..3 of channel 2 (negative stride)
    strided_slice(m, x, r, [0, 3, 2], [1, -10, 3], [1, -1, 1], begin_mask=1, end_mask=1)
    r2 = m.act([1, 2, 6], 0.03, 4)
    transpose(m, p, r2, [0, 2, 1])
    j = m.act([1, 4, 6], 0.03, 4)
    concat(m, [r2, s], j, 1)
    flat = m.act([1, 24], 0.03, 4)
    m.reshape(j, [1, 24], flat)
    r_flat = m.act([1, 4], 0.03, 4)
    m.reshape(r, [1, 4], r_flat)
    both = m.act([1, 28], 0.03, 4)
    concat(m, [flat, r_flat], both, -1)
    out = m.act([1, 3], 0.08, -2)
    m.fc(both, 0.03, 28, 3, out)
    return m.finish(x, out)


def rank5_and_reduce_max() -> bytes:
    """A rank-5 transpose between reshapes, REDUCE_MAX over H x W (no keep_dims) and over the
    channels (keep_dims), SPLIT and SPLIT_V, and a concatenation along H."""
    m = Model()
    x = m.act([1, 4, 4, 6], 0.02, 0)
    c = m.act([1, 4, 4, 6], 0.04, -100)
    m.conv(x, 0.02, (4, 4, 6), 6, c)
    halves = [m.act([1, 4, 4, 3], 0.04, -100) for _ in range(2)]
    o = S.SplitOptionsT()
    o.numSplits = 2
    m.b.op(S.BuiltinOperator.SPLIT, 1, [_ints(m, 3), c], halves, S.BuiltinOptions.SplitOptions, o)
    tall = m.act([1, 8, 4, 3], 0.04, -100)
    concat(m, halves[::-1], tall, 1)
    five = m.act([1, 2, 4, 4, 3], 0.04, -100)
    m.reshape(tall, [1, 2, 4, 4, 3], five)
    five_t = m.act([1, 3, 4, 4, 2], 0.04, -100)
    transpose(m, five, five_t, [0, 4, 2, 3, 1])
    back = m.act([1, 8, 4, 3], 0.04, -100)
    m.reshape(five_t, [1, 8, 4, 3], back)
    parts = [m.act([1, 3, 4, 3], 0.04, -100), m.act([1, 5, 4, 3], 0.04, -100)]
    o = S.SplitVOptionsT()
    o.numSplits = 2
    m.b.op(S.BuiltinOperator.SPLIT_V, 1, [back, _ints(m, [3, -1]), _ints(m, [1])], parts,
           S.BuiltinOptions.SplitVOptions, o)
    pooled = m.act([1, 3], 0.04, -100)
    reduce_max(m, parts[1], pooled, [1, 2], False)
    chan = m.act([1, 3, 4, 1], 0.04, -100)
    reduce_max(m, parts[0], chan, [-1], True)
    flat = m.act([1, 12], 0.04, -100)
    m.reshape(chan, [1, 12], flat)
    both = m.act([1, 15], 0.04, -100)
    concat(m, [flat, pooled], both, 1)
    out = m.act([1, 4], 0.1, 0)
    m.fc(both, 0.04, 15, 4, out)
    return m.finish(x, out)


def max_min() -> bytes:
    """MAXIMUM / MINIMUM of two tensors and with one constant (a clamp), as tf.maximum(x, c) writes it."""
    m = Model()
    x = m.act([1, 4, 4, 3], 0.03, -5)
    c = m.act([1, 4, 4, 3], 0.03, -5)
    m.conv(x, 0.03, (4, 4, 3), 3, c)
    mx = m.act([1, 4, 4, 3], 0.03, -5)
    m.b.op(S.BuiltinOperator.MAXIMUM, 2, [x, c], [mx])
    lo = m.b.tensor("lo", [1], np.int8, np.array([10], np.int8), scale=0.03, zp=-5)  # the real value 0.45
    cl = m.act([1, 4, 4, 3], 0.03, -5)
    m.b.op(S.BuiltinOperator.MAXIMUM, 2, [lo, mx], [cl])
    hi = m.b.tensor("hi", [], np.int8, np.array(60, np.int8), scale=0.03, zp=-5)
    cl2 = m.act([1, 4, 4, 3], 0.03, -5)
    m.b.op(S.BuiltinOperator.MINIMUM, 2, [cl, hi], [cl2])
    mn = m.act([1, 4, 4, 3], 0.03, -5)
    m.b.op(S.BuiltinOperator.MINIMUM, 2, [cl2, x], [mn])
    flat = m.act([1, 48], 0.03, -5)
    m.reshape(mn, [1, 48], flat)
    out = m.act([1, 4], 0.1, 0)
    m.fc(flat, 0.03, 48, 4, out)
    return m.finish(x, out)


def means_over_other_axes() -> bytes:
    """MEAN over the channels (keep_dims), over H only (no keep_dims), and over all of a rank-3
    tensor's non-batch axes, each to its own output scale (QuantizedMeanOrSum)."""
    m = Model()
    x = m.act([1, 5, 4, 6], 0.04, 7)
    c = m.act([1, 5, 4, 6], 0.05, -20)
    m.conv(x, 0.04, (5, 4, 6), 6, c)
    ch = m.act([1, 5, 4, 1], 0.011, -3)
    m.mean(c, [3], True, ch)
    rows = m.act([1, 4, 6], 0.032, 9)
    m.mean(c, [1], False, rows)
    both = m.act([1, 1, 1], 0.02, -1)
    m.mean(rows, [1, 2], True, both)
    f1 = m.act([1, 20], 0.011, -3)
    m.reshape(ch, [1, 20], f1)
    f2 = m.act([1, 24], 0.032, 9)
    m.reshape(rows, [1, 24], f2)
    o1 = m.act([1, 3], 0.1, 0)
    m.fc(f1, 0.011, 20, 3, o1)
    o2 = m.act([1, 3], 0.1, 0)
    m.fc(f2, 0.032, 24, 3, o2)
    f3 = m.act([1, 1], 0.02, -1)
    m.reshape(both, [1, 1], f3)
    o3 = m.act([1, 3], 0.1, 0)
    m.fc(f3, 0.02, 1, 3, o3)
    s12 = m.act([1, 3], 0.1, 0)
    m.b.op(S.BuiltinOperator.ADD, 2, [o1, o2], [s12], S.BuiltinOptions.AddOptions, S.AddOptionsT())
    out = m.act([1, 3], 0.1, 0)
    m.b.op(S.BuiltinOperator.ADD, 2, [s12, o3], [out], S.BuiltinOptions.AddOptions, S.AddOptionsT())
    return m.finish(x, out)


def dense_on_every_time_step() -> bytes:
    """FULLY_CONNECTED on an N x T x F sequence (one row per time step, keep_num_dims) and on an N x H x
    W x C image without keep_num_dims ([H*W, units] out), as Keras writes Dense on 3-D / 4-D input."""
    m = Model()
    x = m.act([1, 6, 5], 0.04, 2)
    seq = m.act([1, 6, 7], 0.06, -10)
    wt, ws = m.weights([7, 5], axis=0)
    o = S.FullyConnectedOptionsT()
    o.keepNumDims = True
    o.fusedActivationFunction = S.ActivationFunctionType.RELU
    m.b.op(S.BuiltinOperator.FULLY_CONNECTED, 9, [x, wt, m.bias(7, 0.04, ws)], [seq],
           S.BuiltinOptions.FullyConnectedOptions, o)
    img = m.act([1, 2, 3, 7], 0.06, -10)
    m.reshape(seq, [1, 2, 3, 7], img)
    rows = m.act([6, 4], 0.05, 3)
    wt2, ws2 = m.weights([4, 7], axis=0)
    m.b.op(S.BuiltinOperator.FULLY_CONNECTED, 9, [img, wt2, m.bias(4, 0.06, ws2)], [rows],
           S.BuiltinOptions.FullyConnectedOptions, S.FullyConnectedOptionsT())
    flat = m.act([1, 24], 0.05, 3)
    m.reshape(rows, [1, 24], flat)
    out = m.act([1, 3], 0.1, 0)
    m.fc(flat, 0.05, 24, 3, out)
    return m.finish(x, out)


CASES = {"keras-flatten": keras_flatten, "sequence-rearranged": sequence_rearranged,
         "rank5-and-reduce-max": rank5_and_reduce_max, "max-min-and-clamps": max_min,
         "means-over-other-axes": means_over_other_axes, "dense-on-every-time-step": dense_on_every_time_step}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kept_model_equals_tflite_micro_on_reference_host_and_export(case, tmp_path):
    data = CASES[case]()
    g = import_tflite_bytes(data, f"{case}.tflite")
    qm = quantize_graph(g, None, "uniform", 8, name="m")
    xq = inputs(g)
    want = run_source(data, to_device(xq), qm.input_q)
    ref = reference_rows(qm, xq, False)
    np.testing.assert_array_equal(ref, want)
    hb = build.build_host(qm, str(tmp_path / "host"))
    dev = build.run_host(hb.runner, to_device(xq))
    np.testing.assert_array_equal(from_device(dev, qm.graph.output_shape), run_int(qm, xq))
    np.testing.assert_array_equal(tflm_rows(tflite_export.export(qm, "int8"), xq), want)


def test_requantized_nupes_w4_runs_the_same_moves(tmp_path):
    """Re-quantized (nupes W4, calibrated on random data), the moves keep one quantization across
    each copy, and the host build equals the integer reference."""
    g = import_tflite_bytes(rank5_and_reduce_max(), "m.tflite")
    calib = np.random.default_rng(3).uniform(-2, 2, (64, *g.input_shape)).astype(np.float32)
    qm = quantize_graph(g, calib, "nupes", 4, name="m")
    for n in qm.graph.nodes:
        if n.op in ("copy", "reduce_max"):
            assert all(qm.act[t] == qm.act[n.output] for t in n.inputs)
    xq = inputs(g, 20)
    hb = build.build_host(qm, str(tmp_path / "host"))
    dev = build.run_host(hb.runner, to_device(xq))
    np.testing.assert_array_equal(from_device(dev, qm.graph.output_shape), run_int(qm, xq))


def test_moves_that_do_not_fit_are_named():
    m = Model()
    x = m.act([1, 6, 5], 0.03, 4)
    t = m.act([1, 6, 5], 0.03, 4)  # a transpose to [1, 5, 6] declared with the input's shape
    transpose(m, x, t, [0, 2, 1])
    with pytest.raises(NupesError, match=r"operator 0 \(TRANSPOSE\).*declares \[1, 6, 5\]"):
        import_tflite_bytes(m.finish(x, t), "bad.tflite")
    m = Model()
    x = m.act([1, 6, 5], 0.03, 4)
    t = m.act([1, 5, 6], 0.03, 4)
    transpose(m, x, t, [0, 2, 2])
    with pytest.raises(NupesError, match=r"permutation \[0, 2, 2\]"):
        import_tflite_bytes(m.finish(x, t), "bad.tflite")


def test_a_tampered_move_is_refused_before_any_code_is_generated():
    """A .nq is untrusted: a move reaching outside its tensor, or leaving output bytes unwritten, is
    refused by the shape check (the C loops never see it)."""
    from nupes_edge.ir import infer_shapes

    g = import_tflite_bytes(sequence_rearranged(), "m.tflite")
    node = next(n for n in g.nodes if n.op == "copy")
    good = [list(mv) for mv in node.attrs["moves"]]
    node.attrs["moves"][0][5] = 10_000  # src_off
    with pytest.raises(NupesError, match="outside"):
        infer_shapes(g)
    node.attrs["moves"] = [list(mv) for mv in good]
    node.attrs["moves"][0][4] -= 1  # one output value never written
    with pytest.raises(NupesError, match="exactly once"):
        infer_shapes(g)


@pytest.mark.skipif(__import__("shutil").which("qemu-system-arm") is None, reason="make setup installs qemu-system-arm")
@pytest.mark.parametrize("case", ["rank5-and-reduce-max", "means-over-other-axes"])
def test_moves_on_the_emulated_stm32(case, tmp_path):
    """The C moves, REDUCE_MAX and MEAN over other axes on the board: equal to the reference and to
    TFLite Micro on the file."""
    from nupes_edge import api, artifact

    qm = quantize_graph(import_tflite_bytes(CASES[case](), "m.tflite"), None, "uniform", 8, name="m")
    artifact.save(qm, str(tmp_path / "m.nq"))
    _, rep = api.run_emulated(str(tmp_path / "m.nq"), "stm32", str(tmp_path / "out"), "random", 10, progress=False)
    assert rep.n == 10 and rep.mismatches == 0 and rep.original["mismatches"] == 0



@pytest.mark.parametrize("size,align,half", [((8, 6), False, False), ((8, 6), False, True), ((8, 6), True, False),
                                             ((2, 3), False, False)])
def test_resize_nearest_neighbor_equals_tflite_micro(size, align, half, tmp_path):
    """RESIZE_NEAREST_NEIGHBOR (x2 up, with each corner/centre option, and x1/2 down) is a byte move:
    the kept model, its host build and its export give TFLite Micro's bytes."""
    m = Model()
    x = m.act([1, 4, 3, 5], 0.05, 3)
    y = m.act([1, *size, 5], 0.05, 3)
    o = S.ResizeNearestNeighborOptionsT()
    o.alignCorners, o.halfPixelCenters = align, half
    m.b.op(S.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR, 3, [x, _ints(m, list(size))], [y],
           S.BuiltinOptions.ResizeNearestNeighborOptions, o)
    flat = m.act([1, size[0] * size[1] * 5], 0.05, 3)
    m.reshape(y, [1, size[0] * size[1] * 5], flat)
    out = m.act([1, 3], 0.1, 0)
    m.fc(flat, 0.05, size[0] * size[1] * 5, 3, out)
    data = m.finish(x, out)
    g = import_tflite_bytes(data, "resize.tflite")
    qm = quantize_graph(g, None, "uniform", 8, name="m")
    xq = inputs(g)
    want = run_source(data, to_device(xq), qm.input_q)
    np.testing.assert_array_equal(reference_rows(qm, xq, False), want)
    hb = build.build_host(qm, str(tmp_path / "host"))
    np.testing.assert_array_equal(from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape),
                                  run_int(qm, xq))
    np.testing.assert_array_equal(tflm_rows(tflite_export.export(qm, "int8"), xq), want)
