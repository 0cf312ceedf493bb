"""The cell registry: a cell declared once is everywhere. A small cell written here (one class and
one ``register`` line, nothing else touched) gets a layer, a trace, gradchecks and training from
the CLI; and every registered cell passes the same checks."""

from __future__ import annotations

import json

import pytest
import torch

from lstmkit.cells import Cell, cell_from_spec, registry
from lstmkit.cells.base import Grads, matmul_over_steps
from lstmkit.engine.reference import reference_sequence
from lstmkit.layers import Recurrent, make_layer


class LeakyGateCell(Cell):
    """A one-gate cell (a GRU without its reset gate):

        u_t = sigma(W_iu x_t + b_iu + W_hu h_{t-1} + b_hu)     update gate
        n_t = tanh(W_in x_t + b_in + W_hn h_{t-1} + b_hn)       candidate
        h_t = h_{t-1} + u_t * (n_t - h_{t-1})
    """

    gates = ("u", "n")

    def __init__(self, hidden_size: int):
        self.hidden_size = hidden_size
        self.state_sizes = (hidden_size,)

    def blocks(self, t):
        return (t, *t.split(self.hidden_size, -1))

    def reference_step(self, w, xw, prev):
        (h_prev,) = prev
        u, n = (xw + h_prev.mm(w.w_hh.t())).split(self.hidden_size, -1)
        u, n = torch.sigmoid(u), torch.tanh(n)
        return (h_prev + u * (n - h_prev),)

    def forward_step(self, w, gates, prev, new, buf):
        (h_prev,), (h,) = prev, new
        pre, u, n = gates
        pre.addmm_(h_prev, w.w_hh_t)
        u.sigmoid_()
        n.tanh_()
        torch.sub(n, h_prev, out=h)
        h.mul_(u).add_(h_prev)

    def backward_step(self, w, gates, prev, new, buf, dnew, dgates, gbuf, dprev):
        (h_prev,), (dh,), (dh_prev,) = prev, dnew, dprev
        _, u, n = gates
        dpre, du, dn = dgates
        torch.mul(dh, (n - h_prev) * u * (1 - u), out=du)      # through u_t
        torch.mul(dh, u * (1 - n * n), out=dn)                   # through n_t
        torch.mul(dh, 1 - u, out=dh_prev)                        # through h_{t-1} directly
        dh_prev.addmm_(dpre, w.w_hh)

    def recurrent_grads(self, w, prev, new, bufs, dgates, dnew, gbufs):
        return Grads(w_hh=matmul_over_steps(dgates, prev[0]))


NAME = "leaky-gate"


@pytest.fixture
def toy():
    entry = registry.register(NAME, LeakyGateCell, summary="a test cell: one update gate")
    yield entry
    registry.unregister(NAME)


def test_a_new_cell_gets_a_layer_that_equals_its_reference(toy):
    torch.manual_seed(0)
    layer = make_layer(NAME, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    assert isinstance(layer, Recurrent) and layer.mode == "LEAKY-GATE"
    assert layer.weight_ih_l0.shape == (8, 3) and layer.weight_hh_l1_reverse.shape == (8, 4)
    out, h_n = layer(torch.randn(6, 2, 3, dtype=torch.float64))
    assert out.shape == (6, 2, 8) and h_n.shape == (4, 2, 4)
    one = make_layer(NAME, 3, 4, dtype=torch.float64)
    x, h0 = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    hist = reference_sequence(one.cell, x, [h0[0]], one.weights(0))
    out, h_n = one(x, h0)
    torch.testing.assert_close(out, hist[0][1:])
    torch.testing.assert_close(h_n[0], hist[0][-1])
    assert type(cell_from_spec(one.cell.spec())) is LeakyGateCell


def test_a_new_cell_traces_its_gates(toy):
    layer = make_layer(NAME, 3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    trace = layer.trace(x)
    step = trace.steps[0][0]
    assert set(step.gates) == {"u", "n"} and step.c is None
    assert ((step.gates["u"] > 0) & (step.gates["u"] < 1)).all()
    torch.testing.assert_close(step.h, trace.output)
    trace.output.sum().backward()
    assert step.grad_h.shape == (5, 2, 4)


def test_a_new_cell_passes_gradcheck_with_lengths(toy):
    torch.manual_seed(1)
    layer = make_layer(NAME, 3, 4, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def functional(x, h0, *weights):
        return torch.func.functional_call(layer, dict(zip(names, weights)),
                                          (x, h0), {"lengths": [5, 3, 2]})

    assert torch.autograd.gradcheck(functional, (x, h0, *leaves))


def test_a_new_cell_trains_from_the_cli(toy, tmp_path, capsys):
    from lstmkit.cli import build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert NAME in help_text
    run = tmp_path / "run"
    main(["train", "adding", "--cell", NAME, "--out", str(run), "--length", "8", "--epochs", "2",
          "--steps-per-epoch", "5", "--hidden", "8", "--batch-size", "16"])
    assert json.loads((run / "config.json").read_text())["cell"] == NAME
    main(["evaluate", str(run)])
    assert "MSE" in capsys.readouterr().out


def test_options_a_cell_does_not_take_are_named(toy):
    with pytest.raises(ValueError, match="cell 'leaky-gate' has no projection; got proj_size=2"):
        make_layer(NAME, 3, 4, proj_size=2)
    with pytest.raises(ValueError, match=r"cell 'gru' takes the options \['reset_after'\]"):
        registry.get("gru").make(4, peephole=True)


def test_an_unknown_cell_is_named():
    with pytest.raises(ValueError, match="unknown cell 'nope'; expected one of lstm, peephole"):
        make_layer("nope", 3, 4)


@pytest.mark.parametrize("name", [*registry.step_names(), NAME])
def test_every_registered_cell_matches_its_reference_and_gradchecks(name, request):
    """Derived from the registry: each cell's layer (python engine) against the reference walk
    of its own reference step, and gradcheck in float64."""
    if name == NAME:
        request.getfixturevalue("toy")
    assert name in registry.names()
    torch.manual_seed(2)
    layer = make_layer(name, 3, 4, dtype=torch.float64, engine="python")
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    zeros = [torch.zeros(2, s, dtype=torch.float64) for s in layer.cell.state_sizes]
    hist = reference_sequence(layer.cell, x, zeros, layer.weights(0))
    out, _ = layer(x)
    torch.testing.assert_close(out, hist[0][1:])
    names = [n for n, _ in layer.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(
        lambda x, *w: torch.func.functional_call(layer, dict(zip(names, w)), (x,))[0],
        (x, *leaves))
