"""lstmkit against torch's own module test data: the recurrent entries of
``torch.testing._internal.common_modules.module_db`` (torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell,
RNNCell). Every sample input (``module_inputs_func``) and error input
(``module_error_inputs_func``) runs through torch.nn's module and lstmkit's, on every engine, with
the checks PyTorch's test/test_modules.py makes, each compared with torch.nn itself: forward
(and the sample's reference_fn), gradients, gradcheck, second derivatives, repr, state_dict,
factory kwargs, deepcopy, pickling, dtype moves, non-contiguous inputs, memory format,
train/eval, no_grad, and the class of the exception raised by each error input.

lstmkit documents engine="torch" as applying to standard configurations only (no peephole,
coupled gates or reset_after=False); every module_db sample is standard, so no engine is skipped.
Ids read ``{entry}{sample index}-{dtype}-{engine}``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import io
import pickle
import re

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

import lstmkit

frozen = torch.backends.flags_frozen()
common_modules = importlib.import_module("torch.testing._internal.common_modules")
# importing it freezes torch.backends' global flags for the whole process (PyTorch's own suite
# wants that); give the rest of the session, and the fixture below, back what it had
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = not frozen
ModuleErrorEnum, module_db = common_modules.ModuleErrorEnum, common_modules.module_db

NAMES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")
INFO = {n: next(i for i in module_db if i.module_cls is getattr(nn, n)) for n in NAMES}
ENGINES = ("python", "compiled", "torch", "auto")
DTYPES = {"f32": torch.float32, "f64": torch.float64}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
ARGS = "name,i,dtype,engine"


@functools.cache
def samples(name: str, dtype: torch.dtype, errors: bool = False) -> list:
    """The entry's ModuleInputs (or ErrorModuleInputs), generated once from a fixed seed."""
    info = INFO[name]
    fn = info.module_error_inputs_func if errors else info.module_inputs_func
    torch.manual_seed(0)
    return list(fn(info, device="cpu", dtype=dtype, requires_grad=not errors, training=True))


def cases(dtypes=tuple(DTYPES), errors: bool = False) -> list:
    return [pytest.param(n, i, DTYPES[d], e, id=f"{n}{i}-{d}-{e}") for n in NAMES
            for i in range(len(samples(n, torch.float64, errors))) for d in dtypes
            for e in ENGINES]


CASES, F64, ERRORS = cases(), cases(("f64",)), cases(errors=True)


@pytest.fixture(autouse=True)
def _setup():
    """A fixed seed; and torch's native CPU kernels rather than oneDNN's, whose float32 LSTM takes
    30-160 ms per call on these tiny shapes (0.2 ms natively): the reference, and what lstmkit's
    engine="torch" calls, stay torch's own LSTM."""
    torch.manual_seed(0)
    enabled, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    yield
    torch.backends.mkldnn.enabled = enabled


def construct(cls, s, **extra):
    return cls(*s.constructor_input.args, **s.constructor_input.kwargs, **extra)


def build(name, i, dtype, engine):
    """The sample, torch.nn's module and lstmkit's (same arguments + engine, torch's weights)."""
    s = samples(name, dtype)[i]
    ref = construct(INFO[name].module_cls, s).to(dtype)
    kit = construct(getattr(lstmkit, name), s, engine=engine).to(dtype)
    kit.load_state_dict(ref.state_dict())
    return s, ref, kit


def leaves(obj) -> list:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def fresh(s, fn=lambda t: t):
    """(args, kwargs): fresh leaf copies of the sample's forward inputs, each passed through fn."""
    def copy_(t):
        if not isinstance(t, torch.Tensor):
            return t
        return fn(t.detach().clone()).requires_grad_(t.requires_grad)
    return tree_map(copy_, (s.forward_input.args, s.forward_input.kwargs))


def run(m, s, fn=lambda t: t):
    """m on fresh copies of the sample's inputs; returns (outputs, (args, kwargs))."""
    args, kw = fresh(s, fn)
    return m(*args, **kw), (args, kw)


def close(actual, expected, dtype):
    assert_close(actual, expected, atol=TOL[dtype], rtol=TOL[dtype])


def grads(m, inputs) -> dict:
    return {"inputs": [t.grad for t in leaves(inputs)],
            **{n: p.grad for n, p in m.named_parameters()}}


def noncontig(t):
    """Same values, every stride doubled (not contiguous)."""
    return torch.stack((t, t), -1)[..., 0]


@pytest.mark.parametrize(ARGS, CASES)
def test_forward(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    out, _ = run(kit, s)
    close(out, run(ref, s)[0], dtype)
    if s.reference_fn is not None:  # the unbatched sample run as a batch of one
        args, kw = fresh(s)
        close(s.reference_fn(kit, *args, **kw), out, dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_grad(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    got, expected = run(kit, s), run(ref, s)
    for out, _ in (got, expected):
        sum(t.sum() for t in leaves(out)).backward()
    close(grads(kit, got[1]), grads(ref, expected[1]), dtype)


@pytest.mark.parametrize(ARGS, F64)
def test_gradcheck(name, i, dtype, engine):
    """As test_modules.test_grad: torch.autograd.gradcheck (float64, with its batched-gradient
    check, the backward under vmap) with respect to the inputs and all parameters; the
    parameters enter as one vector (torch.func.functional_call) to keep the number of numerical
    perturbations, and so the run time, small."""
    s, _, kit = build(name, i, dtype, engine)
    args, kw = fresh(s)
    names, shapes = zip(*[(n, p.shape) for n, p in kit.named_parameters()])
    w = torch.cat([p.detach().reshape(-1) for p in kit.parameters()]).requires_grad_()
    xs, spec = tree_flatten(args)

    def fn(w, *xs):
        ws = [c.view(shape) for c, shape in zip(w.split([s.numel() for s in shapes]), shapes)]
        out = torch.func.functional_call(kit, dict(zip(names, ws)),
                                         tuple(tree_unflatten(list(xs), spec)), kw)
        return tuple(leaves(out))
    assert torch.autograd.gradcheck(fn, (w, *xs), fast_mode=True, check_batched_grad=True)


@pytest.mark.parametrize(ARGS, F64)
def test_gradgrad(name, i, dtype, engine):
    """As test_modules.test_gradgrad (second derivatives, which these entries declare supported;
    float64, as torch's gradgradcheck runs), compared with torch's: d/d(inputs, parameters) of
    |d sum(outputs) / d(inputs, parameters)|^2. (gradgradcheck itself reruns in slow mode on
    failure, seconds per case.)"""
    s, ref, kit = build(name, i, dtype, engine)
    xs, first = [], []
    for m in (kit, ref):
        out, (args, _) = run(m, s)
        xs.append(leaves(args) + list(m.parameters()))
        first.append(torch.autograd.grad(sum(t.sum() for t in leaves(out)), xs[-1],
                                         create_graph=True))
    n = [sum(t.requires_grad for t in g) for g in first]
    if n[0] != n[1]:  # the message says all (no traceback: it costs ~20 ms per failure)
        pytest.fail(f"{n[0]} of lstmkit's {len(first[0])} first derivatives have a grad_fn, "
                    f"{n[1]} of torch.nn's: no double backward", pytrace=False)
    close(*[torch.autograd.grad(sum((t * t).sum() for t in g), x, allow_unused=True)
            for g, x in zip(first, xs)], dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_repr(name, i, dtype, engine):
    _, ref, kit = build(name, i, dtype, engine)
    for f in (repr, str):  # the message says all (no traceback: it costs ~20 ms per failure)
        if f(kit) != f(ref):
            pytest.fail(f"{f.__name__}: lstmkit {f(kit)!r}, torch.nn {f(ref)!r}", pytrace=False)


@pytest.mark.parametrize(ARGS, CASES)
def test_state_dict(name, i, dtype, engine):
    _, ref, kit = build(name, i, dtype, engine)
    def sig(m):
        return [(k, tuple(v.shape), v.dtype) for k, v in m.state_dict().items()]
    assert sig(kit) == sig(ref)
    assert [n for n, _ in kit.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ref.load_state_dict(kit.state_dict())


@pytest.mark.parametrize(ARGS, CASES)
def test_factory_kwargs(name, i, dtype, engine):
    """dtype=/device= reach every parameter; construction under torch.device("meta") works."""
    s = samples(name, dtype)[i]
    kit = construct(getattr(lstmkit, name), s, engine=engine, device="cpu", dtype=dtype)
    assert all(p.dtype == dtype and p.device.type == "cpu" for p in kit.parameters())
    with torch.device("meta"):
        meta = construct(getattr(lstmkit, name), s, engine=engine)
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == \
        [(n, p.shape) for n, p in construct(INFO[name].module_cls, s).named_parameters()]


@pytest.mark.parametrize(ARGS, CASES)
def test_deepcopy(name, i, dtype, engine):
    s, _, kit = build(name, i, dtype, engine)
    twin = copy.deepcopy(kit)
    assert not {p.data_ptr() for p in twin.parameters()} & {p.data_ptr() for p in kit.parameters()}
    close(run(twin, s)[0], run(kit, s)[0], dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_pickle(name, i, dtype, engine):
    s, _, kit = build(name, i, dtype, engine)
    out = run(kit, s)[0]
    buf = io.BytesIO()
    torch.save(kit, buf)
    buf.seek(0)
    close(run(torch.load(buf, weights_only=False), s)[0], out, dtype)
    close(run(pickle.loads(pickle.dumps(kit)), s)[0], out, dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_dtype_moves(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    moves = [(lambda m: m.double(), torch.float64), (lambda m: m.float(), torch.float32),
             (lambda m: m.to(dtype), dtype)]
    for move, target in moves:
        assert move(ref) is ref and move(kit) is kit
        assert all(p.dtype == target for p in kit.parameters())
        def to(t, target=target):
            return t.to(target)
        close(run(kit, s, to)[0], run(ref, s, to)[0], target)


@pytest.mark.parametrize(ARGS, CASES)
def test_non_contiguous(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    out, inputs = run(kit, s, noncontig)
    assert not any(t.is_contiguous() for t in leaves(inputs))
    expected, ref_inputs = run(ref, s)
    close(out, expected, dtype)
    g = [torch.randn_like(t) for t in leaves(expected)]
    torch.autograd.backward(leaves(out), [noncontig(t) for t in g])
    torch.autograd.backward(leaves(expected), g)
    close(grads(kit, inputs), grads(ref, ref_inputs), dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_memory_format(name, i, dtype, engine):
    """Outputs and input gradients come back contiguous, as torch's test_memory_format asks."""
    s, ref, kit = build(name, i, dtype, engine)
    for fmt in (torch.preserve_format, torch.contiguous_format):
        assert kit.to(memory_format=fmt) is kit
        out, inputs = run(kit, s)
        assert all(t.is_contiguous() for t in leaves(out))
        grad_in = torch.autograd.grad(leaves(out), leaves(inputs),
                                      [torch.rand_like(t) for t in leaves(out)])
        assert all(t.is_contiguous() for t in grad_in)
    close(out, run(ref, s)[0], dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_train_eval(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    assert kit.eval() is kit and not any(m.training for m in kit.modules())
    out = run(kit, s)[0]
    close(out, run(ref.eval(), s)[0], dtype)
    assert kit.train() is kit and all(m.training for m in kit.modules())
    close(run(kit, s)[0], out, dtype)  # no module_db sample has dropout
    del kit.training  # as test_if_train_and_eval_modes_differ
    try:
        run(kit, s)
    except AttributeError as e:
        if "'training'" not in str(e) or not INFO[name].train_and_eval_differ:
            raise


@pytest.mark.parametrize(ARGS, CASES)
def test_no_grad(name, i, dtype, engine):
    s, ref, kit = build(name, i, dtype, engine)
    with torch.no_grad():
        out, expected = run(kit, s)[0], run(ref, s)[0]
    close(out, expected, dtype)
    assert not any(t.requires_grad for t in leaves(out))


@pytest.mark.parametrize(ARGS, ERRORS)
def test_errors(name, i, dtype, engine):
    """Each error input raises in lstmkit what it raises in torch.nn: the class, at the same
    stage (construction or forward), with a message that the entry's regex finds (torch's
    test_modules checks that; lstmkit's own words come first, torch's follow)."""
    err = samples(name, dtype, errors=True)[i]
    mi = err.module_error_input

    def act(cls, **extra):
        def construct():
            return cls(*mi.constructor_input.args, **mi.constructor_input.kwargs, **extra)
        if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
            return construct
        m = construct()
        return lambda: m(*mi.forward_input.args, **mi.forward_input.kwargs)

    with pytest.raises(err.error_type, match=err.error_regex) as expected:
        act(INFO[name].module_cls)()
    ours = act(getattr(lstmkit, name), engine=engine)
    try:
        ours()
    except Exception as e:  # noqa: BLE001 - the class is what is checked
        got = e
    else:
        got = None
    if not isinstance(got, expected.type) or not re.search(err.error_regex, str(got)):
        # the message says all (no traceback, as above)
        pytest.fail(f"torch.nn raises {expected.typename}({expected.value}); lstmkit "
                    + (f"raised {type(got).__name__}({got})" if got else "raised nothing"),
                    pytrace=False)
