"""mLSTM (lstmkit.mLSTM) training step and inference step against torch.nn.LSTM and xLSTM's
pure-PyTorch backends.

Usage:
    .venv/bin/python benchmarks/bench_mlstm.py [--repeats 5] [--threads 1] [--heads 4]
        [--sizes T,B,H ...]

Tables, float32, medians (bench_layers.median_ms: the contenders take turns):

1. Training step (forward + backward, a loss on every output) of one mLSTM layer, input size
   H, NH = --heads heads, at (T, B, H): lstmkit's parallel and chunkwise forms (the compiled
   engine where built, and engine="python", the same lines in torch ops); the same layer
   (same projections) over xLSTM's parallel_stabilized_simple and chunkwise_simple; the ratio
   of each to torch.nn.LSTM(H, H) in the same run. Issue's goal: parallel <= 1.0x torch.nn.LSTM.
   The chunk size is the largest divisor of T up to 64 (xLSTM's chunkwise needs T divisible),
   the same for both.
2. Chunkwise against parallel (training step, B = 4, H = 256) at T = 256, 1024, 4096 (parallel
   left out at 4096: O(T^2) memory): goal chunkwise <= 1.2x parallel at T = 256, and ms per
   step flat as T grows.
3. The cell's parallel form alone (no projections), forward and backward: the compiled
   kernels (csrc/mlstm.cpp) against the same lines in torch ops (engine="python").
4. Inference step, batch 1, no_grad: the cell step alone (lstmkit.cells.mlstm.step in python
   and lstmkit.engine.compiled.mlstm_step, csrc/mlstm.cpp, against xLSTM's
   recurrent_step_stabilized_simple), and the layer step (projections + cell step + o_t:
   lstmkit.mLSTM on one step, the compiled layer step where built, against the same layer over
   xLSTM's step). Goal: the compiled cell step >= 10x faster.

Correctness is the tests' job (tests/test_mlstm.py holds lstmkit's forms equal to each other and
to xLSTM's); this script only times.
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import median_ms
from torch import nn

import lstmkit
from lstmkit.cells import mlstm as cell
from lstmkit.engine import compiled

SIZES = [(35, 20, 256), (100, 32, 256), (256, 8, 512)]


def backends():
    from xlstm.blocks.mlstm import backends as P
    return P


def chunk_for(T: int) -> int:
    return max(c for c in range(1, min(64, T) + 1) if T % c == 0)


class PackageLayer(nn.Module):
    """lstmkit.mLSTM's projections and output gate around one of xLSTM's backend functions."""

    def __init__(self, ours: lstmkit.mLSTM, form: str, chunk_size: int = 64):
        super().__init__()
        self.ours, self.form, self.chunk_size = ours, form, chunk_size
        with torch.no_grad():       # for inference, stacked once (as lstmkit.mLSTM keeps it)
            self.stacked = self.stack()

    def stack(self):
        m = self.ours
        return (torch.cat([getattr(m, f"weight_{p}_l0") for p in "qkvifo"]),
                torch.cat([getattr(m, f"bias_{p}_l0") for p in "qkvifo"]))

    def project(self, x):
        m = self.ours
        L, N = x.shape[:2]
        H, NH, d = m.hidden_size, m.num_heads, m.head_size
        w, b = self.stack() if torch.is_grad_enabled() else self.stacked
        q, k, v, i, f, o = torch.nn.functional.linear(x, w, b).split([H, H, H, NH, NH, H], -1)
        q, k, v = (z.reshape(L, N, NH, d).permute(1, 2, 0, 3) for z in (q, k, v))
        return q, k, v, i.permute(1, 2, 0), f.permute(1, 2, 0), o       # k unscaled: xLSTM's

    def forward(self, x):
        P = backends()
        L, N = x.shape[:2]
        q, k, v, i, f, o = self.project(x)
        if self.form == "parallel":
            h = P.parallel_stabilized_simple(q, k, v, i[..., None], f[..., None])
        else:
            h = P.chunkwise_simple(q, k, v, i, f, chunk_size=self.chunk_size)
        return torch.sigmoid(o) * h.permute(2, 0, 1, 3).reshape(L, N, -1), None

    def step(self, x, state):
        P = backends()
        q, k, v, i, f, o = self.project(x)
        h, state = P.recurrent_step_stabilized_simple(*state, q, k, v, i[..., None], f[..., None])
        return torch.sigmoid(o) * h.reshape(1, 1, -1), state


def train_step(model, x, grad):
    model.zero_grad(set_to_none=True)
    out = model(x)[0]
    out.backward(grad)


def bench_training(size, heads: int, repeats: int) -> list[dict]:
    T, B, H = size
    torch.manual_seed(0)
    x = torch.randn(T, B, H)
    grad = torch.randn(T, B, H)
    cs = chunk_for(T)
    torch_lstm = nn.LSTM(H, H)
    par = lstmkit.mLSTM(H, H, num_heads=heads, mode="parallel")
    chk = lstmkit.mLSTM(H, H, num_heads=heads, mode="chunkwise", chunk_size=cs)
    chk.load_state_dict(par.state_dict())
    par_py = lstmkit.mLSTM(H, H, num_heads=heads, mode="parallel", engine="python")
    chk_py = lstmkit.mLSTM(H, H, num_heads=heads, mode="chunkwise", chunk_size=cs,
                           engine="python")
    par_py.load_state_dict(par.state_dict())
    chk_py.load_state_dict(par.state_dict())
    contenders = {"torch.nn.LSTM": torch_lstm, "lstmkit parallel": par,
                  "lstmkit chunkwise": chk, "lstmkit parallel, python engine": par_py,
                  "lstmkit chunkwise, python engine": chk_py,
                  "xLSTM parallel": PackageLayer(par, "parallel"),
                  "xLSTM chunkwise": PackageLayer(par, "chunkwise", cs)}
    times = median_ms(*[lambda m=m: train_step(m, x, grad) for m in contenders.values()],
                      repeats=repeats)
    ref = times[0]
    return [{"size": size, "what": k, "ms": t, "vs_torch": t / ref, "chunk": cs}
            for k, t in zip(contenders, times)]


def bench_lengths(heads: int, repeats: int) -> list[dict]:
    rows = []
    B, H = 4, 256
    for T in (256, 1024, 4096):
        torch.manual_seed(0)
        x, grad = torch.randn(T, B, H), torch.randn(T, B, H)
        chk = lstmkit.mLSTM(H, H, num_heads=heads, mode="chunkwise")
        models = {"chunkwise": chk}
        if T <= 1024:
            par = lstmkit.mLSTM(H, H, num_heads=heads, mode="parallel")
            par.load_state_dict(chk.state_dict())
            models["parallel"] = par
        times = median_ms(*[lambda m=m, x=x, g=grad: train_step(m, x, g)
                            for m in models.values()], repeats=repeats)
        t = dict(zip(models, times))
        rows.append({"T": T, "chunkwise": t["chunkwise"], "parallel": t.get("parallel"),
                     "per_step_us": 1e3 * t["chunkwise"] / T})
    return rows


def bench_cell_engines(size, heads: int, repeats: int) -> dict | None:
    """The cell's parallel form alone (q, k, v and the gates to h~, forward and backward of
    the sum of h~): the compiled kernels against the same lines in torch ops."""
    kernels = compiled.mlstm_parallel_kernel()
    if kernels is None:
        return None
    T, B, H = size
    d = H // heads
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, heads, T, d, generator=g, requires_grad=True) for _ in range(3))
    i_pre = torch.randn(B, heads, T, generator=g, requires_grad=True)
    f_pre = (torch.randn(B, heads, T, generator=g) + 3).requires_grad_()

    def run(kernels):
        h, _ = cell.parallel(q, k, v, i_pre, f_pre, kernels=kernels)
        h.sum().backward()
    t_c, t_py = median_ms(lambda: run(kernels), lambda: run(None), repeats=repeats)
    return {"size": size, "compiled": t_c, "python": t_py}


def bench_inference_step(H: int, heads: int, repeats: int) -> list[dict]:
    P = backends()
    torch.manual_seed(0)
    NH, d = heads, H // heads
    rows = []
    with torch.no_grad():
        q, k, v = (torch.randn(1, NH, d) for _ in range(3))
        i, f = torch.randn(1, NH), torch.randn(1, NH) + 3
        state = (torch.randn(1, NH, d, d), torch.randn(1, NH, d), torch.zeros(1, NH))
        pk = [x[:, :, None] for x in (q, k, v)]
        pstate = (state[0].mT.contiguous(), state[1][..., None], state[2][..., None, None])
        python = lambda: cell.step(q, k, v, i, f, state)                     # noqa: E731
        theirs = lambda: P.recurrent_step_stabilized_simple(                 # noqa: E731
            *pstate, *[x.clone() for x in pk], i[..., None, None], f[..., None, None])
        contenders = [python, theirs]
        if compiled.available():
            contenders.append(lambda: compiled.mlstm_step(q, k, v, i, f, state))
        times = median_ms(*contenders, repeats=20 * repeats)
        rows.append({"what": "cell step (python)", "ours": times[0], "theirs": times[1]})
        if compiled.available():
            rows.append({"what": "cell step (compiled)", "ours": times[2], "theirs": times[1]})

        layer = lstmkit.mLSTM(H, H, num_heads=heads)
        package = PackageLayer(layer, "step")
        x = torch.randn(1, 1, H)
        _, s = layer(torch.randn(3, 1, H))
        ps = (s[0][0].mT.contiguous(), s[1][0][..., None], s[2][0][..., None, None])
        lstm = nn.LSTM(H, H)
        hc = (torch.zeros(1, 1, H), torch.zeros(1, 1, H))
        t_ours, t_theirs, t_lstm = median_ms(lambda: layer(x, s), lambda: package.step(x, ps),
                                             lambda: lstm(x, hc), repeats=20 * repeats)
        rows.append({"what": "layer step", "ours": t_ours, "theirs": t_theirs, "lstm": t_lstm})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs in a row per round (3 rounds; median of all)")
    parser.add_argument("--sizes", nargs="*", default=None, help="sizes as T,B,H")
    parser.add_argument("--heads", type=int, default=4, help="mLSTM heads (H / heads per head)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    torch.set_flush_denormal(True)          # as a training run (lstmkit train) sets it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"flush-to-zero, {args.heads} heads\n")

    print("| (T, B, H) | chunk | contender | ms | / torch.nn.LSTM |\n|---|---:|---|---:|---:|")
    for size in sizes:
        for r in bench_training(size, args.heads, args.repeats):
            print(f"| {r['size']} | {r['chunk']} | {r['what']} | {r['ms']:.2f} | "
                  f"{r['vs_torch']:.2f} |", flush=True)

    rows = [r for r in (bench_cell_engines(size, args.heads, args.repeats) for size in sizes)
            if r is not None]
    if rows:
        print("\n| cell parallel form (T, B, H) | compiled ms | python ms | compiled / python |"
              "\n|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['size']} | {r['compiled']:.2f} | {r['python']:.2f} | "
                  f"{r['compiled'] / r['python']:.2f} |", flush=True)

    print("\n| T (B=4, H=256) | chunkwise ms | parallel ms | chunkwise / parallel "
          "| chunkwise us per step |\n|---:|---:|---:|---:|---:|")
    for r in bench_lengths(args.heads, max(1, args.repeats // 2)):
        par, chk = r["parallel"], r["chunkwise"]
        par_ms, ratio = ("-", "-") if par is None else (f"{par:.1f}", f"{chk / par:.2f}")
        print(f"| {r['T']} | {chk:.1f} | {par_ms} | {ratio} | {r['per_step_us']:.1f} |",
              flush=True)

    H = sizes[0][2]
    print(f"\n| B=1 step, H={H} | lstmkit us | xLSTM us | xLSTM / lstmkit | torch.nn.LSTM us |"
          "\n|---|---:|---:|---:|---:|")
    for r in bench_inference_step(H, args.heads, args.repeats):
        lstm = f"{1e3 * r['lstm']:.1f}" if "lstm" in r else "-"
        print(f"| {r['what']} | {1e3 * r['ours']:.1f} | {1e3 * r['theirs']:.1f} | "
              f"{r['theirs'] / r['ours']:.2f} | {lstm} |", flush=True)


if __name__ == "__main__":
    main()
