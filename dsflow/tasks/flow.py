"""The plain flow (task ``flow``): move the source down the functional, judged by its objective.

The shaping experiments and the paper's dynamics figures need nothing around the flow, so
every hook is the base class's.  An oracle config is refused: evaluating a frozen classifier
is the ``repurpose`` task's protocol, and silently ignoring ``oracle=...`` would hide that.
"""

from __future__ import annotations

from dsflow.tasks.base import Task


class FlowTask(Task):
    name = "flow"

    @classmethod
    def check_config(cls, cfg) -> None:
        oracle = cfg.get("oracle") if hasattr(cfg, "get") else None
        if oracle is not None and hasattr(oracle, "get") and oracle.get("_target_"):
            from dsflow.config_checks import ConfigValueError

            raise ConfigValueError(
                f"oracle={oracle.get('name', '?')} is evaluated by the re-purposing task, but task=flow; "
                "add task=repurpose (frozen-classifier evaluation through and after the flow) or use oracle=none"
            )
