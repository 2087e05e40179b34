#!/usr/bin/env bash
# GPU benchmark of the OTDD flow, ready to run where a CUDA device is lent:
#   1. precision policy: the |x|^2 + |y|^2 - 2xy cancellation under float32 / TF32 / bf16 autocast,
#      against float64, and whether dsflow's cost is safe by default and under a caller's TF32/autocast;
#   2. the digits flow step (1797 rotated digits -> digits, scripts/bench_flow_digits.py);
#   3. one OTDD step at 5000 x 784, tensorized and online outer cost (scripts/bench_large_n.py);
#   4. a 60K x 784 flow through the dsflow command (MNIST train if its files are found, else
#      synthetic 60K x 784 -- the script says which), trajectories streamed to disk.
#
#   bash scripts/bench_gpu.sh                       # CUDA, full sizes; results in bench_gpu_out/
#   bash scripts/bench_gpu.sh --device cpu --small  # smoke mode: same steps, small sizes, CPU (minutes)
#   OUT=/tmp/b STEPS60K=50 bash scripts/bench_gpu.sh
#
# Every step writes JSON/logs under $OUT; summary.txt collects the figures.  Needs the package
# installed (pip install -e .) or PYTHONPATH at the repository root.
set -euo pipefail

DEVICE=cuda
SMALL=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --small) SMALL=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (use --device cuda|cpu, --small)" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-bench_gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
export MPLBACKEND=Agg WANDB_MODE=offline

if [[ "$SMALL" == 1 ]]; then
  PREC_ARGS=(--small); DIGITS_STEPS=3; LARGE_SIZES=500; LARGE_STEPS=2; N60K=1000; STEPS60K="${STEPS60K:-3}"
else
  PREC_ARGS=(); DIGITS_STEPS=10; LARGE_SIZES=5000; LARGE_STEPS=3; N60K=60000; STEPS60K="${STEPS60K:-20}"
fi

"$PY" - "$DEVICE" <<'EOF' | tee "$OUT/env.txt"
import sys, torch
dev = sys.argv[1]
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
if dev.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.sh: --device cuda but torch sees no CUDA device (use --device cpu --small for the smoke mode)")
    print("gpu:", torch.cuda.get_device_name(0), "memory GiB:", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print("matmul.allow_tf32:", torch.backends.cuda.matmul.allow_tf32, "float32_matmul_precision:", torch.get_float32_matmul_precision(),
      "cudnn.allow_tf32:", torch.backends.cudnn.allow_tf32)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/env.txt" 2>&1 || true

echo "== 1. precision policy" | tee "$OUT/summary.txt"
"$PY" "$HERE/precision_policy.py" --device "$DEVICE" "${PREC_ARGS[@]}" --out "$OUT/precision.json" > "$OUT/precision.log"
tail -n 1 "$OUT/precision.log" | tee -a "$OUT/summary.txt"

echo "== 2. digits flow step ($DIGITS_STEPS steps)" | tee -a "$OUT/summary.txt"
"$PY" "$HERE/bench_flow_digits.py" --steps "$DIGITS_STEPS" --device "$DEVICE" > "$OUT/digits.log"
tail -n 1 "$OUT/digits.log" | tee -a "$OUT/summary.txt"

echo "== 3. one OTDD step at n = $LARGE_SIZES x 784 (tensorized, online)" | tee -a "$OUT/summary.txt"
"$PY" "$HERE/bench_large_n.py" --device "$DEVICE" --sizes "$LARGE_SIZES" --backends tensorized,online \
  --inner gaussian --steps "$LARGE_STEPS" --out "$OUT/large_n.json" 2> "$OUT/large_n.err" | tee -a "$OUT/summary.txt"

echo "== 4. flow of $N60K x 784 particles ($STEPS60K steps, functional.cost_backend=auto)" | tee -a "$OUT/summary.txt"
DATA_ARGS=$("$PY" - "$N60K" "$OUT" <<'EOF'
import sys, numpy as np
n, out = int(sys.argv[1]), sys.argv[2]
try:
    from dsflow.data import mnist
    d = mnist(split="train")
    if n > d.x.shape[0]:
        raise ValueError(f"MNIST train has {d.x.shape[0]} samples < {n}")
    print(f"dataset@source=mnist 'source.transform=[rotate90]' source.max_samples={n} dataset@target=mnist target.max_samples={n}")
    print(f"data: MNIST train ({n}), source rotated 90 degrees", file=sys.stderr)
except Exception as exc:
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath("scripts/bench_large_n.py")))
    from bench_large_n import make_data
    import torch
    for name, seed in (("source", 1), ("target", 2)):
        x, y = make_data(n, 784, 10, seed, "cpu", torch.float32)
        np.savez(f"{out}/synthetic_{name}.npz", x=x.numpy(), y=y.numpy())
    print(f"dataset@source=npz source.path={out}/synthetic_source.npz dataset@target=npz target.path={out}/synthetic_target.npz")
    print(f"data: SYNTHETIC {n} x 784 (MNIST train not found: {exc})", file=sys.stderr)
EOF
)
echo "$DATA_ARGS" >> "$OUT/summary.txt"
GPU_LOG="$OUT/flow60k_gpu_memory.csv"
SMI_PID=""
if [[ "$DEVICE" == cuda* ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$GPU_LOG" & SMI_PID=$!
fi
START=$(date +%s)
set +e
# shellcheck disable=SC2086
eval dsflow +experiment=base $DATA_ARGS functional=otdd functional.entreg=18.99 functional.cost_backend=auto \
  device="$DEVICE" steps="$STEPS60K" time_step=0.05 logger=none plot=false progress=false \
  flow.trajectory_every=5 flow.trajectory_path=trajectory.npy flow.trajectory_dtype=float16 \
  overwrite=true hydra.run.dir="$OUT/flow60k" > "$OUT/flow60k.log" 2>&1
RC=$?
set -e
[[ -n "$SMI_PID" ]] && kill "$SMI_PID" 2>/dev/null || true
echo "flow exit $RC, wall $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
"$PY" - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, os, statistics, sys
out = sys.argv[1]
run = os.path.join(out, "flow60k")
try:
    s = json.load(open(os.path.join(run, "summary.json")))
    print({k: s.get(k) for k in ("status", "n", "d", "device", "steps_done", "objective_before", "objective_after", "wall_time")})
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    t = [r["step_time"] for r in rows if "step_time" in r]
    if len(t) > 1:
        print("median s/step (steps 1..):", round(statistics.median(t[1:]), 3), "first step s:", round(t[0], 3))
except (OSError, ValueError) as exc:
    print("no summary:", exc)
gpu = os.path.join(out, "flow60k_gpu_memory.csv")
if os.path.exists(gpu) and os.path.getsize(gpu):
    print("peak GPU memory used MiB (nvidia-smi, 0.5 s samples):", max(int(l) for l in open(gpu) if l.strip()))
traj = os.path.join(run, "trajectory.npy")
if os.path.exists(traj):
    import numpy as np
    print("trajectory streamed:", traj, np.load(traj, mmap_mode="r").shape)
EOF
echo "results in $OUT (summary.txt)"
exit $RC
