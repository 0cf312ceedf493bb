"""lstmkit exported to ONNX: parity with lstmkit, speed in onnxruntime (float32, int8), size.

    python benchmarks/bench_onnx.py [--quick] [--runs RUN ...]

1. Parity: every cell and variant exported at (T, B) = (4, 2), run by onnxruntime at (50, 7):
   the largest |onnxruntime - lstmkit| over outputs and final states (float32).
2. Speed, a 1-layer LSTM of H units (input H), medians: one streaming step at batch 1 (state in,
   state out: the deployment case) and a (T, B) = (100, 32) batch. lstmkit eager, torch.nn.LSTM
   eager, onnxruntime float32, onnxruntime int8 (dynamic quantization),
   torch.ao.quantization.quantize_dynamic int8; every contender on the same number of threads,
   the contenders taking turns in 3 rounds (bench_layers.median_ms).
3. Size on disk, float32 and int8.
4. With --runs: each run folder exported with --int8, its test metrics in float32 and int8.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_layers import median_ms  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit.export import export_onnx  # noqa: E402
from lstmkit.export.runs import quantize_int8  # noqa: E402

I, H_PARITY = 16, 32
CONFIGS = {
    "lstm": lambda: lstmkit.LSTM(I, H_PARITY),
    "peephole": lambda: lstmkit.LSTM(I, H_PARITY, peephole=True),
    "coupled": lambda: lstmkit.LSTM(I, H_PARITY, coupled=True),
    "peephole+coupled": lambda: lstmkit.LSTM(I, H_PARITY, peephole=True, coupled=True),
    "gru": lambda: lstmkit.GRU(I, H_PARITY),
    "gru reset_after=False": lambda: lstmkit.GRU(I, H_PARITY, reset_after=False),
    "rnn tanh": lambda: lstmkit.RNN(I, H_PARITY),
    "rnn relu": lambda: lstmkit.RNN(I, H_PARITY, nonlinearity="relu"),
    "lstm 2 layers bidirectional": lambda: lstmkit.LSTM(I, H_PARITY, 2, bidirectional=True),
    "peephole+coupled 2 layers bi": lambda: lstmkit.LSTM(I, H_PARITY, 2, bidirectional=True,
                                                         peephole=True, coupled=True),
    "gru 2 layers bi batch_first": lambda: lstmkit.GRU(I, H_PARITY, 2, batch_first=True,
                                                       bidirectional=True),
    "lstm proj_size=8 (Scan)": lambda: lstmkit.LSTM(I, H_PARITY, proj_size=8),
    "lstm proj_size=8 2 layers bi": lambda: lstmkit.LSTM(I, H_PARITY, 2, proj_size=8,
                                                         bidirectional=True),
}


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def shape(layer, T: int, B: int) -> tuple[int, int, int]:
    return (B, T, I) if layer.batch_first else (T, B, I)


def parity(tmp: Path) -> None:
    print("## Parity: onnxruntime vs lstmkit, exported at (T, B) = (4, 2), run at (50, 7)\n")
    print("| configuration | ONNX operator | max abs diff (outputs, h_n, c_n) |")
    print("|---|---|---:|")
    worst = 0.0
    for name, make in CONFIGS.items():
        torch.manual_seed(0)
        layer = make().eval()
        path = export_onnx(layer, tmp / "p.onnx", torch.randn(*shape(layer, 4, 2)))
        x = torch.randn(*shape(layer, 50, 7))
        got = session(path, 1).run(None, {"input": x.numpy()})
        with torch.no_grad():
            out, hidden = layer(x)
        expected = [out, *(hidden if isinstance(hidden, tuple) else (hidden,))]
        diff = max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))
        worst = max(worst, diff)
        import onnx
        ops = sorted({n.op_type for n in onnx.load(path).graph.node} & {"LSTM", "GRU", "RNN",
                                                                         "Scan"})
        print(f"| {name} | {', '.join(ops)} | {diff:.1e} |")
    print(f"\nlargest difference {worst:.1e} ({'within' if worst <= 1e-5 else 'ABOVE'} 1e-5)\n")


def time_case(contenders, T: int, B: int, H: int, reps: int) -> list[float]:
    """Medians (ms) of one call with state in and out: torch modules and sessions, taking turns
    (bench_layers.median_ms)."""
    x = torch.randn(T, B, H)
    h0, c0 = torch.zeros(1, B, H), torch.zeros(1, B, H)
    feed = {"input": x.numpy(), "initial_h": h0.numpy(), "initial_c": c0.numpy()}

    def call(c):
        if isinstance(c, ort.InferenceSession):
            return lambda: c.run(None, feed)
        return lambda: c(x, (h0, c0))

    with torch.no_grad():
        return median_ms(*map(call, contenders), repeats=max(1, reps // 3))


def speed(tmp: Path, sizes: list[int], threads: int, reps_step: int, reps_batch: int) -> None:
    torch.set_num_threads(threads)
    print(f"## Speed: 1-layer LSTM, input = hidden = H, {threads} thread(s), medians in ms\n")
    print("| H | case | lstmkit eager | torch.nn.LSTM | onnxruntime f32 | onnxruntime int8 | "
          "torch int8 (quantize_dynamic) | lstmkit / ort f32 | ort f32 / ort int8 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    size_rows = []
    for H in sizes:
        torch.manual_seed(0)
        layer = lstmkit.LSTM(H, H).eval()
        ref = layer.to_torch().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q_torch = torch.ao.quantization.quantize_dynamic(ref, {nn.LSTM}, dtype=torch.qint8)
        f32 = export_onnx(layer, tmp / f"s{H}.onnx", torch.randn(4, 2, H), streaming=True)
        i8 = tmp / f"s{H}.int8.onnx"
        quantize_int8(f32, i8)
        size_rows.append((H, f32.stat().st_size, i8.stat().st_size))
        s32, s8 = session(f32, threads), session(i8, threads)
        for case, T, B, reps in (("B=1 streaming step", 1, 1, reps_step),
                                 ("(T, B) = (100, 32)", 100, 32, reps_batch)):
            t_lk, t_torch, t_32, t_8, t_q = time_case([layer, ref, s32, s8, q_torch], T, B, H,
                                                      reps)
            print(f"| {H} | {case} | {t_lk:.3f} | {t_torch:.3f} | {t_32:.3f} | {t_8:.3f} | "
                  f"{t_q:.3f} | {t_lk / t_32:.2f} | {t_32 / t_8:.2f} |")
    print("\n## Size on disk (the streaming layer above)\n")
    print("| H | float32 | int8 | ratio |")
    print("|---:|---:|---:|---:|")
    for H, a, b in size_rows:
        print(f"| {H} | {a / 1e6:.2f} MB | {b / 1e6:.2f} MB | {a / b:.2f} |")
    print()


def runs(folders: list[str], tmp: Path) -> None:
    from lstmkit.cli import load_run
    from lstmkit.export.runs import export_task_model

    print("## Trained runs: test metrics in float32 and int8 (onnxruntime)\n")
    print("| run | task | metric | float32 | int8 | difference | size float32 | size int8 |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for folder in folders:
        cfg, task, model = load_run(folder, for_training=True)
        meta = export_task_model(cfg, task, model, tmp / "run.onnx", int8=True)
        ev, size = meta["evaluation"], meta["size_bytes"]
        metric = {"names": "accuracy", "ptb": "perplexity", "chars": "bits_per_token",
                  "jsb": "nll_per_step", "forecast": "mape"}.get(cfg.task, "loss")
        a, b = ev["float32"][metric], ev["int8"][metric]
        diff = f"{(b - a) * 100:+.2f} points" if metric == "accuracy" else \
            f"{(b - a) / a * 100:+.2f}%"
        print(f"| {folder} | {cfg.task} | {metric} | {a:.4f} | {b:.4f} | {diff} | "
              f"{size['float32'] / 1e6:.2f} MB | {size['int8'] / 1e6:.2f} MB |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="H=128 only, few repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=[], help="run folders to export in int8")
    parser.add_argument("--skip-parity", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_parity:
            parity(tmp)
        if args.quick:
            speed(tmp, [128], args.threads, 50, 3)
        else:
            speed(tmp, [128, 256, 512], args.threads, 500, 30)
        if args.runs:
            runs(args.runs, tmp)


if __name__ == "__main__":
    main()
