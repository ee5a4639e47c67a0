"""Each supported op, imported from torch.export, computes what torch computes."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from nupes_edge import torch_exec
from nupes_edge.errors import NupesError
from nupes_edge.importers import import_exported, import_module, import_pt2


def _check(module, shape, atol=1e-5):
    torch.manual_seed(0)
    module = module.eval()
    for m in module.modules():  # non-trivial BN statistics, so folding is really exercised
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn((4,) + shape)
    graph = import_module(module, x[:1], "test")
    with torch.no_grad():
        want = module(x)
        got = torch_exec.run(graph, x, softmax=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=atol, rtol=1e-4)
    return graph


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 8, 3, padding=1),
    nn.Conv2d(3, 8, 3, stride=2),
    nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), bias=False),
    nn.Conv2d(3, 8, 1),
    nn.Conv2d(3, 6, 3, padding=1, groups=3),  # depthwise with multiplier 2
    nn.Conv2d(3, 8, 4, padding="same"),  # asymmetric implicit padding
], ids=["pad1", "stride2", "rect", "1x1", "depthwise", "same-even"])
def test_conv_variants(conv):
    g = _check(nn.Sequential(conv), (3, 9, 9))
    assert [n.op for n in g.nodes] == ["conv2d"]


def test_batchnorm_and_relu_fold_into_conv():
    g = _check(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), (2, 7, 7))
    assert [(n.op, n.act) for n in g.nodes] == [("conv2d", "relu")]


def test_linear_with_batchnorm1d_and_relu6():
    g = _check(nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU6()), (3, 2, 2))
    assert [(n.op, n.act) for n in g.nodes] == [("flatten", "none"), ("linear", "relu6")]


@pytest.mark.parametrize("pool,op", [
    (nn.MaxPool2d(2), "maxpool2d"), (nn.MaxPool2d(3, stride=2, padding=1), "maxpool2d"),
    (nn.AvgPool2d(2), "avgpool2d"), (nn.AvgPool2d(3, stride=1), "avgpool2d"),
    (nn.AdaptiveAvgPool2d(1), "global_avgpool"), (Lambda(lambda x: x.mean((2, 3), keepdim=True)), "global_avgpool"),
])
def test_pools(pool, op):
    g = _check(nn.Sequential(pool), (3, 7, 7))
    assert g.nodes[0].op == op


def test_residual_add_standalone_relu_and_final_softmax():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 5 * 5, 3)

        def forward(self, x):
            y = torch.relu(x)  # ReLU on the input: nothing to fuse into
            y = torch.relu(y + self.a(y))
            return torch.softmax(self.fc(torch.flatten(y, 1)), dim=1)

    g = _check(Net(), (2, 5, 5))
    assert [n.op for n in g.nodes] == ["relu", "conv2d", "add", "flatten", "linear"]
    assert g.nodes[2].act == "relu" and g.output_softmax


# torch's own pytree deprecation, raised inside torch.export.save / run_decompositions (the importer hides it)
@pytest.mark.filterwarnings("ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning")
def test_pt2_file_and_decomposed_program_import_the_same(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)).eval()
    x = torch.randn(2, 1, 8, 8)
    ep = torch.export.export(net, (x[:1],))
    path = tmp_path / "net.pt2"
    torch.export.save(ep, str(path))
    for g in (import_pt2(str(path)), import_exported(ep.run_decompositions(), "decomposed")):
        assert [n.op for n in g.nodes] == ["conv2d", "maxpool2d", "flatten", "linear"]
        with torch.no_grad():
            np.testing.assert_allclose(torch_exec.run(g, x).numpy(), net(x).numpy(), atol=1e-5)


def test_shapes_are_inferred_per_sample(digits_graph):
    assert digits_graph.input_shape == (1, 8, 8)
    assert digits_graph.output_shape == (10,)


@pytest.mark.parametrize("module,shape,needle", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()), (1, 6, 6), "aten.gelu"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), (1, 8, 8), "dilation"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 6, 6), "groups=2"),
    (nn.Sequential(nn.ReLU(), nn.BatchNorm2d(1)), (1, 4, 4), "BatchNorm"),
    (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), (1, 5, 5), "ceil_mode"),
    (nn.Sequential(Lambda(lambda x: torch.softmax(x, 1)), nn.Flatten()), (3,), "final op"),
])
def test_unsupported_constructs_are_named(module, shape, needle):
    with pytest.raises(NupesError) as e:
        import_module(module, torch.randn((1,) + shape), "net.py")
    msg = str(e.value)
    assert needle in msg and "net.py" in msg


def test_error_names_the_module_path():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.GELU()))
    with pytest.raises(NupesError, match=r"module '1\.0' \(GELU\)"):
        import_module(net, torch.randn(1, 1, 5, 5))


def test_unreadable_pt2_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(NupesError, match="bad.pt2"):
        import_pt2(str(bad))
    with pytest.raises(NupesError, match="no such file"):
        import_pt2(str(tmp_path / "missing.pt2"))


def test_conv1d_models_import_as_one_row_images(tmp_path):
    """Conv1d, max/avg_pool1d, a mean over the sequence and an elementwise mul (issue: models users
    bring): an N x C x L model is a C x 1 x L graph, equal to torch in float and bit-exact on the
    host build; its data is taken as N x C x L."""
    import torch.nn.functional as F

    from nupes_edge import build, torch_exec
    from nupes_edge.data import load_data
    from nupes_edge.intref import run_int
    from nupes_edge.layout import from_device, to_device
    from nupes_edge.quant.driver import quantize_graph

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv1d(3, 8, 5, padding=2)
            self.c2 = torch.nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=8)
            self.c3 = torch.nn.Conv1d(8, 6, 3, padding="same")
            self.fc = torch.nn.Linear(24, 4)

        def forward(self, x):
            x = F.max_pool1d(torch.relu(self.c1(x)), 2)
            x = F.avg_pool1d(self.c3(torch.relu(self.c2(x))), 2)
            return self.fc(torch.flatten(x.mean(dim=-1, keepdim=True) * x, 1))

    net = Net().eval()
    x = torch.randn(48, 3, 32)
    g = import_module(net, x[:1], "seq")
    assert g.input_shape == (3, 1, 32) and [n.op for n in g.nodes][:2] == ["conv2d", "maxpool2d"]
    np.testing.assert_allclose(torch_exec.run(g, x.reshape(48, 3, 1, 32)).detach().numpy(), net(x).detach().numpy(),
                               atol=1e-5)
    np.savez(tmp_path / "d.npz", x=x.numpy())
    xs, _ = load_data(str(tmp_path / "d.npz"), input_shape=g.input_shape)
    assert xs.shape == (48, 3, 1, 32)
    qm = quantize_graph(g, xs, "nupes", 4, name="seq", progress=False)
    xq = np.random.default_rng(0).integers(-128, 128, (8, *g.input_shape)).astype(np.int8)
    hb = build.build_host(qm, str(tmp_path / "b"))
    got = from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
    np.testing.assert_array_equal(got, run_int(qm, xq))


def test_nearest_upsampling_is_a_byte_move(tmp_path):
    """nn.Upsample / F.interpolate(mode='nearest') by 2 and by (2, 3): equal to torch in float, and the
    host build equals the integer reference."""
    from nupes_edge import build, torch_exec
    from nupes_edge.intref import run_int
    from nupes_edge.layout import from_device, to_device
    from nupes_edge.quant.driver import quantize_graph

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Upsample(scale_factor=2),
                              torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.Upsample(scale_factor=(2, 3)),
                              torch.nn.Flatten(), torch.nn.Linear(3 * 20 * 30, 5)).eval()
    x = torch.randn(16, 2, 5, 5)
    g = import_module(net, x[:1], "up")
    assert [n.op for n in g.nodes].count("copy") == 2
    np.testing.assert_allclose(torch_exec.run(g, x).detach().numpy(), net(x).detach().numpy(), atol=1e-5)
    qm = quantize_graph(g, x.numpy(), "uniform", 8, name="up", progress=False)
    xq = np.random.default_rng(0).integers(-128, 128, (6, *g.input_shape)).astype(np.int8)
    hb = build.build_host(qm, str(tmp_path / "b"))
    got = from_device(build.run_host(hb.runner, to_device(xq)), qm.graph.output_shape)
    np.testing.assert_array_equal(got, run_int(qm, xq))


def test_every_unsupported_op_is_named_at_once():
    """GELU then LayerNorm: both named in one refusal (it used to stop at the first)."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    with pytest.raises(NupesError) as e:
        import_module(net, torch.randn(1, 4), "m")
    assert "aten.gelu.default (module '1' (GELU)" in str(e.value) and "aten.layer_norm.default" in str(e.value)


def test_the_supported_op_list_is_the_importers_own():
    import inspect
    import re

    from nupes_edge.importers import torch_import

    src = inspect.getsource(torch_import._Importer.call) + inspect.getsource(torch_import._Importer)
    used = {eval(name, {"aten": torch.ops.aten}) for name in re.findall(r"aten\.[a-z_0-9]+\.[a-zA-Z_]+", src)}
    assert used <= torch_import.SUPPORTED_TARGETS | set(torch_import.TABLE_OPS)
