"""A model file is untrusted input: nothing in it reaches generated C except derived identifiers,
escaped text and checked numbers (codegen/cvalues.py), and crafted files are refused (exit 2)."""
import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nupes_edge import artifact, codegen
from nupes_edge.errors import NupesError
from nupes_edge.quant.driver import quantize_graph
from tests.test_cli import cli

INJECT = ('conv2d", 0 }; int system(const char *); __attribute__((constructor)) static void f(void) '
          '{ system("touch PWNED"); } static const char *x[] = { "')


@pytest.fixture(scope="module")
def model(digits_graph, digits_calib):
    return quantize_graph(digits_graph, digits_calib, "uniform", 8, name="digits")


def edit_manifest(qm, edit) -> bytes:
    """The model file with its manifest changed by ``edit`` (the arrays kept)."""
    src = zipfile.ZipFile(io.BytesIO(artifact.dumps(qm)))
    m = json.loads(src.read("manifest.json"))
    edit(m)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.namelist():
            z.writestr(item, json.dumps(m).encode() if item == "manifest.json" else src.read(item))
    return artifact.reseal(out.getvalue())


def rename_node(m, old, new):
    for d in m["graph"]["nodes"]:
        if d["name"] == old:
            d["name"] = new
    for section in ("weights", "params"):
        if old in m[section]:
            m[section][new] = m[section].pop(old)


def first_param(m, type_name):
    return next(v for v in m["params"].values() if v["type"] == type_name)


CRAFTED = {
    "node name closes a C string": lambda m: rename_node(m, "conv2d", INJECT),
    "node name with a newline and #include": lambda m: rename_node(m, "conv2d", 'x\n#include "/etc/hostname"\n'),
    "method closes a comment": lambda m: m.__setitem__("method", "uniform */ int evil; /*"),
    "act_max spliced as text": lambda m: first_param(m, "IntLayer").__setitem__("act_max", "127 }; int evil; //"),
    "G spliced as text": lambda m: first_param(m, "IntLayer").__setitem__("G", "0 */ int evil; /*"),
    "zero point infinite": lambda m: next(iter(m["act"].values())).__setitem__("zero_point", float("inf")),
    # values of the wrong type that used to reach the code as they were (exit 3)
    "groups a float": lambda m: next(d for d in m["graph"]["nodes"] if d["op"] == "conv2d")["attrs"].__setitem__(
        "groups", 1.0),
    "stride a string": lambda m: next(d for d in m["graph"]["nodes"] if d["op"] == "conv2d")["attrs"].__setitem__(
        "stride", "11"),
    "output is the input": lambda m: m["graph"].__setitem__("output_name", m["graph"]["input_name"]),
    "calibration a string": lambda m: m["meta"].__setitem__("calibration", "abc"),
    "kept_from_file a list": lambda m: m["meta"].__setitem__("kept_from_file", [1]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_model_files_are_refused_and_run_nothing(model, tmp_path, case):
    (tmp_path / "evil.nq").write_bytes(edit_manifest(model, CRAFTED[case]))
    r = cli("verify", "--board", "host", "evil.nq", "-n", "4", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("nupes-edge: error:")
    assert not (tmp_path / "PWNED").exists()


def test_a_lut_cut_short_is_refused_before_any_c_is_written(model, tmp_path):
    qm = artifact.loads(artifact.dumps(model))
    qm.params["conv2d"].lut = qm.params["conv2d"].lut[:1]
    with pytest.raises(NupesError, match="lut has 1 entries"):
        codegen.generate(qm, str(tmp_path / "src"))
    assert not (tmp_path / "src").exists()


def test_text_fields_reach_c_only_escaped(model):
    qm = artifact.loads(artifact.dumps(model))
    qm.meta["name"] = 'evil */ #include "/etc/passwd" /* ??/'
    _, files = codegen.render(qm, name="digits")
    header = files["nupes_model_digits.h"]
    assert "#include \"/etc/passwd\"" not in header and "??/" not in header
    assert header.count("*/") == header.count("/*")


def strip_comments_and_strings(src: str) -> str:
    """The C token stream with every comment replaced by a space and every string literal by ""."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            assert j >= 0, "unterminated comment"
            out.append(" ")
            i = j + 2
        elif src[i] == '"':
            j = i + 1
            while src[j] != '"':
                assert src[j] != "\n", "newline inside a string literal"
                j += 2 if src[j] == "\\" else 1
            out.append('""')
            i = j + 1
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=120))
def test_random_unicode_names_never_change_the_token_structure(model, name):
    """Node and model names from the file only ever appear inside comments and string literals."""
    qm = artifact.loads(artifact.dumps(model))
    baseline = {k: strip_comments_and_strings(v) for k, v in codegen.render(qm, name="m")[1].items()}
    node = qm.graph.nodes[0]
    assume(name not in {n.name for n in qm.graph.nodes[1:]})  # a duplicate name is a different model
    node.name = name  # codegen itself must hold even for names the loader would refuse
    qm.params[name] = qm.params.pop("conv2d")
    qm.meta["name"] = name
    qm.method = name
    _, files = codegen.render(qm, name="m")
    assert {k: strip_comments_and_strings(v) for k, v in files.items()} == baseline


@pytest.mark.parametrize("name", ["nupes_kernels", "nupes_dot", "board_config", "app_model"])
def test_no_model_name_shadows_a_runtime_or_board_file(model, name):
    _, files = codegen.render(model, name=name)
    runtime = {"nupes_kernels.h", "nupes_dot.h", "nupes_dsp.h", "nupes_fixedpoint.h", "nupes_window.h",
               "board_config.h", "app_model.h", "nupes_board.h"}
    assert not runtime & set(files)
    assert all(f.startswith("nupes_model_") for f in files)


@pytest.mark.parametrize("name", ["kernels", "dot", "board"])
def test_a_model_named_like_a_runtime_header_compiles(model, tmp_path, name):
    """The model header's include guard is NUPES_MODEL_<NAME>_H: a model named 'kernels' no longer
    switches off the runtime's nupes_kernels.h (it failed to compile, exit 3)."""
    from nupes_edge import build

    qm = artifact.loads(artifact.dumps(model))
    qm.meta["name"] = name
    from nupes_edge.intref import run_int
    from nupes_edge.layout import from_device, to_device

    hb = build.build_host(qm, str(tmp_path / "b"))
    xq = np.random.default_rng(0).integers(-128, 128, (4, *qm.graph.input_shape)).astype(np.int8)
    got = from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
    np.testing.assert_array_equal(got, run_int(qm, xq))


def test_quantize_never_writes_a_model_that_later_commands_refuse(model, tmp_path):
    """An infinite activation scale (a float model with an infinite range) used to be written, then
    refused by every later command: now the write itself is refused and nothing is left."""
    from nupes_edge.quant.types import ActQuant

    qm = artifact.loads(artifact.dumps(model))
    qm.act[qm.graph.output_name] = ActQuant(float("inf"), 0)
    with pytest.raises(NupesError, match="cannot be written.*activation scale 'inf'"):
        artifact.save(qm, str(tmp_path / "m.nq"))
    assert not (tmp_path / "m.nq").exists()


def test_generated_numbers_are_checked(model):
    qm = artifact.loads(artifact.dumps(model))
    qm.params["conv2d"].shift = np.full_like(qm.params["conv2d"].shift, 40)
    with pytest.raises(NupesError, match="shift"):
        codegen.render(qm)
    qm = artifact.loads(artifact.dumps(model))
    qm.params["conv2d"].bias = qm.params["conv2d"].bias.astype("U12")
    with pytest.raises(NupesError, match="bias: expected an integer array"):
        codegen.render(qm)


def rewrite(qm, edit_manifest_fn=None, arrays=None) -> bytes:
    """The model file with its manifest and/or some arrays replaced (re-sealed)."""
    src = zipfile.ZipFile(io.BytesIO(artifact.dumps(qm)))
    m = json.loads(src.read("manifest.json"))
    arrays = arrays or {}
    if edit_manifest_fn:
        edit_manifest_fn(m)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.namelist():
            key = item[len("arrays/"):-len(".npy")] if item.startswith("arrays/") else None
            data = json.dumps(m).encode() if item == "manifest.json" else arrays.get(key, src.read(item))
            z.writestr(item, data)
    return artifact.reseal(out.getvalue())


def test_memory_bombs_are_refused_before_allocation(model, tmp_path):
    import time

    import numpy as np

    bombs = {}
    big = io.BytesIO()  # a manifest that inflates to 64 MiB from a few KB
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", b" " * (64 << 20))
    bombs["inflating manifest"] = (big.getvalue(), "unpacks to")
    deep = io.BytesIO()
    with zipfile.ZipFile(deep, "w") as z:
        z.writestr("manifest.json", b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    bombs["deep nesting"] = (deep.getvalue(), "nested too deeply")
    key = "params/conv2d.bias"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i4", "fortran_order": False, "shape": (1 << 40,)})
    bombs["npy header declaring 4 TiB"] = (rewrite(model, arrays={key: b"\x93NUMPY" + header.getvalue()[6:] + b"\0" * 64}),
                                           "declares shape")
    for name, (data, msg) in bombs.items():
        p = tmp_path / f"{name.replace(' ', '_')}.nq"
        p.write_bytes(data)
        t = time.perf_counter()
        with pytest.raises(NupesError, match=msg):
            artifact.load(str(p))
        assert time.perf_counter() - t < 5, name


def test_integer_parameters_are_checked_at_load(model, tmp_path):
    import numpy as np

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()

    p = model.params["conv2d"]
    cases = {
        "lut has 1 entries": {"params/conv2d.lut": npy(p.lut[:1])},
        "acc_bound does not match": {"params/conv2d.acc_bound": npy(p.acc_bound // 2)},
        "bias: values outside": {"params/conv2d.bias": npy(np.full(p.bias.shape, 2**40, np.int64))},
        "accumulator can overflow": {"params/conv2d.bias": npy(np.full(p.bias.shape, 2**31 - 1, np.int32))},
    }
    for msg, arrays in cases.items():
        f = tmp_path / "m.nq"
        f.write_bytes(rewrite(model, arrays=arrays))
        with pytest.raises(NupesError, match=msg):
            artifact.load(str(f))
