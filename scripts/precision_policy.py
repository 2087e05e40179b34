"""How much the ``|x|^2 + |y|^2 - 2 x.y`` cancellation loses under TF32 / bf16 matmuls, and
whether dsflow's cost is safe under torch's default policy and under a caller's TF32/autocast.

    python scripts/precision_policy.py --device cuda --out precision.json
    python scripts/precision_policy.py --device cpu --small          # smoke mode (seconds)

Points: MNIST test images if the files are found (``$DSFLOW_DATA`` / ``--root``), else
synthetic sparse templates in [0, 1]^784 (printed); ``y = x + delta * N(0, 1)`` near-duplicates
for several ``delta`` (true squared distance ~ 784 delta^2), and the full ``n x n`` matrix.
Reference: the same expansion in float64 (its rounding, ~1e-16 |x|^2, is far below every error
shown).  Rows:

* ``float32`` -- IEEE float32 GEMM (``allow_tf32=False``: torch's default);
* ``tf32`` -- the same GEMM with ``torch.backends.cuda.matmul.allow_tf32 = True`` (on CPU the
  flag does nothing, so this row equals float32 there);
* ``bf16_autocast`` -- the product under ``torch.autocast(dtype=torch.bfloat16)``;
* ``dsflow_sqdist_under_tf32_autocast`` -- `dsflow.ot.costs.sqdist` called with TF32 *and*
  bf16 autocast switched on by the caller (its guard must give the float32 row);

and for each the debiased Sinkhorn divergence between the clouds (entreg 1), whose true value
is small for near-duplicates: the relative error shows what a cost error does to the objective.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os


def _points(n, d, root, device):
    import torch

    try:
        from dsflow.data import mnist

        data = mnist(root=root, split="test", max_samples=n, seed=0)
        return data.x.reshape(data.x.shape[0], -1)[:n].to(device), "MNIST test images"
    except Exception as exc:  # files absent: synthetic pixels
        g = torch.Generator().manual_seed(0)
        t = torch.rand(10, d, generator=g) * (torch.rand(10, d, generator=g) < 0.2)
        x = (t[torch.arange(n) % 10] + 0.1 * torch.randn(n, d, generator=g)).clamp(0, 1)
        return x.to(device), f"synthetic sparse templates (MNIST not found: {type(exc).__name__})"


@contextlib.contextmanager
def policy(name, device):
    import torch

    flag = torch.backends.cuda.matmul
    prev = flag.allow_tf32
    try:
        if name in ("tf32", "dsflow_sqdist_under_tf32_autocast"):
            flag.allow_tf32 = True
        if name in ("bf16_autocast", "dsflow_sqdist_under_tf32_autocast"):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        flag.allow_tf32 = prev


def expansion(x, y, name):
    import torch

    from dsflow.ot.costs import sqdist

    if name == "dsflow_sqdist_under_tf32_autocast":
        return sqdist(x, y).float()
    n1, n2 = (x * x).sum(-1), (y * y).sum(-1)
    return (n1[:, None] + n2[None, :] - 2.0 * (x @ y.mT).float()).clamp(min=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--small", action="store_true", help="n=300, a few seconds on CPU")
    ap.add_argument("--root", default=os.environ.get("DSFLOW_DATA"))
    ap.add_argument("--entreg", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from dsflow.ot.costs import sqdist
    from dsflow.ot.sinkhorn import log_sinkhorn

    device = torch.device(args.device)
    n = 300 if args.small else args.n
    x, source = _points(n, args.d, args.root, device)
    x = x.float()
    g = torch.Generator().manual_seed(1)
    defaults = {"torch": torch.__version__, "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32, "device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "points": source, "n": n, "d": x.shape[1], "mean |x|^2": float((x * x).sum(-1).mean())}
    print(json.dumps(defaults))
    names = ["float32", "tf32", "bf16_autocast", "dsflow_sqdist_under_tf32_autocast"]
    rows = []
    for delta in (0.0, 1e-3, 1e-2, 1e-1):
        y = x + delta * torch.randn(x.shape, generator=g).to(device)
        ref = sqdist(x.double(), y.double())
        m = min(n, 500)  # the Sinkhorn check on a subset (n x n float64 solves)
        xs, ys = x[:m], y[:m]
        ref_s, _ = log_sinkhorn(sqdist(xs.double(), ys.double()), eps=args.entreg, C_xx=sqdist(xs.double(), xs.double()),
                                C_yy=sqdist(ys.double(), ys.double()), debias=True, tol=1e-6, max_iter=20000)
        for name in names:
            with policy(name, device):
                C = expansion(x, y, name)
                Cs = [expansion(a, b, name) for a, b in ((xs, ys), (xs, xs), (ys, ys))]
            err = (C.double() - ref).abs()
            diag = err.diagonal()
            for c in Cs[1:]:  # self costs: exact zero diagonal, as sqdist writes it
                c.diagonal().zero_()
            val, _ = log_sinkhorn(Cs[0].double(), eps=args.entreg, C_xx=Cs[1].double(), C_yy=Cs[2].double(),
                                  debias=True, tol=1e-6, max_iter=20000)
            row = {"delta": delta, "policy": name, "true_near_duplicate_sqdist": float(ref.diagonal().mean()),
                   "max_abs_err": float(err.max()), "max_abs_err_near_duplicates": float(diag.max()),
                   "max_err_over_entreg": float(err.max()) / args.entreg,
                   "sinkhorn_value_ref": float(ref_s), "sinkhorn_value": float(val),
                   "sinkhorn_rel_err": abs(float(val) - float(ref_s)) / max(abs(float(ref_s)), 1e-300)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    f32 = {r["delta"]: r for r in rows if r["policy"] == "float32"}
    guard_ok = all(r["max_abs_err"] <= 2 * f32[r["delta"]]["max_abs_err"] + 1e-6 for r in rows
                   if r["policy"] == "dsflow_sqdist_under_tf32_autocast")
    worst = {p: max(r["max_abs_err"] for r in rows if r["policy"] == p) for p in names}
    verdict = {
        "default_policy_is_ieee_float32": (not defaults["matmul.allow_tf32"])
        and defaults["float32_matmul_precision"] == "highest",
        "worst_cost_error": worst,
        "float32_error_below_1pct_of_entreg": worst["float32"] < 0.01 * args.entreg,
        "dsflow_cost_guarded_under_tf32_and_autocast": guard_ok,
    }
    verdict["safe"] = verdict["default_policy_is_ieee_float32"] and verdict["float32_error_below_1pct_of_entreg"] \
        and guard_ok
    print(json.dumps({"verdict": verdict}))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"defaults": defaults, "rows": rows, "verdict": verdict}, fh, indent=1)


if __name__ == "__main__":
    main()
