"""Time and peak memory of one OTDD flow step against n (784-d), tensorized vs online outer cost.

    python scripts/bench_large_n.py --sizes 1000,5000,20000 --backends tensorized,online --threads 2
    python scripts/bench_large_n.py --sizes 1000,5000 --steps 3 --out bench.json
    python scripts/bench_large_n.py --device cuda --sizes 5000,60000 --backends auto   # GPU (bench_gpu.sh)

Each (n, backend) runs in its own process (``--worker``), so that its peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: everything the process ever held resident --
torch's CPU allocations, Python, the libraries) belongs to that configuration alone; on CUDA
the worker also reports ``torch.cuda.max_memory_allocated``.  Repeats are run round-robin over
the configurations, so a change of machine load hits all of them alike; the summary gives
medians.

Data: synthetic, not MNIST (the 60K MNIST training files are not on this machine): 10 classes,
each a random sparse template in [0, 1]^784 plus N(0, 0.1^2) pixel noise, clipped to [0, 1];
source and target use different templates (n samples each, m = n).  The functional is the
flow's: OTDD (label model ``--inner``: ``means`` by default, whose ``k x k'`` table costs
nothing, so that the step time is the outer solver's; ``gaussian`` adds the Bures distances
between class Gaussians, whose cost depends on the classes and d, not on n^2), debiased
Sinkhorn at the paper's
eps in pixel units (``entreg`` 18.99, the nist_to_mnist preset), ``tol`` 0.1, warm starts; one
step = value + backward + an SGD update with ``lr = time_step * n`` (time step 0.05).  Step 0 is
cold (epsilon-scaling from the diameter), later steps are warm-started.  The target-side
caches (target class Gaussians, target self potential) are built before step 0 and timed
apart as ``setup``.

The summary fits ``log(seconds) = a + k log(n)`` per backend (the growth exponent ``k``) and
``peak = c + q n^2`` (tensorized) or ``c + l n`` (online) to extrapolate the largest n whose
peak fits a memory size (``--ram-gb``, default 24).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time


def make_data(n: int, d: int, classes: int, seed: int, device, dtype):
    """``(x, y)``: ``n`` samples of ``classes`` random sparse templates + pixel noise in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, d, generator=g) * (torch.rand(classes, d, generator=g) < 0.2)
    y = torch.arange(n) % classes
    x = (templates[y] + 0.1 * torch.randn(n, d, generator=g)).clamp_(0, 1)
    return x.to(device=device, dtype=dtype), y.to(device)


def worker(args) -> dict:
    import resource

    import torch

    from dsflow.data.container import LabeledData
    from dsflow.flow.state import ParticleState
    from dsflow.functionals.otdd import OTDD

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    n = args.n
    xs, ys = make_data(n, args.d, 10, 1, device, dtype)
    xt, yt = make_data(n, args.d, 10, 2, device, dtype)
    target = LabeledData(xt.cpu(), yt.cpu(), name="target")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    F = OTDD(inner=args.inner, entreg=args.entreg, tol=args.tol, cost_backend=args.backend,
             chunk_size=args.chunk_size, memory_budget_gb=args.memory_budget_gb).bind(target=target)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    F._target(device, dtype)  # the target-side caches every flow builds once
    sync()
    setup = time.perf_counter() - t
    x = xs.clone().requires_grad_()
    lr = args.time_step * n
    steps = []
    for step in range(args.steps):
        sync()
        t = time.perf_counter()
        value = F(ParticleState(x=x, y=ys))
        value.backward()
        with torch.no_grad():
            x -= lr * x.grad
        x.grad = None
        sync()
        dt = time.perf_counter() - t
        info = F.last_info
        steps.append({"step": step, "seconds": dt, "value": float(value.detach()), "warm": info["warm"],
                      "iterations": info["iterations"], "schedule_steps": info["schedule_steps"],
                      "self_x_iterations": info.get("self_x_iterations"), "time_labels": info["time_labels"],
                      "time_outer": info["time_outer"], "cost_backend": info["cost_backend"], "chunk_rows": info.get("chunk_rows")})
        print(json.dumps({"n": n, **steps[-1]}), file=sys.stderr, flush=True)
    out = {"n": n, "d": args.d, "inner": args.inner, "backend": args.backend, "device": str(device), "dtype": args.dtype,
           "threads": torch.get_num_threads(), "setup_seconds": setup, "steps": steps,
           "rss_after_data_mib": rss0, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def _fit(xs, ys):
    """Least squares ``y = a + k x``: ``(a, k)``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((u - mx) ** 2 for u in xs)
    k = sum((u - mx) * (v - my) for u, v in zip(xs, ys)) / sxx if sxx > 0 else float("nan")
    return my - k * mx, k


def summarise(results: list[dict], ram_gb: float) -> str:
    by = {}
    for r in results:
        by.setdefault((r["backend"], r["n"]), []).append(r)
    lines = ["| backend | n | setup s | cold step s | warm step s (median) | iterations cold / warm | "
             "peak RSS MiB | RSS after data MiB | peak - data MiB | tensorized estimate MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fits = {}
    for (be, n), rs in sorted(by.items()):
        cold = statistics.median(r["steps"][0]["seconds"] for r in rs)
        warm_all = [s["seconds"] for r in rs for s in r["steps"][1:]]
        warm = statistics.median(warm_all) if warm_all else float("nan")
        it_c = rs[0]["steps"][0]["iterations"]
        it_w = rs[0]["steps"][-1]["iterations"] if len(rs[0]["steps"]) > 1 else "-"
        peak = statistics.median(r["peak_rss_mib"] for r in rs)
        base = statistics.median(r["rss_after_data_mib"] for r in rs)
        setup = statistics.median(r["setup_seconds"] for r in rs)
        extra = f" (CUDA peak {statistics.median(r['cuda_peak_allocated_mib'] for r in rs):.0f})" if "cuda_peak_allocated_mib" in rs[0] else ""
        from dsflow.ot.online import tensorized_bytes

        est = tensorized_bytes(n, n, 4 if rs[0]["dtype"] == "float32" else 8, self_x=True, self_y=False) / 2**20
        lines.append(f"| {be} | {n} | {setup:.2f} | {cold:.2f} | {warm:.2f} | {it_c} / {it_w} | {peak:.0f}{extra} | "
                     f"{base:.0f} | {peak - base:.0f} | {est:.0f} |")
        fits.setdefault(be, []).append((n, cold, warm, peak - base, base))
    out = ["\n".join(lines), ""]
    for be, rows in fits.items():
        if len(rows) < 2:
            continue
        ln = [math.log(r[0]) for r in rows]
        _, kc = _fit(ln, [math.log(r[1]) for r in rows])
        msg = f"* {be}: time exponent (log cold-step s vs log n) {kc:.2f}"
        if all(math.isfinite(r[2]) for r in rows):
            _, kw = _fit(ln, [math.log(r[2]) for r in rows])
            msg += f", warm {kw:.2f}"
        # memory model: peak RSS = c + l n + q n^2 (least squares; exact through 3 sizes):
        # the n x m matrices (tensorized) are the q term, features and blocks the l term
        import numpy as np

        ns = np.array([r[0] for r in rows], dtype=float)
        peaks = np.array([r[3] + r[4] for r in rows], dtype=float)
        cols = [np.ones_like(ns), ns, ns**2][: min(3, len(rows))]
        coef = np.linalg.lstsq(np.stack(cols, 1), peaks, rcond=None)[0]
        coef = np.concatenate([coef, np.zeros(3 - len(coef))])
        budget = ram_gb * 1024
        lo, hi = 1.0, 1e9  # largest n with c + l n + q n^2 <= budget (bisection; the fit must grow)
        grows = coef[1] > 0 or coef[2] > 0
        for _ in range(200 if grows else 0):
            mid = math.sqrt(lo * hi)
            if coef[0] + coef[1] * mid + coef[2] * mid**2 <= budget:
                lo = mid
            else:
                hi = mid
        reach = f"n ~ {lo:,.0f}" if grows else "n: fit does not grow"
        msg += (f"; peak RSS fit {coef[0]:.0f} + {coef[1]:.3g} n + {coef[2]:.3g} n^2 MiB: a {ram_gb:g} GB machine "
                f"reaches {reach} (extrapolated)")
        out.append(msg)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--backends", default="tensorized,online", help="comma list of auto|tensorized|online")
    ap.add_argument("--steps", type=int, default=2, help="flow steps per configuration (step 0 cold, then warm)")
    ap.add_argument("--repeats", type=int, default=1, help="round-robin repeats of every configuration")
    ap.add_argument("--skip", default="", help="comma list of backend:n to leave out, e.g. online:20000")
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--inner", default="means", help="label model: means (cheap, isolates the outer solver) | gaussian")
    ap.add_argument("--entreg", type=float, default=18.99)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--time-step", type=float, default=0.05)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--memory-budget-gb", type=float, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--ram-gb", type=float, default=24.0, help="memory size to extrapolate the largest n to")
    ap.add_argument("--out", default=None, help="write all results as JSON here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    skip = {tuple(s.split(":")) for s in args.skip.split(",") if s}
    configs = [(b, n) for n in sizes for b in backends if (b, str(n)) not in skip]
    results = []
    for rep in range(args.repeats):
        for be, n in configs:
            cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--backend", be, "--steps", str(args.steps),
                   "--d", str(args.d), "--inner", args.inner, "--entreg", str(args.entreg), "--tol", str(args.tol),
                   "--time-step", str(args.time_step), "--threads", str(args.threads), "--device", args.device,
                   "--dtype", args.dtype]
            if args.chunk_size:
                cmd += ["--chunk-size", str(args.chunk_size)]
            if args.memory_budget_gb:
                cmd += ["--memory-budget-gb", str(args.memory_budget_gb)]
            print(f"# repeat {rep}: {be} n={n}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                print(f"# {be} n={n} failed (exit {proc.returncode}) after {time.perf_counter() - t:.0f} s",
                      file=sys.stderr, flush=True)
                results.append({"backend": be, "n": n, "failed": proc.returncode})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            if args.out:
                with open(args.out, "w") as fh:
                    json.dump(results, fh, indent=1)
    ok = [r for r in results if "failed" not in r]
    print(summarise(ok, args.ram_gb))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
