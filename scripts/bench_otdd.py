"""Benchmarks of the OTDD engine (CPU float32 by default); results for docs/benchmarks.md.

    python scripts/bench_otdd.py gaussian        # Bures label distances: full vs low-rank vs auto
    python scripts/bench_otdd.py otdd            # one OTDD value+gradient at n=m=2000, d=784
    python scripts/bench_otdd.py all --quick     # smaller sizes, for a smoke run

Every ratio is measured within one run (same machine load); configurations are timed
round-robin, and each timing is the best (and the median) of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def _best(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_gaussian(args):
    import torch

    from dsflow.ot.gaussian import bures_w2_factors, class_gaussians

    sizes = [(200, 784), (500, 784), (500, 3072)] if not args.quick else [(50, 196), (100, 196)]
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for n_per, d in sizes:
        g = torch.Generator().manual_seed(0)
        k = 10
        xs = torch.rand(k * n_per, d, generator=g)
        xt = torch.rand(k * n_per, d, generator=g) * 0.9
        y = torch.arange(k * n_per) % k
        res = {"n_per_class": n_per, "d": d, "classes": f"{k}+{k}"}
        vals = {}
        methods = ("full", "lowrank", "auto") if d <= args.max_full_d else ("lowrank", "auto")
        for method in methods:
            def run():
                x = xs.clone().requires_grad_()
                s = class_gaussians(x, y)
                t = class_gaussians(xt, y)
                W = bures_w2_factors(s.means, s.factors, t.means, t.factors, method=method)
                W.sum().backward()
                return W.detach()
            reps = 1 if (method == "full" and d > 1000) else args.repeats
            res[method + "_s"], vals[method] = _best(run, reps)
        if "full" in vals:
            res["speedup_lowrank_vs_full"] = res["full_s"] / res["lowrank_s"]
            res["auto_vs_best"] = res["auto_s"] / min(res["full_s"], res["lowrank_s"])
            res["max_rel_diff_full_lowrank"] = float((vals["full"] - vals["lowrank"]).abs().max() / vals["full"].abs().max())
        else:
            res["auto_vs_lowrank"] = res["auto_s"] / res["lowrank_s"]
        rows.append(res)
        print(json.dumps(res))
    return rows


def bench_otdd(args):
    import torch
    from geomloss import SamplesLoss

    from dsflow.data.container import LabeledData
    from dsflow.ot import otdd
    from dsflow.ot.costs import sqdist
    from dsflow.ot.sinkhorn import epsilon_schedule

    n, d, k = (2000, 784, 10) if not args.quick else (500, 196, 10)
    g = torch.Generator().manual_seed(0)
    # image-like data: class templates plus pixel noise in [0, 1]
    templates = torch.rand(k, d, generator=g)
    y = torch.arange(n) % k
    xs = (templates[y] + 0.3 * torch.randn(n, d, generator=g)).clamp(0, 1)
    xt = (templates[torch.randperm(k, generator=g)][y] + 0.3 * torch.randn(n, d, generator=g)).clamp(0, 1)
    entreg = args.entreg
    blur = (entreg / 2) ** 0.5  # geomloss p=2 cost is |x-y|^2/2
    out = {"n": n, "m": n, "d": d, "classes": k, "entreg": entreg, "geomloss_blur": blur}

    def ours(tol=None, inner="gaussian"):
        x = xs.clone().requires_grad_()
        r = otdd(LabeledData(x, y), LabeledData(xt, y), inner=inner, outer="sinkhorn", entreg=entreg, tol=tol)
        r.cost.backward()
        return r

    def geomloss_default():
        x = xs.clone().requires_grad_()
        v = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.5, debias=True, backend="tensorized")(x, xt)
        v.backward()
        return v

    # floor: one squared cost matrix plus the log-domain passes geomloss makes at that blur
    levels = len(epsilon_schedule(float(sqdist(xs, xt).max()), entreg, 0.5))

    def floor():
        x = xs.clone().requires_grad_()
        C = sqdist(x, xt)
        h = torch.zeros(n)
        with torch.no_grad():
            for _ in range(levels):
                h = torch.logsumexp(h[None, :] - C / entreg, dim=1)
        v = torch.logsumexp(h[None, :] - C / entreg, dim=1).mean()
        v.backward()
        return v

    # round-robin repeats: a change of machine load hits every configuration alike
    # peak memory of one default OTDD step (value + gradient), measured before anything else
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    out["rss_before_mib"] = rss()
    ours()
    out["rss_after_one_otdd_mib"] = rss()
    out["otdd_step_peak_extra_mib"] = out["rss_after_one_otdd_mib"] - out["rss_before_mib"]
    configs = {
        "ours": ours,  # otdd() defaults: tol=None -> 0.01 when a gradient is taken
        "ours_tol0.1": lambda: ours(tol=0.1),  # the flow functional's setting
        "ours_tol1e-3": lambda: ours(tol=1e-3),
        "ours_features_tol0.1": lambda: ours(tol=0.1, inner="none"),
        "ours_features_tol1e-3": lambda: ours(tol=1e-3, inner="none"),
        "geomloss": geomloss_default,
        "floor": floor,
    }
    times = {k: [] for k in configs}
    results = {}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            t = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t)
    for name in configs:
        out[name + "_s"] = min(times[name])
        out[name + "_median_s"] = sorted(times[name])[len(times[name]) // 2]
    r1, r, rf, rfc, gv = (results[k] for k in ("ours", "ours_tol1e-3", "ours_features_tol0.1", "ours_features_tol1e-3", "geomloss"))
    out["ours_iterations"] = r1.info.get("iterations")
    out["ours_schedule_steps"] = r1.info.get("schedule_steps")
    out["ours_timings"] = r1.timings
    out["ours_tol1e-3_iterations"] = r.info.get("iterations")
    out["ours_tol1e-3_timings"] = r.timings
    out["ours_rel_diff_vs_tol1e-3"] = abs(float(r1.cost.detach()) - float(r.cost.detach())) / abs(float(r.cost.detach()))
    out["floor_levels"] = levels
    for name in ("ours", "ours_tol0.1", "ours_tol1e-3", "ours_features_tol0.1", "ours_features_tol1e-3"):
        out[f"ratio_{name}_to_geomloss"] = out[name + "_s"] / out["geomloss_s"]
        out[f"ratio_{name}_to_geomloss_median"] = out[name + "_median_s"] / out["geomloss_median_s"]
    out["feature_only_tol0.1"] = float(rf.cost.detach())
    out["feature_only_tol1e-3"] = float(rfc.cost.detach())
    out["ratio_ours_to_floor"] = out["ours_s"] / out["floor_s"]
    # values: ours converged vs geomloss (feature-only comparison needs inner='none')
    x = xs.clone()
    feat = otdd(LabeledData(x, y), LabeledData(xt, y), inner="none", entreg=entreg)
    out["feature_only_ours"] = float(feat.cost)
    out["feature_only_geomloss_x2"] = 2 * float(gv.detach())
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.accuracy:
        out.update(_accuracy(xs, y, xt, entreg, blur))
    print(json.dumps(out))
    return out


def _accuracy(xs, y, xt, entreg, blur):
    """Relative value and gradient errors against a float64 ``tol=1e-7`` solve (slow: minutes)."""
    import torch
    from geomloss import SamplesLoss

    from dsflow.data.container import LabeledData
    from dsflow.ot import otdd

    def grad_of(x, xt_, **kw):
        x = x.clone().requires_grad_()
        r = otdd(LabeledData(x, y), LabeledData(xt_, y), entreg=entreg, **kw)
        r.cost.backward()
        return float(r.cost.detach()), x.grad.double()

    def err(v, g, ref):
        return {"value": abs(v - ref[0]) / abs(ref[0]), "gradient": float((g - ref[1]).norm() / ref[1].norm())}

    out = {}
    for inner in ("gaussian", "none"):
        ref = grad_of(xs.double(), xt.double(), inner=inner, tol=1e-7, max_iter=100000)
        for tol in (None, 0.1, 1e-3):
            out[f"error_{inner}_tol{tol}"] = err(*grad_of(xs, xt, inner=inner, tol=tol), ref)
        if inner == "none":
            x = xs.clone().requires_grad_()
            v = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=0.5, debias=True, backend="tensorized")(x, xt)
            v.backward()
            out["error_geomloss_features"] = err(2 * float(v), 2 * x.grad.double(), ref)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["gaussian", "otdd", "all"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--entreg", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-full-d", type=int, default=10**9, help="skip the full path above this d")
    ap.add_argument("--sizes", default="", help="e.g. 200x784,500x3072 (n_per_class x d)")
    ap.add_argument("--accuracy", action="store_true",
                    help="otdd: also value/gradient errors against a float64 tol=1e-7 solve (minutes)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0]}))
    if args.what in ("gaussian", "all"):
        bench_gaussian(args)
    if args.what in ("otdd", "all"):
        bench_otdd(args)


if __name__ == "__main__":
    main()
