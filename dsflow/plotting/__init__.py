"""Figures of runs (matplotlib, Agg backend, no pyplot state).

`core` has the app's figures (objective curves, scatter plots, image grids, heat maps);
``trajectories`` (flow) and ``oracle`` add their own.  Importing this package is cheap:
matplotlib is imported inside the plotting functions.
"""

from dsflow.plotting.core import (
    plot_heatmap,
    plot_image_grid,
    plot_objective,
    plot_scatter,
)

__all__ = ["plot_objective", "plot_scatter", "plot_image_grid", "plot_heatmap"]
