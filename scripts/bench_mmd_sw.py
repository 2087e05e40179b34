"""Benchmarks of the WoW functional (`mmd_sw`): value + gradient time, peak memory, and its time
per step against the OTDD functional on the same digits task, in one run.

    python scripts/bench_mmd_sw.py                      # all three parts (a few minutes on 2 cores)
    python scripts/bench_mmd_sw.py --part step          # 10 x 200 x 784, L = 500 only
    python scripts/bench_mmd_sw.py --device cuda        # the same on a GPU

Parts (medians over repeats after one warm-up, configurations round-robin so that they see the
same machine load; JSON lines on stdout):

* ``step``: 1/2 MMD^2 value + gradient, 10 classes x 200 particles x 784-d against a target of the
  same size, L = 500, float32 (the issue's target: <= 0.15 s on the 2-core CPU), threads 1 and 2;
* ``large``: 10 x 500 x 3072 (CIFAR-sized), L = 500: time and peak memory, measured in a fresh
  subprocess (peak resident set minus the resident set before the first evaluation, on CPU;
  ``torch.cuda.max_memory_allocated`` on CUDA);
* ``digits``: one flow step (value, gradient, update, on particles of its own: OTDD's warm starts
  work as in a flow) of mmd_sw (L = 100, the wow_digits_da preset, and L = 500) and of the OTDD
  functional (entreg 1, the default demo's) on the 896 rotated digits against the 901 digits,
  round-robin; the ratio is what a step of each family costs.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def _data(classes, per_class, dim, device, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    n = classes * per_class
    x = torch.rand(n, dim, generator=g).to(device)
    xt = torch.rand(n, dim, generator=g).to(device) * 0.8 + 0.1
    y = (torch.arange(n) % classes).to(device)
    return x, y, xt, y.clone()


def _step_fn(functional, x, y):
    import torch

    from dsflow.state import ParticleState

    def step(r):
        xg = x.detach().clone().requires_grad_()
        functional(ParticleState(x=xg, y=y, step=r)).backward()
        if xg.is_cuda:
            torch.cuda.synchronize()
        return xg.grad

    return step


def _time_round_robin(fns: dict, repeats: int) -> dict:
    times = {k: [] for k in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v[1:]), "best_s": min(v[1:]), "repeats": repeats}
            for k, v in times.items()}


def part_step(device, repeats):
    import torch

    from dsflow.data.container import LabeledData
    from dsflow.functionals import MMDSW

    x, y, xt, yt = _data(10, 200, 784, device)
    f = MMDSW(n_projections=500).bind(target=LabeledData(x=xt, y=yt))
    out = {}
    for threads in ((1, 2) if device == "cpu" else (None,)):
        if threads:
            torch.set_num_threads(threads)
        res = _time_round_robin({"mmd_sw": _step_fn(f, x, y)}, repeats)["mmd_sw"]
        out[f"threads_{threads}" if threads else device] = res
    return {"part": "step", "shape": "10x200x784 vs 10x200x784", "L": 500, "device": device, **out}


def part_large_child(device, repeats):
    """Runs in a fresh process: peak memory of the 10 x 500 x 3072 evaluation alone."""
    import resource

    import torch

    from dsflow.data.container import LabeledData
    from dsflow.functionals import MMDSW

    x, y, xt, yt = _data(10, 500, 3072, device)
    f = MMDSW(n_projections=500).bind(target=LabeledData(x=xt, y=yt))
    step = _step_fn(f, x, y)
    f._target(x.device, x.dtype)  # the cached target term is part of the set-up, not of a step
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    times = _time_round_robin({"large": step}, repeats)["large"]
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    inputs = 2 * x.numel() * x.element_size() / 2**20
    return {"part": "large", "shape": "10x500x3072 vs 10x500x3072", "L": 500, "device": device,
            "threads": torch.get_num_threads(), **times, "peak_extra_MiB": round(peak, 1),
            "inputs_MiB": round(inputs, 1)}


def _flow_step_fn(functional, x, y, make_opt):
    """One flow step (value, gradient over the class masses when the functional has them, update)
    on particles of its own, so that warm starts (OTDD) and moving particles are as in a flow."""
    import torch

    from dsflow.state import ParticleState

    xg = x.detach().clone().requires_grad_()
    opt = make_opt([xg])
    masses = functional.particle_masses(y)

    def step(r):
        opt.zero_grad()
        functional(ParticleState(x=xg, y=y, step=r)).backward()
        if masses is not None:
            xg.grad.div_(masses.to(xg)[:, None])
        opt.step()
        if xg.is_cuda:
            torch.cuda.synchronize()

    return step


def part_digits(device, repeats):
    import functools

    import torch
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from dsflow.data import digits
    from dsflow.functionals import MMDSW, OTDD

    torch.set_num_threads(1)  # the demos' setting (threads: 1)
    with initialize_config_module("dsflow.configs", version_base=None):
        cfg = compose("config", ["+experiment=default"])
    source = instantiate(cfg.source)
    target = digits(split="train")
    x, y = source.x.reshape(source.n, -1).to(device), source.y.to(device)
    momentum = functools.partial(torch.optim.SGD, lr=5.0, momentum=0.9)
    fns = {  # each with its preset's optimizer (wow_digits_da / the default demo)
        "mmd_sw_L100": _flow_step_fn(MMDSW(n_projections=100).bind(target=target), x, y, momentum),
        "mmd_sw_L500": _flow_step_fn(MMDSW(n_projections=500).bind(target=target), x, y, momentum),
        "otdd_entreg1": _flow_step_fn(OTDD(entreg=1.0).bind(target=target), x, y,
                                      functools.partial(torch.optim.SGD, lr=200.0)),
    }
    res = _time_round_robin(fns, repeats)
    base = res["otdd_entreg1"]["median_s"]
    ratios = {f"{k}_over_otdd": v["median_s"] / base for k, v in res.items() if k != "otdd_entreg1"}
    return {"part": "digits", "source": f"{source.name} {source.n}x{source.d}", "target": f"digits {target.n}",
            "threads": 1, "device": device, **res, **ratios}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("step", "large", "digits", "all"), default="all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(2)
        print(json.dumps(part_large_child(args.device, args.repeats)))
        return
    parts = ("step", "large", "digits") if args.part == "all" else (args.part,)
    for part in parts:
        if part == "step":
            print(json.dumps(part_step(args.device, args.repeats)), flush=True)
        elif part == "large":
            out = subprocess.run([sys.executable, __file__, "--child", "--device", args.device,
                                  "--repeats", str(max(2, args.repeats // 2))], capture_output=True, text=True)
            print(out.stdout.strip() or json.dumps({"part": "large", "error": out.stderr[-2000:]}), flush=True)
        else:
            print(json.dumps(part_digits(args.device, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
