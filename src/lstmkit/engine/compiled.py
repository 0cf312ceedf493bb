"""The compiled CPU engine: ``SequenceFunction``'s whole time loop, forward and backward, in C++.

Same contract as ``lstmkit.engine.sequence``: same inputs (cell, batch_sizes in processing order,
x (T, B, I), initial states, weights), same outputs (each state after each step, (T, B, size)),
same gradients, same ``StepRecord`` filling for traces, same packed-batch rules. What changes is
where the loop runs: per step one recurrent matrix product and one fused, vectorised pass over
the gate pre-activations (``at::vec::Vectorized``), with flush-to-zero and denormals-are-zero set
for the engine's own loops and the caller's setting restored afterwards. The products run on
``at::mm`` (MKL), or, for large float32 calls, on oneDNN's prepacked inner product (the weights
reordered once per call; ``ONEDNN_STEP_MACS``). On AVX-512 builds, float32 batches of up to 64
rows run each step's recurrent product and the weight gradients (and, below the oneDNN
threshold, the input projection and dx) on oneDNN's brgemm micro-kernel; batches of 16 rows or
more of the LSTM without projection, the LayerNorm LSTM and GRU and the RNN run each thread's
share of the rows through the whole time loop, with no synchronisation between steps. The
sources are ``csrc/``: ``engine.cpp`` (time loop, bindings), one file per cell family,
``minrnn.cpp`` (minGRU's and minLSTM's whole recurrence as two ops of their own, for
``lstmkit.cells.minrnn``; ``extension()`` hands them out),
``onednn.cpp``, ``dropout.cpp``, and small headers by concern: ``sequence.h`` (what the loop and
the cells share), ``masks.h`` (recurrent dropout and zoneout), ``products.h``, ``brgemm.h``,
``vec_math.h``, ``layernorm.h``, ``denormals.h``, ``onednn.h`` and ``thresholds.h``, the bounds
this module reads through the extension (``thresholds()``) to choose engines, so that they are
written in one place.

The extension is built with ``torch.utils.cpp_extension`` on first use and cached per user under
``$XDG_CACHE_HOME/lstmkit/extensions`` (``~/.cache/lstmkit/extensions``), one directory per torch
version, CPU capability and hash of sources and flags; once built, a process imports it from
there directly (no ninja run, no lock). Without a C++ compiler and nothing built, or when the build
fails, ``engine="compiled"`` warns once and runs the python engine. float32 and float64 on the
CPU run compiled; other dtypes (bfloat16) and devices run the python engine. Under
``torch.autocast("cpu", dtype=torch.bfloat16)`` a float32 call runs every matrix product in
bfloat16 (operands rounded, float32 accumulation) while the gates, the cell state, the state
histories and every gradient stay float32; the outputs are float32. Small calls, where bfloat16
products cost more than they save, keep float32 products (``BF16_MIN_STEP_MACS``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..cells import minrnn as _minrnn_cell
from ..cells.base import Cell
from .sequence import Masks, StepRecord
from .workspace import on_release, scratch

CSRC = Path(__file__).with_name("csrc")
ENGINE_MODULE = "lstmkit_compiled"
DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_state: dict = {"tried": False, "ext": None, "error": None, "capability": None, "onednn": False,
                "thresholds": {}}
_warned: set[str] = set()


# ------------------------------------------------------------------ building
def cache_dir() -> Path:
    """Where built extensions live: $XDG_CACHE_HOME/lstmkit/extensions or
    ~/.cache/lstmkit/extensions."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "lstmkit" / "extensions"


def capability_flags() -> tuple[str, list[str]]:
    """The CPU capability torch's own kernels use here, and the compiler flags that make
    ``at::vec::Vectorized`` its SIMD form (without ``CPU_CAPABILITY_*`` it is a scalar loop)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "DEFAULT", []
    cap = torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return "AVX512", ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f",
                          "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]
    if cap == "AVX2":
        return "AVX2", ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma",
                        "-mf16c"]
    return "DEFAULT", []


@contextlib.contextmanager
def _ninja_on_path():
    """torch runs ``ninja`` from PATH. The one beside this python (the ``ninja`` package from
    PyPI) goes first whether or not the venv is activated: two ninja versions keep build logs
    the other does not read, and alternating them rebuilt the extension (a minute) each time."""
    dirs = [str(Path(sys.executable).parent)]
    with contextlib.suppress(ImportError, AttributeError):
        import ninja

        dirs.append(str(ninja.BIN_DIR))
    dirs = [d for d in dirs if shutil.which("ninja", path=d)]
    if not dirs:
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([*dirs, old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _extension(prefix: str, sources: list[Path]) -> tuple[str, Path, list[str]]:
    """The module name, build directory and compiler flags of an extension built from sources
    (with csrc/ on the include path) for this torch and this CPU. The key hashes the flags, the
    prefix and every file of csrc/ and of sources, so that a checkout with other sources (another
    worktree, an edited header) builds beside a cached build instead of loading it."""
    cap, flags = capability_flags()
    cflags = ["-O3", "-fopenmp", *flags]
    digest = hashlib.sha256(" ".join([prefix, torch.__version__, *cflags]).encode())
    for path in [*sorted(CSRC.glob("*.[ch]*")), *sources]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()[:16]
    build_dir = cache_dir() / f"torch-{torch.__version__}-{cap.lower()}-{key}"
    return f"{prefix}_{key}", build_dir, cflags


def _import_built(name: str, build_dir: Path):
    """The extension built before in build_dir, imported as it is (no ninja, no lock); None if
    it is not there or does not import (a build cut short)."""
    path = build_dir / f"{name}.so"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """One build per directory at a time, on a lock the kernel releases when its holder dies.
    torch's own lock file is a plain file: a build killed while holding it (SIGKILL) left it
    behind, and every later load waited on it forever; under this lock it can only be stale."""
    try:
        import fcntl
    except ImportError:                              # not POSIX: torch's lock alone
        yield
        return
    with open(build_dir / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        (build_dir / "lock").unlink(missing_ok=True)
        yield


def build_extension(prefix: str, sources: list[Path]):
    """The extension module built from sources (csrc/ on the include path), from the cache when
    it was built before, else compiled now (once per user; about a minute). The engine is
    ``build_extension(ENGINE_MODULE, engine_sources())``; tests build their hooks the same way."""
    name, build_dir, cflags = _extension(prefix, sources)
    built = _import_built(name, build_dir)
    if built is not None:
        return built
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler ({cxx!r} not found)")
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(build_dir):
        if not list(build_dir.glob("*.so")):
            print(f"lstmkit: building {prefix} into {build_dir} (once; about a minute)",
                  file=sys.stderr, flush=True)
        with _ninja_on_path():
            return cpp_extension.load(
                name=name, sources=[str(p) for p in sources], extra_cflags=cflags,
                extra_include_paths=[str(CSRC)], extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                verbose=bool(os.environ.get("LSTMKIT_BUILD_VERBOSE")))


def engine_sources() -> list[Path]:
    """The engine's translation units: every .cpp of csrc/."""
    return sorted(CSRC.glob("*.cpp"))


def _load():
    """The extension module, built or loaded from the cache at the first call; None if that
    failed (``build_error()`` says why)."""
    if _state["tried"]:                              # lock-free, so torch.compile traces it
        return _state["ext"]
    with _lock:
        if not _state["tried"]:
            try:
                ext = build_extension(ENGINE_MODULE, engine_sources())
                # asked once here, so that deciding an engine calls nothing compiled
                _state.update(ext=ext, capability=ext.capability(), onednn=ext.onednn(),
                              thresholds=ext.thresholds())
                on_release(ext.release_buffers)      # workspace.release() frees its buffers
            except Exception as e:                    # no compiler, compile error, no ninja
                _state["error"] = f"{type(e).__name__}: {e}"
            _state["tried"] = True
        return _state["ext"]


@torch.compiler.assume_constant_result     # torch.compile: asked once while tracing, not traced
def available() -> bool:
    """True when the compiled engine is built (building it now if it was not)."""
    return _load() is not None


def usable(cell: Cell, x: Tensor) -> bool:
    """True when this call can run compiled (building the extension now if it was not)."""
    return _unsupported(cell, x) is None and available()


def extension():
    """The extension module, built now if it was not; None when it could not be (``build_error()``
    says why). For the ops that are not the sequence engine: ``minrnn_forward``, ``minrnn_backward``
    (csrc/minrnn.cpp)."""
    return _load()


def build_error() -> str | None:
    """Why the extension could not be built or loaded (None if it was, or was not tried)."""
    return _state["error"]


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# ------------------------------------------------------------------ the autograd.Function
def cell_spec(cell: Cell) -> list[int] | None:
    """The cell as the C++ side takes it (``Cell.spec``); None for a cell it has no kernels for."""
    return cell.spec() if cell.compiled_kernel else None


def _mask_args(masks: Masks | None) -> tuple:
    """masks as the extension takes them: (h mask or None, [zone mask or None per state])."""
    if not masks:
        return None, []
    return masks.h, list(masks.zone) if masks.zone else []


def compiled_forward(cell: Cell, batch_sizes, x: Tensor, states0, weights, products,
                     record: StepRecord | None = None, masks: Masks | None = None):
    """``sequence_forward`` run by the extension: (gates, hist, bufs), bufs with the masks'
    buffers as ``sequence_forward`` leaves them. weights: (w_ih, w_hh, b_ih, b_hh, w_ch, w_hr);
    products as ``products(cell, x)`` gives them."""
    gates, hist, bufs = _state["ext"].forward(cell_spec(cell), batch_sizes or [], x,
                                              list(states0), *weights, *_mask_args(masks),
                                              *products)
    if record is not None:
        record.gates, record.hist = gates, hist
    return gates, hist, bufs


def compiled_backward(cell: Cell, batch_sizes, x: Tensor, gates: Tensor, hist, bufs, weights,
                      grad_hist, needs, products, record: StepRecord | None = None,
                      masks: Masks | None = None):
    """``sequence_backward`` run by the extension: [dx, dstates0..., dw_ih, ..., dw_hr], None
    where not needed or absent."""
    T, B = x.shape[:2]
    like = {"dtype": x.dtype, "device": x.device}
    packed = batch_sizes is not None
    # inactive rows of dgates and the grad buffers must be zero (they enter sums over steps)
    dgates = scratch("dgates", (T, B, gates.shape[-1]), **like, zero=packed)
    gbufs = [scratch(f"grad_buffer{i}", (T, B, width), **like, zero=packed)
             for i, width in enumerate(cell.grad_buffers)]
    if record is not None:                            # the trace keeps them
        dhist = [torch.empty(T, B, size, **like) for size in cell.state_sizes]
    else:                                             # the extension fills them entirely
        dhist = [scratch(f"dstate{i}", (T, B, size), **like, zero=False)
                 for i, size in enumerate(cell.state_sizes)]
    h_mask, zone = _mask_args(masks)
    # dL/d(each zoned state before zoneout)
    dzone = [None if d is None else scratch(f"dstate_raw{i}", (T, B, size), **like, zero=packed)
             for i, (d, size) in enumerate(zip(zone, cell.state_sizes))]
    grads = _state["ext"].backward(cell_spec(cell), batch_sizes or [], x, gates, list(hist),
                                   list(bufs), *weights, list(grad_hist), dgates, gbufs, dhist,
                                   list(needs), h_mask, zone, dzone, *products)
    if record is not None:
        record.dhist = dhist
    return [g if need else None for g, need in zip(grads, needs)]


def _unsupported(cell: Cell, x: Tensor) -> str | None:
    """Why this call cannot run compiled (None if it can)."""
    if x.device.type != "cpu":
        return f"engine='compiled' runs on the CPU only; {x.device.type} runs the python engine"
    if x.dtype not in DTYPES:
        return (f"engine='compiled' runs float32 and float64; {x.dtype} runs the python engine "
                "for now")
    if cell_spec(cell) is None:
        return f"engine='compiled' has no kernels for {type(cell).__name__}"
    return None


# Under bfloat16 autocast, products in bfloat16 from this many multiply-adds in one step's
# recurrent product (B x P x G*H) on; below it their fixed cost per call exceeds what they save
# and the engine keeps float32 products (benchmarks/bench_bf16.py: at 3.2M a training step took
# 0.75x the float32 time, at 2.4M 1.13x, at 1M 1.22x, at batch 1 5x).
BF16_MIN_STEP_MACS = 3_000_000


def step_macs(cell: Cell, x: Tensor) -> int:
    """Multiply-adds of one step's recurrent product for x (T, B, I): B x P x G*H."""
    return x.shape[1] * cell.state_sizes[0] * cell.num_gates * cell.hidden_size


def autocast_bf16() -> bool:
    """True under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def bf16_products(cell: Cell, x: Tensor, bf16_autocast: bool | None = None) -> bool:
    """True when a call on x (T, B, I) runs its matrix products in bfloat16: a float32 CPU tensor
    under bfloat16 autocast (``bf16_autocast``, or the current state when None), with a
    per-step product of at least ``BF16_MIN_STEP_MACS`` multiply-adds."""
    if bf16_autocast is None:
        bf16_autocast = autocast_bf16()
    return (x.dtype == torch.float32 and x.device.type == "cpu" and bf16_autocast
            and step_macs(cell, x) >= BF16_MIN_STEP_MACS)


# float32 weight products (input projection, each step's recurrent products, dx) on oneDNN's
# prepacked inner product (torch.ops.mkldnn, what torch.compile uses for linear layers on the
# CPU) instead of at::mm (MKL), from this many multiply-adds per step and this many steps on.
# float32 training step (bench_compiled.py, bench_bf16.py): 0.70-0.95x the MKL time at 8.4M and
# 67M per step (batch x hidden 32 x 256, 64 x 512), 1.1-1.26x at 3.2M (20 x 200), where the
# weight reorders (1-6 products each) and per-call cost are not paid back; oneDNN for the input
# projection and dx alone was no faster at 3.2M and 1M per step. On AVX-512 builds the per-step
# products of batches up to 64 rows run on brgemm instead, and the smaller calls' whole-sequence
# products on brgemm tiles (csrc/brgemm.h). bfloat16 products take the prepacked path whenever the
# call is long enough: at::mm re-packs the weights into bfloat16 pairs at every call (one step's
# product at 64 x 512 x 2048: 459 us, prepacked 342 us).
ONEDNN_STEP_MACS = 8_000_000
ONEDNN_MIN_STEPS = 16


def products(cell: Cell, x: Tensor, bf16_autocast: bool | None = None) -> tuple[bool, bool]:
    """How a call on x (T, B, I) runs its matrix products: (in bfloat16, on oneDNN's prepacked
    inner product); (False, False) is at::mm in x's dtype, (True, False) at::mm in bfloat16.
    Decided by x's sizes, so the operators decide it in their kernels, where sizes are known."""
    long = x.shape[0] >= ONEDNN_MIN_STEPS
    if bf16_products(cell, x, bf16_autocast):
        return True, long and _state["onednn"]
    onednn = (x.dtype == torch.float32 and x.device.type == "cpu" and long
              and step_macs(cell, x) >= ONEDNN_STEP_MACS and _state["onednn"])
    return False, onednn


# A standard float32 LSTM's training step (forward and backward) where the extension runs the
# steps on brgemm (AVX-512 builds, at most brgemm_max_rows rows, transpose_min_steps steps or
# more; csrc/thresholds.h, read from the extension): 0.71-1.07x the time of torch's fused LSTM
# in three runs of bench_compiled.py over its five sizes, batch 1 to 64 (35 x 20: 0.93-1.07,
# level; the other four 0.71-0.96); inference alone 0.94-1.11x, so auto keeps torch's kernel for
# it (BENCHMARKS.md, seventh run).
def trains_faster(x: Tensor) -> bool:
    """True when a standard LSTM's training call on x (T, B, I) runs faster compiled than on
    torch's fused kernel, as measured: float32 on the CPU, an AVX-512 build of the extension, at
    most ``brgemm_max_rows`` rows and at least ``transpose_min_steps`` steps (the extension's
    ``thresholds()``, from csrc/thresholds.h), where every product runs on brgemm."""
    if not (x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 3
            and available() and _state["capability"] == "AVX512"):
        return False
    bounds = _state["thresholds"]
    return x.shape[0] >= bounds["transpose_min_steps"] and \
        1 <= x.shape[1] <= bounds["brgemm_max_rows"]


def fallback_reason(cell: Cell, x: Tensor) -> str | None:
    """None when this call runs compiled; else why not, warned once (the python engine runs)."""
    reason = _unsupported(cell, x)
    if reason is None and not available():
        reason = ("lstmkit: the compiled engine is unavailable "
                  f"({(build_error() or '').splitlines()[0][:300]}); engine='compiled' runs the "
                  "python engine (lstmkit.engine.compiled.build_error() has the details)")
    if reason is not None:
        _warn_once(reason.split(";")[0], reason)
    return reason


# ------------------------------------------------------------------ mLSTM inference step
def mlstm_step_kernel():
    """The extension's fused mLSTM step (csrc/mlstm.cpp) as (``mlstm_step``,
    ``mlstm_layer_step``), or None when it is not built (``lstmkit.cells.mlstm.step`` then)."""
    ext = _load()
    return None if ext is None else (ext.mlstm_step, ext.mlstm_layer_step)


def mlstm_parallel_kernel():
    """The extension's mLSTM parallel form for training (csrc/mlstm.cpp) as (forward,
    backward), what ``lstmkit.cells.mlstm.parallel(..., kernels=)`` runs; None when it is not
    built."""
    ext = _load()
    return None if ext is None else (ext.mlstm_parallel_forward, ext.mlstm_parallel_backward)


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor, state=None, *,
               forget_gate: str = "sigmoid", eps: float = 0.0):
    """``lstmkit.cells.mlstm.step`` in one compiled call for every head and row, no autograd:
    q, k, v (*, d), i~ and f~ (*), state (C~ (*, d, d), n~ (*, d), m (*)) or None; float32 or
    float64 CPU tensors. Returns (h~ (*, d), (C~, n~, m)), new tensors. Raises RuntimeError
    where the extension is not built (``build_error()`` says why)."""
    kernels = mlstm_step_kernel()
    if kernels is None:
        raise RuntimeError(f"lstmkit: the compiled engine is unavailable ({build_error()})")
    C0, n0, m0 = (None, None, None) if state is None else state
    h, C, n, m = kernels[0](q, k, v, i_pre, f_pre, C0, n0, m0, forget_gate == "exp", eps)
    return h, (C, n, m)


# minGRU/minLSTM's step loop (cells/minrnn.py, below the engine) reaches the extension here
_minrnn_cell.extension_loader, _minrnn_cell.extension_error = extension, build_error
