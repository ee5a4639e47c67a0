"""docs/integration.md followed literally: its Makefile and CMake projects (the files and commands
in its tagged blocks) build the generated folder for the host and for Cortex-M4 with the real
`make`, `cmake` and compilers, and the host builds print the integer reference's output and top-1
for the example's embedded input. Plus the caller-arena API (`_run_with`): bit-exact with `_run`
and the reference, reentrant under ThreadSanitizer, refusing bad buffers; and the build options."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nupes_edge import artifact, codegen
from nupes_edge.errors import NupesError
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.verify import reference_io

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "docs", "integration.md")
HARNESS = os.path.join(HERE, "c", "run_with_harness.c")
WARNINGS = "-Wall -Wextra -Werror -pedantic"
M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
EM_ARM = 40

needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="make setup installs cmake")


def doc_blocks() -> tuple[dict[str, str], dict[str, str]]:
    """({file name: text}, {run name: shell commands}) from the doc's ```lang file=NAME / run=NAME blocks."""
    files, runs = {}, {}
    for kind, name, body in re.findall(r"^```\w+ (file|run)=(\S+)\n(.*?)^```", open(DOC).read(), re.S | re.M):
        (files if kind == "file" else runs)[name] = body
    return files, runs


FILES, RUNS = doc_blocks()


def run_doc(name: str, cwd) -> subprocess.CompletedProcess:
    """One of the doc's command blocks, as a user types it (nupes-edge on PATH). CFLAGS in the
    environment (read by make and by cmake's first configure) makes every warning an error."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "CFLAGS": WARNINGS, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", RUNS[name]], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"docs/integration.md block run={name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    # newer newlib's nosys stubs make the linker say "_write is not implemented and will always fail"
    warnings = [ln for ln in (r.stdout + r.stderr).splitlines()
                if "warning:" in ln and "is not implemented and will always fail" not in ln]
    assert not warnings, "\n".join(warnings)
    return r


def elf_machine(path) -> int:
    head = open(path, "rb").read(20)
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


def disassembly(path) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout


def mnemonics(path) -> set[str]:
    """The instructions' mnemonics (not symbol names: a C helper may be called *_smlad)."""
    # objdump -d lines: "  addr:\t<hex bytes> \t<mnemonic>\t<operands>"
    return {m.group(1) for m in re.finditer(r"^\s*[0-9a-f]+:\t[0-9a-f ]+\t([a-z0-9.]+)", disassembly(path), re.M)}


@pytest.fixture(scope="module")
def model(digits_graph, digits_calib):
    qm = quantize_graph(digits_graph, digits_calib, "powerquant", 4, name="digits")
    qm.meta["calibration"]["data"] = "digits"  # as `nupes-edge quantize --data digits` records it
    return qm


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "digits.nq"
    artifact.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def expected(model, digits_calib):
    """The integer reference's output (device order) and top-1 for the first calibration input."""
    _, ref = reference_io(model, digits_calib[:1])
    out = ref.reshape(-1).astype(int)
    return out.tolist(), int(np.argmax(out))


def check_example_output(stdout: str, expected) -> None:
    out, top1 = expected
    printed = re.search(r"^output \(int8\):((?: -?\d+)+)$", stdout, re.M)
    assert printed, stdout
    assert [int(v) for v in printed.group(1).split()] == out, stdout
    assert re.search(rf"^top-1: {top1} \(score -?[0-9.]+\)$", stdout, re.M), (stdout, top1)
    assert "matches the integer reference: yes" in stdout, stdout


def new_project(tmp_path, model_file, files) -> str:
    proj = tmp_path / "project"
    proj.mkdir()
    shutil.copyfile(model_file, proj / "digits.nq")
    for f in files:
        (proj / f).write_text(FILES[f])
    return proj


def test_the_doc_has_every_block_the_tests_follow():
    assert set(FILES) >= {"Makefile", "CMakeLists.txt", "cortex-m4.cmake", "nn.c"}
    assert set(RUNS) >= {"make-host", "make-m4", "cmake-host", "cmake-m4"}


def test_makefile_project_builds_for_the_host_and_cortex_m4(tmp_path, model_file, expected):
    proj = new_project(tmp_path, model_file, ["Makefile"])
    r = run_doc("make-host", proj)
    check_example_output(r.stdout, expected)
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("make setup installs arm-none-eabi-gcc (the host half passed)")
    r = run_doc("make-m4", proj)
    assert "arm-none-eabi-gcc" in r.stdout and "-mcpu=cortex-m4" in r.stdout
    assert elf_machine(proj / "app") == EM_ARM
    assert "smlad" in mnemonics(proj / "app")  # -mcpu=cortex-m4 selected the DSP path by itself


@needs_cmake
def test_cmake_project_builds_for_the_host_and_cortex_m4(tmp_path, model_file, expected):
    proj = new_project(tmp_path, model_file, ["CMakeLists.txt", "cortex-m4.cmake"])
    r = run_doc("cmake-host", proj)
    check_example_output(r.stdout, expected)
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("make setup installs arm-none-eabi-gcc (the host half passed)")
    run_doc("cmake-m4", proj)
    assert elf_machine(proj / "build-m4" / "app") == EM_ARM
    runtime = proj / "build-m4" / "nupes_digits" / "libnupes_runtime.a"
    assert "smlad" in mnemonics(runtime)
    # NUPES_DSP=OFF: the portable path on the same core
    env = {**os.environ, "CFLAGS": WARNINGS}
    for cmd in (["cmake", "-S", ".", "-B", "build-portable", f"-DCMAKE_TOOLCHAIN_FILE={proj / 'cortex-m4.cmake'}",
                 "-DNUPES_DSP=OFF"], ["cmake", "--build", "build-portable", "--target", "nupes_runtime"]):
        r = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    ops = mnemonics(proj / "build-portable" / "nupes_digits" / "libnupes_runtime.a")
    assert "smlad" not in ops and "sxtb16" not in ops, sorted(ops)


@needs_cmake
def test_cmake_options_no_static_arena_and_the_standalone_example(tmp_path, model, expected):
    """The folder as the top-level project builds its example; NUPES_<NAME>_NO_STATIC_ARENA removes
    the library's buffers (and _run) and the example then runs on its own buffers through _run_with."""
    from nupes_edge import api

    gen = tmp_path / "nupes_digits"
    path = tmp_path / "digits.nq"
    artifact.save(model, str(path))
    api.codegen(str(path), str(gen))
    env = {**os.environ, "CFLAGS": WARNINGS}
    for cmd in (["cmake", "-S", str(gen), "-B", "b", "-DNUPES_DIGITS_NO_STATIC_ARENA=ON"], ["cmake", "--build", "b"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(tmp_path / "b" / "nupes_model_digits_example")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    check_example_output(r.stdout, expected)
    syms = subprocess.run(["nm", str(tmp_path / "b" / "libnupes_model_digits.a")], capture_output=True, text=True).stdout
    assert "nupes_digits_run_with" in syms
    assert "static_arena" not in syms and not re.search(r" T nupes_digits_run$", syms, re.M)
    # every symbol the model library defines for the linker is in the nupes_ namespace
    exported = re.findall(r"^[0-9a-f]+ [TDRB] (\S+)$", syms, re.M)
    assert exported and all(s.startswith("nupes_") for s in exported), exported


def test_model_mk_defines_only_its_own_variables(tmp_path, model):
    codegen.generate(model, str(tmp_path), project=True)
    lines = [ln for ln in (tmp_path / "model.mk").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines and all(re.match(r"NUPES_DIGITS_[A-Z_]+ :?= ", ln) for ln in lines), lines
    r = subprocess.run(["make", "-f", "model.mk"], cwd=tmp_path, capture_output=True, text=True)
    assert "No targets" in r.stderr, r.stderr  # no rule of its own to take over a user's default goal


def test_nn_c_from_the_doc_classifies_with_its_buffers_in_ccm(tmp_path, model, digits_calib, expected):
    """The doc's STM32 module: host run gives the reference's top-1; on Cortex-M4 its buffers land in .ccmram."""
    from nupes_edge.codegen.cvalues import c_float32
    from nupes_edge.codegen.project import example_io

    src = tmp_path / "nupes_digits"
    gen = codegen.generate(model, str(src))
    (tmp_path / "nn.c").write_text(FILES["nn.c"])
    x, _, _ = example_io(model, digits_calib[0])
    floats = ", ".join(c_float32(v, "x") for v in x.tolist())
    (tmp_path / "main.c").write_text(
        "#include <stdio.h>\nint nn_classify(const float *x);\n"
        f"static const float x[{x.size}] = {{ {floats} }};\n"
        "int main(void) { printf(\"%d\\n\", nn_classify(x)); return 0; }\n")
    lib = [str(src / f) for f in gen.files if f.endswith(".c")]
    flags = ["-std=c99", *WARNINGS.split(), "-O2", "-I", str(src), "-I", str(src / "runtime")]
    r = subprocess.run(["gcc", *flags, str(tmp_path / "nn.c"), str(tmp_path / "main.c"), *lib, "-o", str(tmp_path / "nn")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(tmp_path / "nn")], capture_output=True, text=True, check=True).stdout
    assert int(out) == expected[1]
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("make setup installs arm-none-eabi-gcc (the host half passed)")
    obj = tmp_path / "nn.o"
    r = subprocess.run(["arm-none-eabi-gcc", *flags, *M4, "-c", str(tmp_path / "nn.c"), "-o", str(obj)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = subprocess.run(["arm-none-eabi-objdump", "-t", str(obj)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\.ccmram\s+\S+\s+nn_arena$", table, re.M) and re.search(r"\.ccmram\s+\S+\s+nn_scratch$", table, re.M)


# --- _run_with: the caller's buffers

def _tsan_works(tmp_path) -> bool:
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    r = subprocess.run(["gcc", "-fsanitize=thread", str(probe), "-o", str(tmp_path / "probe")], capture_output=True)
    return r.returncode == 0 and subprocess.run([str(tmp_path / "probe")], capture_output=True).returncode == 0


def build_harness(src, out, extra=(), tsan=False) -> str:
    flags = ["-std=c99", *WARNINGS.split(), "-O1", "-g", "-I", str(src), "-I", str(src / "runtime"),
             "-DMODEL=digits", "-DMODEL_UPPER=DIGITS", '-DMODEL_HEADER="nupes_model_digits.h"', *extra]
    if tsan:
        flags += ["-fsanitize=thread,undefined", "-fno-sanitize-recover=undefined"]
    sources = [HARNESS] + sorted(str(p) for p in src.glob("*.c")) + sorted(str(p) for p in (src / "runtime").glob("*.c"))
    r = subprocess.run(["gcc", *flags, *sources, "-pthread", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.mark.parametrize("dsp", [False, True], ids=["portable", "dsp-emulated"])
def test_run_with_is_bit_exact_reentrant_and_refuses_bad_buffers(tmp_path, model, digits_test, dsp):
    x = digits_test[0][:64]
    dev_in, ref = reference_io(model, x)
    ref = ref.reshape(len(x), -1)
    src = tmp_path / "src"
    codegen.generate(model, str(src))  # the library alone, as `nupes-edge build` makes it
    tsan = _tsan_works(tmp_path)
    path = ["-DNUPES_DSP_EMULATE" if dsp else "-DNUPES_NO_DSP"]
    runs = {"static arena": build_harness(src, tmp_path / "h", path, tsan),
            "no static arena": build_harness(src, tmp_path / "h_nostatic",
                                             path + ["-DNUPES_DIGITS_NO_STATIC_ARENA", "-DHARNESS_NO_STATIC"], tsan)}
    for what, exe in runs.items():
        r = subprocess.run([exe], input=dev_in.tobytes(), capture_output=True, timeout=120)
        assert r.returncode == 0, (what, r.returncode, r.stderr.decode(errors="replace")[-3000:])
        blocks = np.frombuffer(r.stdout, np.int8).reshape(3, len(x), -1)
        names = ["_run", "_run_with, fresh garbage buffers", "_run_with, two threads"]
        for name, got in zip(names, blocks):
            if name == "_run" and what == "no static arena":
                continue
            bad = np.nonzero((got != ref).any(axis=1))[0]
            assert not len(bad), f"{what}: {name} differs from the reference on inputs {bad[:5].tolist()}"
    if tsan:  # the check's own control: two threads sharing one arena is a race, and it is seen
        r = subprocess.run([runs["static arena"], "shared"], input=dev_in.tobytes(), capture_output=True, timeout=120)
        assert r.returncode != 0 and b"data race" in r.stderr


def test_header_declares_the_buffers_api(model):
    _, files = codegen.render(model)
    h, c = files["nupes_model_digits.h"], files["nupes_model_digits.c"]
    p = codegen.plan(model)
    assert f"#define NUPES_DIGITS_ARENA_WORDS {max(1, -(-p.arena_bytes // 4))}" in h
    assert f"#define NUPES_DIGITS_SCRATCH_WORDS {max(1, -(-p.scratch_entries * 2 // 4))}" in h
    assert "#define NUPES_DIGITS_BUFFER_ALIGN 4" in h
    assert "int nupes_digits_run_with(const int8_t *in, int8_t *out, void *arena, void *scratch);" in h
    assert re.search(r"#ifndef NUPES_DIGITS_NO_STATIC_ARENA\nint nupes_digits_run\(", h)
    assert "malloc" not in c and "float" not in c


# --- what codegen writes for the user's folder

def test_codegen_writes_the_project_files_and_reruns_into_its_folder(tmp_path, model):
    from nupes_edge import api

    path = tmp_path / "digits.nq"
    artifact.save(model, str(path))
    out = tmp_path / "gen"
    gen = api.codegen(str(path), str(out))
    assert {"CMakeLists.txt", "model.mk", "example_main.c"} <= set(gen.files)
    assert all((out / f).is_file() for f in gen.files)
    api.codegen(str(path), str(out))  # its own files: replaced, not refused
    (out / "notes.txt").write_text("mine")
    with pytest.raises(NupesError, match="holds other files"):
        api.codegen(str(path), str(out))


def test_example_without_calibration_data_uses_a_zero_input(model):
    from nupes_edge.codegen.project import example_io
    from nupes_edge.intref import quantize_input

    x, out, origin = example_io(model, None)
    assert "zero input" in origin
    q = quantize_input(x, model.input_q.scale, model.input_q.zero_point)
    assert (q == model.input_q.zero_point).all()
    _, ref = reference_io(model, np.zeros((1,) + tuple(model.graph.input_shape), np.float32))
    assert out.tolist() == ref.reshape(-1).tolist()
    with pytest.raises(NupesError, match="shape"):
        example_io(model, np.zeros(3))
    with pytest.raises(NupesError, match="finite"):
        example_io(model, np.full(model.graph.input_shape, np.nan))


def test_model_text_never_reaches_the_project_files(model, digits_calib):
    from nupes_edge.codegen.project import render_project

    qm = artifact.loads(artifact.dumps(model))
    evil = 'evil */ #include "/etc/passwd" $(shell touch PWNED) ${X}\n'
    qm.meta["name"] = evil
    qm.method = evil
    qm.graph.nodes[0].name = evil
    qm.params[evil] = qm.params.pop(model.graph.nodes[0].name)
    p, _ = codegen.render(qm, name="digits")
    project = render_project(qm, p, "nupes_model_digits", digits_calib[0])
    for name, text in project.items():
        assert "evil" not in text and "passwd" not in text and "PWNED" not in text, name
    # a hostile --name is reduced to an identifier before it reaches CMake, make or C
    p, _ = codegen.render(qm, name='x") ; $(shell id) #')
    assert re.fullmatch(r"[a-z0-9_]+", p.name)


def test_cli_codegen_data_picks_the_example_input(tmp_path, model_file):
    """`codegen --data` names the data example_main.c takes its input from; data of another shape is
    refused cleanly (exit 2)."""
    from tests.test_cli import cli

    texts = []
    for i, data in enumerate(("digits", "mnist5k")):
        out = tmp_path / f"g{i}"
        r = cli("codegen", str(model_file), "-o", str(out), "--data", data)
        if data == "mnist5k":  # 28x28 inputs do not fit an 8x8 model: a clear refusal
            assert r.returncode == 2 and "Traceback" not in r.stderr
        else:
            assert r.returncode == 0, r.stderr
            texts.append((out / "example_main.c").read_text())
    assert texts and "matches the integer reference" in texts[0]
