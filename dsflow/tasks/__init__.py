"""Experiment protocols around a flow (the ``task`` config group): see `dsflow.tasks.base`.

* ``flow`` (`dsflow.tasks.flow.FlowTask`): a plain flow;
* ``repurpose`` (`dsflow.tasks.repurpose.RepurposeTask`): re-purposing a frozen classifier
  (holdout, pseudo-labels, class correspondence, oracle evaluation, push-forward, Table 1).

A new task is one module (a `Task` subclass) and one config (``configs/task/NAME.yaml``, or
any config dir on Hydra's search path) whose ``_target_`` names the class; ``dsflow/app.py``
is not edited (docs/extending.md).
"""

from dsflow.tasks.base import Task, TaskOutput, build_task, task_class

__all__ = ["Task", "TaskOutput", "build_task", "task_class"]
