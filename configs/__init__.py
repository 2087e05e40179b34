"""dsflow's Hydra configs (installed as ``dsflow.configs``; Hydra's ``pkg://dsflow.configs``).

Importing the package registers the resolvers the configs use (``${dsflow.paper_entreg:...}``,
``${dsflow.paper_time_step:...}``; see `dsflow.units`), so every way of composing them (the
CLI, ``hydra.initialize_config_module("dsflow.configs")``) can resolve them.
"""

from dsflow.units import register_resolvers as _register_resolvers

_register_resolvers()
