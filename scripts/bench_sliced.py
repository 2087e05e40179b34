"""Time of the class-pair sliced Wasserstein matrices, value + gradient (the WoW building block).

    python scripts/bench_sliced.py [--classes 10] [--per-class 200] [--dim 784] [--projections 500] [--threads 2]

One evaluation = the source-target matrix and the source-source matrix of SW_2^2 (as an MMD
needs), summed, then backward: by two `sliced_wasserstein_classes` calls and by one
`sliced_wasserstein_blocks` call (the source projected and sorted once), round-robin.  Prints
the median and best of 5 repeats each (the first is warm-up) and their ratio.
"""

import argparse
import json
import statistics
import time

import torch

from dsflow.ot.sliced import sliced_wasserstein_blocks, sliced_wasserstein_classes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--dim", type=int, default=784)
    ap.add_argument("--projections", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    n = args.classes * args.per_class
    x = torch.randn(n, args.dim, generator=g, requires_grad=True)
    xt = torch.randn(n, args.dim, generator=g)
    y = torch.arange(n) % args.classes
    def two_calls(r):
        return (sliced_wasserstein_classes(x, y, xt, y, n_projections=args.projections, seed=r).sum()
                + sliced_wasserstein_classes(x, y, n_projections=args.projections, seed=r).sum())

    def blocks(r):
        cross, self_ = sliced_wasserstein_blocks(x, y, xt, y, n_projections=args.projections, seed=r)
        return cross.sum() + self_.sum()

    times = {"two_calls": [], "blocks": []}
    for r in range(6):  # round-robin: both configurations see the same machine load
        for name, fn in (("two_calls", two_calls), ("blocks", blocks)):
            t = time.perf_counter()
            fn(r).backward()
            x.grad = None
            times[name].append(time.perf_counter() - t)
    out = {name: {"median_s": statistics.median(ts[1:]), "best_s": min(ts[1:])} for name, ts in times.items()}
    out["ratio_blocks_to_two_calls"] = out["blocks"]["median_s"] / out["two_calls"]["median_s"]
    print(json.dumps({**vars(args), **out}))


if __name__ == "__main__":
    main()
