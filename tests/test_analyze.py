"""`nupes-edge analyze`: the per-layer table adds up to codegen's report, and the HTML report
renders in a real (headless) browser with every plot."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from nupes_edge import examples
from nupes_edge.analyze import analyze
from nupes_edge.codegen.plan import ALIGN
from nupes_edge.importers import import_module
from nupes_edge.quant.driver import quantize_graph
from nupes_edge.report_html import render

from .test_cli import cli

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
_models = {}


def model(name, budget=False):
    """A bundled example at W4 powerquant, or under a flash budget small enough to drop the add's tables."""
    if (name, budget) not in _models:
        g = import_module(examples.model(name, progress=False), examples.models.example_input(name), name)
        x = examples.load(name, "calib")[0]
        _models[(name, budget)] = quantize_graph(g, x, "powerquant", 4, name=name,
                                                 flash_budget=9000 if budget else None)
    return _models[(name, budget)]


@pytest.mark.parametrize("name,budget", [("digits", False), ("mnist5k", False), ("mnist5k", True)])
def test_layer_bytes_and_arena_add_up_to_the_codegen_report(name, budget):
    qm = model(name, budget)
    a = analyze(qm, examples.load(name, "calib")[0])
    rep = a.plan.report
    assert sum(r.weight_bytes for r in a.rows) == rep["flash_weights_bytes"]
    assert sum(r.table_bytes for r in a.rows) == rep["flash_tables_bytes"]
    assert sum(r.meta_bytes for r in a.rows) == rep["flash_meta_bytes"]
    assert a.totals["model_flash_bytes"] == sum(rep[k] for k in ("flash_weights_bytes", "flash_tables_bytes",
                                                                 "flash_meta_bytes"))
    ends = [r.arena_offset + r.act_bytes for r in a.rows if r.arena_offset is not None]
    assert -(-max(ends) // ALIGN) * ALIGN == rep["arena_bytes"]
    assert sum(r.macs for r in a.rows) == rep["macs"] and sum(r.params for r in a.rows) == rep["params"]
    # every layer's output compared with the float model; weight layers keep a usable SQNR at W4
    assert all(r.sqnr_db is not None for r in a.rows)
    assert all(r.sqnr_db > 10 for r in a.rows if r.bits)
    text = a.text()
    assert all(r.name in text for r in a.rows) and "not built for a board" in text
    if budget:
        assert [r.table_bytes for r in a.rows if r.op == "add"] == [0]


def test_cli_analyze_json_and_html(tmp_path):
    from nupes_edge import artifact

    path = tmp_path / "m.nq"
    artifact.save(model("digits"), str(path))
    r = cli("analyze", str(path), "--data", "digits", "--json", "--html", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    g = json.loads(cli("codegen", str(path), "-o", str(tmp_path / "c"), "--json").stdout)
    assert sum(row["weight_bytes"] for row in obj["layers"]) == g["flash_weights_bytes"]
    assert sum(row["table_bytes"] for row in obj["layers"]) == g["flash_tables_bytes"]
    assert obj["totals"]["arena_bytes"] == g["arena_bytes"]
    page = (tmp_path / "r.html").read_text()
    # self-contained: five plots as data: URIs, no external script, style or image
    assert page.count("<img") == 5 and page.count("src='data:image/png;base64,") == 5
    assert "src='http" not in page and "<link" not in page and "<script src" not in page
    r = cli("analyze", str(path), "--html", str(tmp_path / "r2.html"), "--layer", "nonesuch")
    assert r.returncode == 2 and "no weight layer named 'nonesuch'" in r.stderr


def test_report_for_a_users_model(tmp_path):
    """A model with no accuracy.json rows gets no empty "Accuracy vs bits" section; the SQNR plot
    names the data it was measured on; the test hook is hidden; a wide table scrolls in its box."""
    from nupes_edge import api, artifact

    qm = model("digits")
    qm = artifact.loads(artifact.dumps(qm))
    qm.meta["name"] = "my_net"
    artifact.save(qm, str(tmp_path / "m.nq"))
    x = examples.load("digits", "calib")[0][:32]
    np.savez(tmp_path / "d.npz", x=x)
    _, a = api.analyze(str(tmp_path / "m.nq"), str(tmp_path / "d.npz"))
    assert a.data_label == "--data d.npz"
    page = render(a, qm)
    assert "Accuracy vs bits" not in page and "accuracy.json" not in page
    assert "<p id=selfcheck hidden>" in page and "<div class=wide><table>" in page
    assert page.count("<img") == 4


@pytest.mark.skipif(CHROMIUM is None, reason="make setup installs chromium-headless-shell (apt); it was not found")
@pytest.mark.parametrize("name", examples.NAMES)
def test_report_renders_in_headless_chromium(name, tmp_path):
    """The page loads offline with every plot decoded and no script error (the page's own check,
    read back from the DOM), and the screenshot is not blank."""
    qm = model(name)
    page = tmp_path / "report.html"
    page.write_text(render(analyze(qm, examples.load(name, "calib")[0]), qm))
    flags = [CHROMIUM, "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "plots loaded: 5 of 5; script errors: 0" in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[:2] == (2400, 1200) and float(np.std(pixels[..., :3])) > 0.05


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="make setup installs qemu-system-arm and arm-none-eabi-gcc")
def test_analyze_on_the_emulated_board_and_build_writes_the_report(tmp_path):
    from nupes_edge import artifact

    path = tmp_path / "m.nq"
    artifact.save(model("digits"), str(path))
    r = cli("analyze", str(path), "--board", "stm32", "--profile", "-n", "2", "-o", str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    t = obj["totals"]
    assert obj["count_kind"] == "emulated_instructions" and all(row["count"] > 0 for row in obj["layers"])
    assert t["fits"] is True and 0 < t["flash_used"] < t["flash_bytes"] and t["code_bytes"] > 0
    # the two counts a user sees, explained: the layers' sum and the whole inference run/verify report
    assert t["count"] == sum(row["count"] for row in obj["layers"]) < t["count_inference"] < 1.01 * t["count"]
    assert any("the whole inference (as run and verify report it)" in n for n in obj["notes"])
    r = cli("build", str(path), "--board", "stm32", "-o", str(tmp_path / "fw"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)["report"]
    assert report == str(tmp_path / "fw" / "report.html") and os.path.getsize(report) > 10_000
