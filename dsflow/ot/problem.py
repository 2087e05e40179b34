"""The OTDD problem, built in one place: label model + outer cost -> problem -> solver back-end.

Shaped like ott-jax (geometry -> problem -> solver -> output): `make_problem` validates the
options of `dsflow.otdd` / `dsflow.functionals.OTDD` once and returns an `OTDDProblem`,
which holds the label model (`dsflow.ot.label_models`) and the outer options.  Both the
one-shot `otdd()` and the flow functional (with its caches and warm starts) call the same
methods:

* `OTDDProblem.label_blocks(s_stats, t_stats)`: the ``W_st``, ``W_ss``, ``W_tt`` blocks the
  outer problem needs (``ss``/``tt`` only when debiased);
* `OTDDProblem.target_self(xt, idx_t, W_tt, log_b)`: the target self potential, solved once;
* `OTDDProblem.solve(...) -> OuterResult`: looks the back-end up in `BACKENDS`.

Back-ends (`BACKENDS`): ``dsflow`` (own log-domain Sinkhorn: converges to ``tol``, warm
starts, cached target self potential), ``geomloss`` (the reference implementation: its fixed
epsilon-scaling schedule, value only), ``exact`` (POT network simplex, for ``outer="exact"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dsflow.ot.label_models import LabelModel, label_blocks, make_label_model
from dsflow.ot.outer import OUTER_CHOICES, OuterResult, augmented_ot

__all__ = ["BACKENDS", "SOLVERS", "OTDDProblem", "make_problem"]

#: user-facing ``solver`` values; ``outer="exact"`` picks the ``exact`` back-end itself
SOLVERS = ("dsflow", "geomloss")


@dataclass
class OTDDProblem:
    """A validated OTDD problem (see `make_problem`); its methods are pure in their tensors."""

    labels: LabelModel
    outer: str = "sinkhorn"
    p: float = 2.0
    entreg: float = 0.1
    feature_weight: float = 1.0
    label_weight: float = 1.0
    scaling: float = 0.5
    tol: float = 0.1
    max_iter: int = 2000
    overrelax: float = 1.8
    solver: str = "dsflow"
    #: outer cost in memory (``tensorized``), by blocks (``online``), or by size (``auto``): dsflow.ot.online
    cost_backend: str = "auto"
    chunk_size: int | None = None
    memory_budget_gb: float | None = None

    @property
    def debias(self) -> bool:
        return self.outer == "sinkhorn"

    @property
    def uses_labels(self) -> bool:
        """Label distances enter the cost (not ``inner="none"``, not ``label_weight=0``)."""
        return self.labels.name != "none" and self.label_weight != 0.0

    @property
    def effective_label_weight(self) -> float:
        return self.label_weight if self.uses_labels else 0.0

    @property
    def blocks(self) -> tuple[str, ...]:
        """Label blocks the outer problem reads: the debiased divergence needs the self blocks."""
        return ("st", "ss", "tt") if self.debias else ("st",)

    @property
    def backend(self) -> str:
        return "exact" if self.outer == "exact" else self.solver

    def label_blocks(self, s_stats, t_stats, blocks=None) -> dict:
        """``{"st", "ss", "tt"}`` from the label model's statistics of both sides."""
        return label_blocks(self.labels, s_stats, t_stats, self.blocks if blocks is None else blocks)

    def target_self(self, xt, idx_t, W_tt, log_b):
        """``(g, half_value, iterations)`` of the target self problem (a fixed target: once)."""
        from dsflow.ot.online import BlockCost, choose_cost_backend, online_self_potential
        from dsflow.ot.outer import augmented_cost
        from dsflow.ot.sinkhorn import self_potential

        m = xt.shape[0]
        if choose_cost_backend(self.cost_backend, m, 0, xt.dtype, xt.device, self_x=False, self_y=True,
                               memory_budget_gb=self.memory_budget_gb) == "online":
            cost = BlockCost(xt, idx_t, xt, idx_t, W_tt, p=self.p, feature_weight=self.feature_weight,
                             label_weight=self.effective_label_weight, same=True)
            return online_self_potential(cost, log_b, eps=self.entreg, scaling=self.scaling, tol=self.tol,
                                         max_iter=self.max_iter, chunk_size=self.chunk_size)
        C_yy = augmented_cost(xt, idx_t, xt, idx_t, W_tt, p=self.p, feature_weight=self.feature_weight,
                              label_weight=self.effective_label_weight)
        return self_potential(C_yy[None], log_b[None], eps=self.entreg, scaling=self.scaling, tol=self.tol,
                              max_iter=self.max_iter)

    def solve(self, xs, idx_s, xt, idx_t, W_st=None, W_ss=None, W_tt=None, *, a=None, b=None, init=None,
              target_self=None, return_coupling: bool = False) -> OuterResult:
        """Outer OT on the augmented cost by the problem's back-end (`BACKENDS`)."""
        return BACKENDS[self.backend](self, xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, a=a, b=b, init=init,
                                      target_self=target_self, return_coupling=return_coupling)


def _solve_dsflow(pb: OTDDProblem, xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, *, a, b, init, target_self,
                  return_coupling):
    return augmented_ot(
        xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, a=a, b=b, outer=pb.outer, p=pb.p, entreg=pb.entreg,
        feature_weight=pb.feature_weight, label_weight=pb.effective_label_weight, scaling=pb.scaling,
        tol=pb.tol, max_iter=pb.max_iter, init=init, target_self=target_self, return_coupling=return_coupling,
        overrelax=pb.overrelax, cost_backend=pb.cost_backend, chunk_size=pb.chunk_size,
        memory_budget_gb=pb.memory_budget_gb,
    )


def _solve_geomloss(pb: OTDDProblem, xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, *, a, b, init, target_self,
                    return_coupling):
    from dsflow.ot.geomloss_backend import geomloss_augmented_ot

    value = geomloss_augmented_ot(
        xs, idx_s, xt, idx_t, W_st if pb.uses_labels else None, W_ss, W_tt, a=a, b=b, p=pb.p,
        entreg=pb.entreg, feature_weight=pb.feature_weight, label_weight=pb.effective_label_weight,
        debias=pb.debias, scaling=pb.scaling,
    )
    return OuterResult(value=value, info={"solver": "geomloss"})


def _solve_exact(pb: OTDDProblem, xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, *, a, b, init, target_self,
                 return_coupling):
    return augmented_ot(
        xs, idx_s, xt, idx_t, W_st, a=a, b=b, outer="exact", p=pb.p, feature_weight=pb.feature_weight,
        label_weight=pb.effective_label_weight, return_coupling=return_coupling,
    )


#: back-end name -> solve function ``(problem, xs, idx_s, xt, idx_t, W_st, W_ss, W_tt, **kw)``
BACKENDS = {"dsflow": _solve_dsflow, "geomloss": _solve_geomloss, "exact": _solve_exact}


def make_problem(
    *,
    inner: str = "gaussian",
    outer: str = "sinkhorn",
    p: float = 2,
    entreg: float = 0.1,
    feature_weight: float = 1.0,
    label_weight: float = 1.0,
    scaling: float = 0.5,
    tol: float = 0.1,
    max_iter: int = 2000,
    overrelax: float = 1.8,
    solver: str = "dsflow",
    return_coupling: bool = False,
    caller: str = "otdd",
    cost_backend: str = "auto",
    chunk_size: int | None = None,
    memory_budget_gb: float | None = None,
    **label_options,
) -> OTDDProblem:
    """Validate the options once and build the problem; ``caller`` prefixes the errors.

    ``label_options`` are the label model's (`make_label_model`: ``gaussian_method``,
    ``diagonal_cov``, ``cov_ridge``, ``exact_inner_solver``, ``inner_entreg``,
    ``allow_singletons``)."""
    labels = make_label_model(inner, p=p, caller=caller, **label_options)
    if outer not in OUTER_CHOICES:
        raise ValueError(f"{caller}: outer must be one of {OUTER_CHOICES}, got {outer!r}")
    if p <= 0:
        raise ValueError(f"{caller}: p must be > 0, got {p}")
    if entreg <= 0 and outer != "exact":
        raise ValueError(f"{caller}: entreg must be > 0 for outer={outer!r}, got {entreg}")
    if solver not in SOLVERS:
        raise ValueError(f"{caller}: solver must be 'dsflow' or 'geomloss', got {solver!r}")
    if solver == "geomloss" and (outer == "exact" or return_coupling):
        raise ValueError(f"{caller}: solver='geomloss' gives the entropic value only: use outer='sinkhorn' or "
                         "'sinkhorn_biased' and return_coupling=False")
    from dsflow.ot.online import COST_BACKENDS

    if cost_backend not in COST_BACKENDS:
        raise ValueError(f"{caller}: cost_backend must be one of {COST_BACKENDS}, got {cost_backend!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"{caller}: chunk_size must be a positive integer (rows per cost block) or null, "
                         f"got {chunk_size!r}")
    if memory_budget_gb is not None and not float(memory_budget_gb) > 0:
        raise ValueError(f"{caller}: memory_budget_gb must be > 0 (GiB) or null (half the free memory), "
                         f"got {memory_budget_gb!r}")
    if solver == "geomloss" and cost_backend == "online":
        raise ValueError(f"{caller}: solver='geomloss' runs tensorized here (its online back-end needs KeOps "
                         "(pykeops), which takes no custom label cost): use solver='dsflow' with cost_backend='online'")
    return OTDDProblem(labels=labels, outer=outer, p=float(p), entreg=float(entreg),
                       feature_weight=float(feature_weight), label_weight=float(label_weight),
                       scaling=float(scaling), tol=float(tol), max_iter=int(max_iter),
                       overrelax=float(overrelax), solver=solver, cost_backend=cost_backend,
                       chunk_size=None if chunk_size is None else int(chunk_size),
                       memory_budget_gb=None if memory_budget_gb is None else float(memory_budget_gb))
