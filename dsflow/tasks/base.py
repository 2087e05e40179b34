"""The task interface: an experiment protocol around a flow.

A task is chosen by the ``task`` config group (``configs/task/NAME.yaml``, whose ``_target_``
is the task's class; the other keys are its options).  The app (`dsflow.app.run`) runs every
task the same way and alone writes the outputs; a task only returns what it wants written:

1. ``check_config(cfg)`` (class method, before anything runs): types of the task's options.
2. ``prepare(run)`` after the data are loaded, before the particles are built: it may return
   another ``source`` (a holdout taken out, pseudo-labels put in) and summary facts.
3. ``start(run)`` once the particles are built: flow callbacks ``(step, record, state)``
   (called before the metrics logger, so keys they write into the record reach
   ``metrics.jsonl``) and summary facts (e.g. an accuracy before the flow).
4. ``finish(run)`` once the flowed data are saved: its results (summary), figures
   (``{name: draw(path)}``; the app calls each with ``RUN_DIR/name.png`` when ``plot`` is
   on) and a text block for the log.
5. ``tables(runs)`` and ``figures(runs)`` (class methods, for ``dsflow-report``): ``{file stem:
   markdown}`` and ``{file stem: draw(path)}`` over the runs of a sweep that ran this task.

``run`` is the app's `dsflow.app.RunContext`, given read-only: a task keeps what it needs
between its hooks on itself (e.g. the true labels of a pseudo-labelled source) instead of
writing it into the shared context, so each fact travels one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class TaskOutput:
    """What a task hook hands back to the app (every field optional)."""

    source: Any = None  # prepare: the LabeledData the particles are built from (None = unchanged)
    callbacks: list = field(default_factory=list)  # start: flow callbacks (step, record, state)
    summary: dict = field(default_factory=dict)  # merged into summary.json
    figures: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # name -> draw(path)
    text: str | None = None  # logged at the end of the hook


class Task:
    """A plain protocol: every hook does nothing.  Subclasses override what they need."""

    #: the task's name in ``summary.json`` (``task``) and in reports
    name = "task"
    #: options (keys of ``task.*``) used only after the flow: left out of the resume
    #: fingerprint (`dsflow.app.flow_fingerprint`), so a resume may change them
    after_flow_options: tuple[str, ...] = ()

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = str(name)

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse bad option types of the whole run config ``cfg`` before anything runs."""

    def prepare(self, run) -> TaskOutput:
        return TaskOutput()

    def start(self, run) -> TaskOutput:
        return TaskOutput()

    def finish(self, run) -> TaskOutput:
        return TaskOutput()

    @classmethod
    def tables(cls, runs) -> dict[str, str]:
        """Report tables over ``runs`` (`dsflow.report.RunRecord`): ``{file stem: markdown}``."""
        return {}

    @classmethod
    def figures(cls, runs) -> dict[str, Callable[[Any], Any]]:
        """Report figures over ``runs``: ``{file stem: draw(path)}``; ``dsflow-report`` calls each
        with ``OUT/stem.png`` when plots are on."""
        return {}


def task_class(cfg) -> type[Task]:
    """The class the run's ``task`` config names (``task._target_``), without building it;
    a config without a ``task`` (e.g. composed before tasks existed) runs the plain flow."""
    node = cfg.get("task") if hasattr(cfg, "get") else None
    if not node or not node.get("_target_"):
        from dsflow.tasks.flow import FlowTask

        return FlowTask
    from hydra.utils import get_class

    cls = get_class(str(node["_target_"]))
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"task._target_={node['_target_']} is not a dsflow.tasks.Task subclass; "
                        "a task config's _target_ names a class deriving from dsflow.tasks.base.Task")
    return cls


def build_task(cfg) -> Task:
    """The run's task, built from ``cfg.task`` (options as plain Python values)."""
    node = cfg.get("task") if hasattr(cfg, "get") else None
    if not node or not node.get("_target_"):
        from dsflow.tasks.flow import FlowTask

        return FlowTask()
    task_class(cfg)  # a clear error for a _target_ that is not a Task
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all")
