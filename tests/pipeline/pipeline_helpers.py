"""Helpers of the pipeline tests: compose configs, run experiments on fake files."""

from hydra import compose, initialize_config_module


def compose_cfg(*overrides):
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}  # Hydra rejects a key set twice
    base = [o for o in ("progress=false", "logger=none", "device=cpu") if o.split("=", 1)[0] not in keys]
    with initialize_config_module("dsflow.configs", version_base="1.3"):
        return compose(config_name="config", overrides=[*base, *overrides])


def fake_experiment(experiment, root, cache, *overrides, steps=2):
    """Overrides that run an experiment end to end on the fake files in `root`."""
    return [
        f"+experiment={experiment}", f"source.root={root}", f"target.root={root}", f"oracle.train.root={root}",
        "source.max_samples=null", "target.max_samples=null", f"steps={steps}", "oracle.epochs=1",
        f"oracle.cache_dir={cache}", "oracle.eval_every=1", "task.pushforward.epochs=1", "task.pushforward.restarts=1",
        # time step tau = lr / n = 0.1 with the ~30 particles of the fake files (the presets: 500 / 5000)
        "optimizer.lr=3",
        *overrides,
    ]
