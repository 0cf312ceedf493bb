"""Training step (forward + backward) of lstmkit's sLSTM against torch.nn.LSTM of the same sizes and
the xlstm package's vanilla sLSTM (its head-wise projections and its pointwise step in a Python
loop, what runs without its CUDA kernel).

Usage:
    .venv/bin/python benchmarks/bench_slstm.py [--repeats 5] [--sizes T,B,H ...] [--heads 1 4]
        [--threads 1] [--no-package]

Rows: one per size and number of heads, float32, flush-to-zero, input size = H, a loss on every
step's output. Columns: ms of lstmkit.sLSTM (engine="auto": the compiled engine), its ratio to
torch.nn.LSTM(H, H) measured in the same run (the issue's goal: <= 1.5), the package's ms and
our ratio to it. Before timing, the package's output is checked against ours on converted
parameters (lstmkit.cells.slstm.from_xlstm). Medians, the contenders taking turns
(bench_layers.median_ms).
"""

from __future__ import annotations

import argparse

import torch
from bench_layers import median_ms, train_step
from torch import nn

import lstmkit
from lstmkit.cells.slstm import from_xlstm

SIZES = [(35, 20, 256), (100, 32, 256), (256, 8, 512)]


class PackageSLSTM(nn.Module):
    """The xlstm package's sLSTMLayer up to its cell's output (no convolution, group norm or
    dropout), vanilla backend; time-major in and out, as the other contenders."""

    def __init__(self, H: int, heads: int):
        super().__init__()
        from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

        self.layer = sLSTMLayer(sLSTMLayerConfig(
            embedding_dim=H, num_heads=heads, conv1d_kernel_size=0, backend="vanilla",
            dtype="float32", recurrent_weight_init="standard"))

    def forward(self, x):
        x = x.transpose(0, 1)                                     # (B, T, H)
        m = self.layer
        y, _ = m.slstm_cell(torch.cat([m.fgate(x), m.igate(x), m.zgate(x), m.ogate(x)], -1))
        return y.permute(2, 0, 1, 3).reshape(x.shape[1], x.shape[0], -1)   # (B, K, T, DH)


def bench_size(size, heads: int, repeats: int, package: bool) -> dict:
    T, B, H = size
    torch.manual_seed(0)
    x = torch.randn(T, B, H, requires_grad=True)
    grad = torch.randn(T, B, H)
    reference = nn.LSTM(H, H)
    ours = lstmkit.sLSTM(H, H, num_heads=heads)
    contenders = [reference, ours]
    if package:
        theirs = PackageSLSTM(H, heads)
        ours.load_state_dict(from_xlstm(theirs.layer))
        with torch.no_grad():
            torch.testing.assert_close(ours(x)[0], theirs(x), atol=1e-4, rtol=1e-4)
        contenders.append(theirs)
    times = median_ms(*[lambda m=m: train_step(m, x, grad) for m in contenders],
                      repeats=repeats)
    row = {"size": size, "heads": heads, "torch_ms": times[0], "ms": times[1],
           "vs_torch": times[1] / times[0]}
    if package:
        row.update(package_ms=times[2], vs_package=times[1] / times[2])
    return row


def table(rows) -> str:
    lines = ["| (T, B, H) | heads | lstmkit sLSTM ms | torch.nn.LSTM ms | / torch.nn.LSTM "
             "| xlstm vanilla ms | / xlstm |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        pkg = (f"{r['package_ms']:.1f} | {r['vs_package']:.3f}" if "package_ms" in r
               else "- | -")
        lines.append(f"| {r['size']} | {r['heads']} | {r['ms']:.2f} | {r['torch_ms']:.2f} | "
                     f"{r['vs_torch']:.2f} | {pkg} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs in a row per round (3 rounds; median of all)")
    parser.add_argument("--sizes", nargs="*", default=None, help="sizes as T,B,H")
    parser.add_argument("--heads", type=int, nargs="*", default=[1, 4], help="num_heads")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-package", action="store_true",
                        help="leave out the xlstm package's vanilla sLSTM")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          "flush-to-zero, training step\n")
    torch.set_flush_denormal(True)
    try:
        rows = []
        for size in sizes:
            for heads in args.heads:
                rows.append(bench_size(size, heads, args.repeats, not args.no_package))
                print(table(rows[-1:]), flush=True)
        print("\n" + table(rows))
    finally:
        torch.set_flush_denormal(False)


if __name__ == "__main__":
    main()
