"""Run orchestration: config -> datasets -> task -> particles -> flow -> outputs.

`run(cfg)` executes a list of *stages*, each a function ``stage(ctx: RunContext)``:

``setup`` (seed, device, dtype, the run's task from ``cfg.task``) -> ``load_data`` (source,
target, checks) -> ``prepare`` (the task's ``prepare``: e.g. holdout, pseudo-labels) ->
``build`` (objective, dynamics, optimizer, particles) -> ``start`` (the task's ``start``: flow
callbacks, e.g. the oracle monitor) -> ``flow`` (the particle loop with metric/progress
callbacks) -> ``save`` (``flowed.npz``) -> ``finish`` (the task's ``finish``: its results and
figures) -> ``plots``.

Every task (`dsflow.tasks.base.Task`: ``flow``, ``repurpose``, or one of your own named by a
config's ``_target_``) runs through the same stages, and only the app writes outputs: a
task's hooks return a `dsflow.tasks.TaskOutput` (the source to flow, callbacks, summary
facts, figure-drawing functions) that `apply_task_output` merges into the run.  Adding a
task edits nothing here (docs/extending.md).

Outputs in the run directory: ``config.yaml`` (resolved), ``metrics.jsonl``,
``summary.json`` (written also when the run fails, with ``status: failed``),
``flowed.npz`` (or ``flowed_last_finite.npz`` after a divergence) and PNG plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger("dsflow")

DTYPES = ("float32", "float64")


# ---------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (all devices) from one integer."""
    import random

    import numpy as np
    import torch

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(spec: str):
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` are checked."""
    import torch

    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={spec} was asked for but CUDA is not available on this machine; "
                "use device=auto (CUDA when present, else CPU) or device=cpu"
            )
        index = spec.partition(":")[2]
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ValueError(
                    f"device={spec}: there are {torch.cuda.device_count()} CUDA device(s), "
                    f"use cuda:0 ... cuda:{torch.cuda.device_count() - 1}"
                )
        return torch.device(spec)
    raise ValueError(f"device={spec!r} is not valid; use auto, cpu, cuda or cuda:N")


def resolve_dtype(name: str):
    """``float32`` (default) or ``float64`` as a torch dtype."""
    import torch

    name = str(name).strip().lower()
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not valid; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def check_same_feature_space(source, target, source_cfg=None, target_cfg=None) -> None:
    """Source and target must share the feature dimension; the error's fix is an override that
    exists for these datasets' configs (`dsflow.data.compat`)."""
    from dsflow.data.compat import check_same_feature_space as check

    check(source, target, source_cfg, target_cfg)


def load_datasets(cfg, device=None, dtype=None):
    """``(source, target)`` from ``cfg.source`` / ``cfg.target``, validated, on ``device``/``dtype``.

    The one loader of `dsflow` and `dsflow-distance` (both must refuse the same data): each
    config must build a `LabeledData` with finite features, and both must share the feature
    dimension.  Errors name the side (``source``/``target``) and the dataset.
    """
    from hydra.utils import instantiate

    from dsflow.data.common import config_prefix
    from dsflow.data.container import LabeledData

    datasets = []
    for side in ("source", "target"):
        with config_prefix(side):  # loader hints name `source.KEY=...` / `target.KEY=...`
            data = instantiate(cfg[side])
        if not isinstance(data, LabeledData):
            raise TypeError(
                f"{side}: the dataset config's _target_ must return LabeledData, got {type(data).__name__}"
            )
        datasets.append(data.check_finite(side))
    source, target = datasets
    check_same_feature_space(source, target, cfg["source"], cfg["target"])
    # checked again in the run's dtype: float64 values beyond float32's range become Inf there
    converted = [d.to(device, dtype) for d in (source, target)]
    if dtype is not None:
        for side, data in zip(("source", "target"), converted):
            try:
                data.check_finite(side)
            except ValueError as err:
                raise ValueError(f"{err} (finite in the file, but not in dtype={str(dtype).replace('torch.', '')}: "
                                 "rescale the data or use dtype=float64)") from None
    return tuple(converted)


def describe_data(data) -> dict[str, Any]:
    """Facts about a dataset for ``summary.json``."""
    return {
        "name": data.name,
        "n": data.n,
        "d": data.d,
        "num_classes": data.num_classes,
        "classes": [int(c) for c in data.classes.tolist()],
        "class_names": data.names,
        "image_shape": list(data.image_shape) if data.image_shape else None,
    }


def plain_config(cfg) -> dict:
    """The resolved config as a plain dict (what loggers and ``config.yaml`` get)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def hydra_run_dir() -> Path | None:
    """The Hydra output directory of the current job, or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - only means "not in a Hydra job"
        pass
    return None


def _float(value) -> float:
    return float(value.detach()) if hasattr(value, "detach") else float(value)


# ---------------------------------------------------------------------------- context
@dataclass
class RunContext:
    """Everything the stages of one run share."""

    cfg: Any
    run_dir: Path
    loggers: Any = None
    device: Any = None
    dtype: Any = None
    source: Any = None  # LabeledData on device
    target: Any = None
    objective: Any = None
    dynamics: Any = None
    optimizer: Any = None  # optimizer factory: params -> torch.optim.Optimizer
    state: Any = None  # initial ParticleState
    result: Any = None  # FlowResult
    trajectory: dict = field(default_factory=dict)  # trajectory arrays for flowed.npz and plots
    flowed: Any = None  # LabeledData of the final particles
    records: list = field(default_factory=list)  # metrics rows, as written
    task: Any = None  # the run's dsflow.tasks.Task
    callbacks: list = field(default_factory=list)  # extra flow callbacks (step, record, state), from the task
    images: dict = field(default_factory=dict)  # figure name -> path
    files: dict = field(default_factory=dict)  # output name -> path
    summary: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    threads_before: Any = None  # torch's CPU thread count before ``threads`` changed it
    signals: Any = None  # dsflow.flow.interrupt.StopSignals of the run (SIGINT/SIGTERM)


Stage = Callable[[RunContext], None]


# ---------------------------------------------------------------------------- stages
def stage_setup(ctx: RunContext) -> None:
    cfg = ctx.cfg
    seed_everything(cfg.seed)
    ctx.device = resolve_device(cfg.device)
    ctx.dtype = resolve_dtype(cfg.dtype)
    steps = int(cfg.steps)
    if steps < 0:
        raise ValueError(f"steps={steps}: the number of flow steps must be >= 0")
    ctx.summary.update(seed=int(cfg.seed), device=str(ctx.device), dtype=str(cfg.dtype), steps=steps)
    threads = cfg.get("threads")
    if threads is not None:
        import torch

        if int(threads) < 1:
            raise ValueError(f"threads={threads}: use a number of CPU threads >= 1, or null for torch's default")
        # restored by run() at the end; on a busy 2-core machine one thread avoids the contention
        # that made the 800-particle OTDD step 8x slower (measured 0.36 vs 2.9 s per step)
        ctx.threads_before = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        ctx.summary["threads"] = int(threads)
    from dsflow.tasks.base import build_task

    ctx.task = build_task(cfg)
    ctx.summary.update(task=ctx.task.name, task_class=f"{type(ctx.task).__module__}.{type(ctx.task).__qualname__}")


def apply_task_output(ctx: RunContext, out) -> None:
    """Merge what a task hook returned into the run: the source to flow, flow callbacks,
    summary facts, figures (drawn here into ``RUN_DIR/NAME.png`` when ``plot`` is on: the app
    alone writes outputs) and a text block for the log."""
    if out is None:
        return
    if out.source is not None:
        ctx.source = out.source
    ctx.callbacks.extend(out.callbacks)
    ctx.summary.update(out.summary)
    if out.figures and ctx.cfg.get("plot", True):
        for name, draw in out.figures.items():
            path = ctx.run_dir / f"{name}.png"
            draw(path)
            ctx.images[name] = path
    if out.text:
        log.info("%s", out.text)


def stage_load_data(ctx: RunContext) -> None:
    ctx.source, ctx.target = load_datasets(ctx.cfg, ctx.device, ctx.dtype)
    ctx.summary.update(
        n=ctx.source.n, d=ctx.source.d, classes=ctx.source.num_classes,
        target_n=ctx.target.n, target_classes=ctx.target.num_classes,
        source=describe_data(ctx.source), target=describe_data(ctx.target),
    )
    log.info("source %s | target %s", ctx.source, ctx.target)


def stage_prepare(ctx: RunContext) -> None:
    """The task's ``prepare``, before the particles are built (it may change what flows)."""
    apply_task_output(ctx, ctx.task.prepare(ctx))


def stage_build(ctx: RunContext) -> None:
    from hydra.utils import instantiate

    from dsflow.flow.dynamics_base import Dynamics
    from dsflow.functionals.base import Functional, WeightedSum

    objective = instantiate(ctx.cfg.functional, _convert_="partial")
    if isinstance(objective, dict):  # a mapping of terms {name: {weight, functional}}
        objective = WeightedSum(objective)
    if not isinstance(objective, Functional):
        raise TypeError(f"functional: the config must build a Functional, got {type(objective).__name__}")
    dynamics = instantiate(ctx.cfg.dynamics)
    if not isinstance(dynamics, Dynamics):
        raise TypeError(f"dynamics: the config must build a Dynamics, got {type(dynamics).__name__}")
    optimizer = instantiate(ctx.cfg.optimizer)
    if not callable(optimizer):
        raise TypeError("optimizer: the config must build an optimizer factory (`_partial_: true`)")
    if ctx.cfg.get("time_step") is not None:
        import functools

        from dsflow.units import lr_from_time_step

        name = getattr(getattr(optimizer, "func", optimizer), "__name__", type(optimizer).__name__)
        # the functional declares how its gradient scales with time (a particle average: velocity / n)
        lr = lr_from_time_step(ctx.cfg.time_step, ctx.source.n, name, optimizer.keywords.get("momentum", 0.0),
                               velocity_factor=objective.velocity_factor(ctx.source.y))
        optimizer = functools.partial(optimizer.func, *optimizer.args, **{**optimizer.keywords, "lr": lr})
        ctx.summary.update(time_step=float(ctx.cfg.time_step), lr=lr)
        log.info("time_step=%g with %d particles: optimizer.lr = %g", float(ctx.cfg.time_step), ctx.source.n, lr)
    from dsflow.ot.gaussian import SingletonClassError

    try:
        ctx.objective = objective.bind(source=ctx.source, target=ctx.target) or objective
        ctx.dynamics = dynamics
        ctx.optimizer = optimizer
        ctx.state = dynamics.init_state(ctx.source, device=ctx.device, dtype=ctx.dtype)
        ctx.objective.check(ctx.state)  # before step 0: e.g. a class of one sample
    except SingletonClassError as exc:
        raise exc.with_fix(singleton_override(ctx.cfg)) from None
    ctx.summary.update(functional=type(objective).__name__, dynamics=getattr(dynamics, "name", ""),
                       optimizer=getattr(optimizer, "func", optimizer).__name__)


def singleton_override(cfg) -> str:
    """The command-line override that sets ``allow_singletons`` on the run's OTDD functional
    (``functional.allow_singletons=true``, or the nested key of a weighted sum)."""
    from omegaconf import OmegaConf

    def find(node, path):
        if OmegaConf.is_dict(node):
            if str(node.get("_target_", "")).rsplit(".", 1)[-1] == "OTDD":
                return path, "allow_singletons" in node
            for key in node:
                found = find(node[key], f"{path}.{key}")
                if found:
                    return found
        return None

    found = find(cfg.get("functional"), "functional")
    if not found:
        return "allow_singletons=true on the OTDD functional"
    path, present = found
    return f"{'' if present else '+'}{path}.allow_singletons=true"


def stage_start(ctx: RunContext) -> None:
    """The task's ``start``, once the particles are built: its flow callbacks and summary."""
    apply_task_output(ctx, ctx.task.start(ctx))


class _MetricsCallback:
    """Sends each engine record (plus ``wall_time``: seconds since the run started) to the
    loggers and keeps it in ``ctx.records``."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def __call__(self, step, record, state) -> None:
        from dsflow.loggers.base import to_jsonable

        row = to_jsonable({k: v for k, v in dict(record or {}).items() if k != "step"})
        row["wall_time"] = time.perf_counter() - self.ctx.started
        row["step"] = int(step)
        self.ctx.records.append(row)
        self.ctx.loggers.log_metrics(row, int(step))


def _evaluate(objective, state) -> tuple[float, dict]:
    import torch

    with torch.no_grad():
        value, parts = objective.evaluate(state)
    return _float(value), {k: float(v) for k, v in parts.items()}


def flow_options(ctx: RunContext) -> dict:
    """``cfg.flow`` as keyword arguments of `run_flow`, completed from the run: ``progress``
    and ``seed`` default to the top-level keys, relative paths live in the run directory."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(ctx.cfg.get("flow") or {}, resolve=True)
    # the top-level switch can silence the bar whatever the flow config says
    options["progress"] = bool(ctx.cfg.get("progress", True)) and bool(options.get("progress", True))
    options.setdefault("seed", int(ctx.cfg.seed))
    for key in ("trajectory_path", "checkpoint_dir"):
        if options.get(key) and not Path(options[key]).is_absolute():
            options[key] = str(ctx.run_dir / options[key])
    return options


#: Config keys that do not change the particles' trajectory: left out of `flow_fingerprint`,
#: so a resume may change them freely (``steps`` to extend a flow, logging, plots, threads,
#: the device, the oracle).  In ``task``, the task class's ``after_flow_options`` are left
#: out too (e.g. ``task.pushforward``); the rest of ``task`` is in (``task.holdout``,
#: ``task.source_labels``, ``task.pseudo_labels``: they change what flows).
FINGERPRINT_EXCLUDED = ("steps", "progress", "plot", "logger", "name", "threads", "device", "output_dir",
                        "overwrite", "oracle")
FINGERPRINT_EXCLUDED_FLOW = ("checkpoint_every", "checkpoint_dir", "keep_checkpoints", "resume",
                             "resume_ignore_config", "trajectory_every", "trajectory_dtype", "trajectory_path",
                             "evaluate_final", "progress")


def flow_fingerprint(cfg) -> dict:
    """The fingerprint (`dsflow.flow.checkpoint.fingerprint`) of every config key that
    determines the flow: the whole resolved config except `FINGERPRINT_EXCLUDED` (top level),
    `FINGERPRINT_EXCLUDED_FLOW` (in ``flow``) and the task's ``after_flow_options`` (in ``task``), flattened to dotted keys
    (``optimizer.lr``, ``source.seed``, ``functional.entreg``, ``seed``, ``dtype``, ...).
    A key not listed is in, so a new option is protected by default.  The engine stores it in
    every checkpoint and refuses a resume under a different one (``flow.resume_ignore_config``)."""
    from dsflow.flow.checkpoint import fingerprint

    config = {k: v for k, v in plain_config(cfg).items() if k not in FINGERPRINT_EXCLUDED and k != "hydra"}
    config["flow"] = {k: v for k, v in dict(config.get("flow") or {}).items() if k not in FINGERPRINT_EXCLUDED_FLOW}
    if isinstance(config.get("task"), dict):
        from dsflow.tasks.base import task_class

        after = task_class(cfg).after_flow_options
        config["task"] = {k: v for k, v in config["task"].items() if k not in after}
    flat: dict[str, Any] = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    walk(config, "")
    return fingerprint(flat)


def _trajectory_arrays(source) -> dict:
    """``trajectory`` (T, n, d) and ``trajectory_steps`` (T,) for an npz, from a FlowResult
    or a FlowDivergedError; empty when no trajectory was recorded."""
    import numpy as np

    from dsflow.flow.trajectory import load_trajectory

    trajectory = getattr(source, "trajectory", None)
    if trajectory is None:
        return {}
    return {"trajectory": np.asarray(load_trajectory(trajectory)),
            "trajectory_steps": np.asarray(getattr(source, "trajectory_steps", []), dtype=np.int64)}


def stage_flow(ctx: RunContext) -> None:
    """The particle loop.  Also: the config fingerprint for checkpoints, ``metrics.jsonl``
    kept whole on resume (rows before the resume point stay), a SIGINT/SIGTERM stop at a step
    boundary (``flowed.npz`` saved, then `RunInterrupted`), ``resumed_from`` and the
    ``diverging`` flag (`dsflow.flow.engine.objective_rose`) in the summary."""
    from contextlib import nullcontext

    from dsflow.flow.engine import DIVERGENCE_HINT, RISE_FACTOR, FlowDivergedError, objective_rose, run_flow

    steps = int(ctx.cfg.steps)
    options = flow_options(ctx)
    local = ctx.loggers.get("local") if ctx.loggers is not None and hasattr(ctx.loggers, "get") else None

    def on_start(start_step, history):
        if options.get("resume") and local is not None and hasattr(local, "rewind"):
            ctx.records = local.rewind(start_step, history)  # the history before the resume point

    signals = ctx.signals
    try:
        with signals.deferred() if signals is not None else nullcontext():
            ctx.result = run_flow(ctx.state, ctx.objective, ctx.dynamics, ctx.optimizer, steps=steps,
                                  callbacks=[*ctx.callbacks, _MetricsCallback(ctx)],
                                  fingerprint=flow_fingerprint(ctx.cfg), should_stop=signals,
                                  on_start=on_start, **options)
    except FlowDivergedError as exc:
        history = exc.history or ctx.records
        ctx.summary.update(diverged_at_step=exc.step, diverged_part=exc.part, steps_done=len(history))
        if history:
            ctx.summary["objective_before"] = history[0]["objective"]
        last = exc.last_state
        if last is not None:
            path = last.to_data(name=ctx.source.name).save_npz(
                ctx.run_dir / "flowed_last_finite.npz", step=last.step, **_trajectory_arrays(exc))
            ctx.files["flowed_last_finite"] = path
            ctx.summary["last_finite_state"] = str(path)
            log.error("the flow diverged at step %s; last finite state (step %s) saved to %s",
                      exc.step, last.step, path)
        raise
    result = ctx.result
    ctx.flowed = result.state.to_data(name=ctx.source.name)
    if result.final_objective is not None:
        after, parts_after = float(result.final_objective), dict(result.final_parts)
    else:
        after, parts_after = _evaluate(ctx.objective, result.state)
    if result.history:
        before, parts_before = result.history[0]["objective"], dict(result.history[0]["parts"])
    else:  # steps=0
        before, parts_before = after, parts_after
    done = int(result.steps_done or len(result.history))
    ctx.summary.update(
        objective_before=before, objective_after=after, parts_before=parts_before,
        parts_after=parts_after, objective_ratio=(after / before) if before else None,
        steps_done=done, stop_reason=result.stop_reason, flow_time_s=result.wall_time,
        time_per_step_s=(result.wall_time / done) if done else None,
    )
    if result.resumed_from is not None:
        ctx.summary["resumed_from"] = {"step": int(result.resumed_from), "checkpoint": result.resumed_checkpoint}
        if result.skipped_checkpoints:
            ctx.summary["resumed_from"]["skipped_corrupt"] = list(result.skipped_checkpoints)
    ctx.summary["diverging"] = objective_rose(before, after)
    if ctx.summary["diverging"]:
        warning = (f"the objective rose from {before:.4g} to {after:.4g} (by more than {RISE_FACTOR:g}x its "
                   f"initial value): the flow is diverging; {DIVERGENCE_HINT}")
        ctx.summary.setdefault("warnings", []).append(warning)
        log.warning(warning)
    log.info("objective %.6g -> %.6g after %d steps (%.1f s)", before, after, done, result.wall_time)
    interrupted = signals.received if signals is not None else None
    if interrupted is None and result.stop_reason == "interrupted":
        import signal

        interrupted = signal.SIGINT  # a KeyboardInterrupt raised without our handler (e.g. in a thread)
    if interrupted is not None:
        from dsflow.flow.interrupt import RunInterrupted

        stage_save(ctx)  # the particles of the last completed step
        raise RunInterrupted(interrupted, f"interrupted by {_signal_name(interrupted)} after {done} of {steps} steps")


def _signal_name(signum) -> str:
    from dsflow.flow.interrupt import signal_name

    return signal_name(signum)


def stage_save(ctx: RunContext) -> None:
    extra = ctx.trajectory = _trajectory_arrays(ctx.result)  # read once; the plots reuse it
    path = ctx.flowed.save_npz(ctx.run_dir / "flowed.npz", **extra)
    ctx.files["flowed"] = path
    if extra:
        ctx.summary["trajectory_arrays"] = {k: list(v.shape) for k, v in extra.items()}


def stage_finish(ctx: RunContext) -> None:
    """The task's ``finish``, once the flowed data are saved: its results and figures."""
    apply_task_output(ctx, ctx.task.finish(ctx))


def stage_plots(ctx: RunContext) -> None:
    if not ctx.cfg.get("plot", True):
        return
    from dsflow.plotting import core

    out = ctx.run_dir
    if ctx.records:
        final = None
        state = getattr(ctx.result, "state", None)
        if state is not None and ctx.summary.get("objective_after") is not None:
            final = (int(state.step), ctx.summary["objective_after"])  # F at the final particles
        ctx.images["objective"] = core.plot_objective(
            ctx.records, out / "objective.png", title=f"{ctx.source.name} -> {ctx.target.name}", final=final,
            final_parts=ctx.summary.get("parts_after"), ylabel=getattr(ctx.objective, "label", "objective"))
    panels = {"source (t=0)": ctx.source, f"flowed (t={len(ctx.records)})": ctx.flowed, "target": ctx.target}
    if ctx.flowed is not None and ctx.source.d in (2, 3):
        ctx.images["scatter"] = core.plot_scatter(panels, out / "scatter.png", seed=int(ctx.cfg.seed))
    if ctx.flowed is not None and ctx.source.is_image and ctx.target.is_image:
        ctx.images["images"] = core.plot_image_grid(panels, out / "images.png")
    _trajectory_plots(ctx)
    ctx.loggers.log_images(ctx.images)


def _trajectory_plots(ctx: RunContext) -> None:
    """Per-part objective curves (weighted sums), class count (variable labels), and for
    low-dimensional data the particle paths and a GIF (when ``flow.trajectory_every`` > 0)."""
    from dsflow.plotting import trajectories as tp

    out = ctx.run_dir
    if any(len(r.get("parts") or {}) > 1 for r in ctx.records):
        ctx.images["objective_parts"] = tp.plot_objective_parts(ctx.records, out / "objective_parts.png")
    if getattr(ctx.dynamics, "variable_labels", False) and any("n_classes" in r for r in ctx.records):
        ctx.images["class_count"] = tp.plot_class_count(ctx.records, out / "class_count.png")
    arrays = ctx.trajectory
    traj = arrays.get("trajectory")
    if traj is None or len(traj) < 2 or ctx.source.d not in (2, 3):
        return
    y0 = ctx.source.y.detach().cpu().numpy()  # labels the particles started with (built from ctx.source)
    tx, ty = ctx.target.x.detach().cpu().numpy(), ctx.target.y.detach().cpu().numpy()
    title = f"{ctx.source.name} -> {ctx.target.name}"
    ctx.images["trajectories"] = tp.plot_trajectories(
        traj, y0, tx, ty, out / "trajectories.png", y_end=ctx.flowed.y, title=title, seed=int(ctx.cfg.seed))
    tp.animate_trajectories(traj, y0, tx, ty, out / "trajectories.gif",
                            steps=list(arrays.get("trajectory_steps", [])) or None, title=title)


DEFAULT_STAGES: tuple[Stage, ...] = (
    stage_setup,
    stage_load_data,
    stage_prepare,
    stage_build,
    stage_start,
    stage_flow,
    stage_save,
    stage_finish,
    stage_plots,
)


# ---------------------------------------------------------------------------- entry
def run(cfg, run_dir: str | Path | None = None, stages: Sequence[Stage] | None = None) -> dict:
    """Run one experiment and return its summary (also written to ``summary.json``).

    ``run_dir`` defaults to the Hydra job's output directory (``hydra.run.dir``), else
    ``cfg.output_dir``.  Exceptions propagate after ``summary.json`` (``status: failed``,
    ``error``, ``traceback``) and the loggers are written and closed.  SIGINT/SIGTERM end the
    run at the next flow step (`dsflow.flow.interrupt.StopSignals`): ``flowed.npz`` and
    ``summary.json`` (``status: interrupted``, ``steps_done``) are written, then
    `RunInterrupted` (a KeyboardInterrupt, exit status 128 + signal in the CLI) propagates.
    """
    from omegaconf import OmegaConf

    from dsflow.config_checks import check_run_config
    from dsflow.loggers import build_loggers
    from dsflow.rundir import check_previous_run, check_writable, clear_previous_run

    from dsflow.tasks.base import task_class

    check_run_config(cfg)  # types of steps, seed, optimizer.lr, ...: before anything runs
    task_class(cfg).check_config(cfg)  # the task's own options (e.g. task.holdout)
    run_dir = Path(run_dir) if run_dir is not None else hydra_run_dir()
    if run_dir is None:
        if cfg.get("output_dir"):
            run_dir = Path(cfg.output_dir)
        else:
            raise ValueError("run(cfg): no run directory; pass run_dir=... or run through the `dsflow` command")
    check_writable(run_dir)
    resume = bool((cfg.get("flow") or {}).get("resume", False))
    checkpoint_dir = (cfg.get("flow") or {}).get("checkpoint_dir")
    overwrite = bool(cfg.get("overwrite", False))
    if check_previous_run(run_dir, overwrite=overwrite, resume=resume, checkpoint_dir=checkpoint_dir) \
            and overwrite and not resume:
        clear_previous_run(run_dir, checkpoint_dir)  # the old run goes whole, checkpoints included
    OmegaConf.set_struct(cfg, True)  # typo'd keys fail loudly also when called as a library
    config = plain_config(cfg)

    ctx = RunContext(cfg=cfg, run_dir=run_dir)
    run_name = cfg.get("name") or None
    from dsflow.runs import RunRecord

    def finish(summary: dict) -> None:
        if summary["status"] == "interrupted":
            summary.setdefault("steps_done", 0)
        if ctx.threads_before is not None:
            import torch

            torch.set_num_threads(ctx.threads_before)
        summary["files"] = {
            **{k: Path(p).name for k, p in ctx.files.items()},
            **{k: Path(p).name for k, p in ctx.images.items()},
        }

    # config.yaml, summary.json (running -> ok / failed / interrupted) and the SIGINT/SIGTERM
    # handlers of this run only: a signal during the flow stops it at the next step boundary,
    # elsewhere it raises RunInterrupted at once
    record = RunRecord(run_dir, config, ctx.summary,
                       loggers=lambda: build_loggers(cfg.get("logger"), run_dir, run_name=run_name, resume=resume))
    record.on_exit.append(finish)
    with record:
        ctx.loggers = record.loggers
        ctx.signals = record.signals
        for stage in stages or DEFAULT_STAGES:
            stage(ctx)
    return ctx.summary

