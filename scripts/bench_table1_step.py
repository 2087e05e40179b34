"""Time per OTDD flow step at the Table 1 test-splits size (2007 USPS -> 5000 MNIST, 784-d): dsflow solver vs geomloss at the paper's eps, and the old eps=200.

    DSFLOW_DATA=../shared/data python scripts/bench_table1_step.py [THREADS]

Round-robin would be fairer; the three configurations run one after the other, 6 steps each
(step 0 is the cold start: epsilon-scaling from scratch), so compare steps 1-5.
"""
import os, sys, time, json
import torch
os.environ.setdefault("DSFLOW_DATA", "../shared/data")
from dsflow.data import mnist, usps
from dsflow.functionals import OTDD
from dsflow.flow.state import ParticleState

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
src = usps(split="test", resize=28)
tgt = mnist(split="test", rows=[5000, None])
configs = [dict(entreg=18.99, solver="dsflow"), dict(entreg=18.99, solver="geomloss"), dict(entreg=200, solver="dsflow")]
n = src.n
res = {}
for cfg in configs:
    f = OTDD(**cfg); f.bind(source=src, target=tgt)
    x = src.x.clone().requires_grad_(True)
    times = []
    for step in range(6):
        st = ParticleState(x=x, y=src.y)
        t = time.perf_counter()
        v, parts = f.evaluate(st)
        g, = torch.autograd.grad(v, x)
        times.append(time.perf_counter() - t)
        with torch.no_grad():
            x -= 0.05 * n * g
        x = x.detach().requires_grad_(True)
    res[str(cfg)] = times
    print(cfg, [round(t, 2) for t in times], float(v), flush=True)
