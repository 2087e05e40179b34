"""``mmd_sw``: half the squared MMD between class distributions with a sliced-Wasserstein kernel,
the functional of the Wasserstein-over-Wasserstein (WoW) flows (Bonet, Vauthier, Korba, ICML 2025;
``../shared/reference/wow-method-notes.md``; docs/wow.md).

A labeled dataset is a distribution over class distributions, ``P = sum_c w_c delta_{mu_c}``
with ``mu_c`` the empirical distribution of class ``c``'s particles.  Towards a fixed target
``Q = sum_k v_k delta_{nu_k}``:

    F(P) = 1/2 MMD_K^2(P, Q)
         = 1/2 [ w^T K(mu, mu) w + v^T K(nu, nu) v - 2 w^T K(mu, nu) v ],

with ``K`` one of the kernels of `dsflow.ot.sw_kernels` on the ``SW_p^p`` matrices of
`dsflow.ot.sliced` (Riesz ``-SW_2`` by default, the paper's MMDSW).  One call projects the
source on ``L`` directions drawn afresh for each step (from ``seed`` and the step, so a resumed
run draws the same ones), and computes the source-source and source-target matrices from one
sort of the source (`sliced_wasserstein_blocks`).  The target-target term does not depend on
the particles: it is computed once (on the whole target, with the directions of ``seed``) and
cached, and only enters the reported value.

**Time scaling.**  Classes move as units: particle ``i`` of class ``c`` carries the mass
``m_i = w_c / n_c`` of the measure ``P``, and its WoW velocity is its Euclidean gradient divided
by that mass (the notes' "divided by the mass of that particle").  The functional declares
``time_scaling = "class_mass"`` and its masses (`particle_masses`); the engine divides each
particle's gradient by its mass before the optimizer step, so ``optimizer.lr`` is the paper's
``tau`` and ``time_step`` maps to ``lr`` one to one (`velocity_factor` is 1).

**Target minibatches.**  ``target_batch=b`` uses, at each step, ``b`` particles per target
class drawn without replacement (all of a class that has fewer), from a generator seeded with
``seed`` and the step: the distillation protocol's "256 real per class per step".

Classes of unequal sizes and non-uniform class weights are exact (quantile functions on the
merged breakpoints); the class membership of a particle never changes, so only feature-driven
states (``dynamics=fd``) are accepted.
"""

from __future__ import annotations

from typing import Any

from dsflow.functionals.base import Functional

CLASS_WEIGHTS = ("uniform", "counts")


def _class_weights(counts, mode: str):
    """Class weights of a measure from its class counts: ``1/C`` or ``n_c / n``."""
    if mode == "uniform":
        return counts.new_full(counts.shape, 1.0 / counts.numel())
    return counts / counts.sum()


def mmd_from_kernels(k_ss, k_st, w, v, tt_term=0.0):
    """``1/2 (w^T K_ss w + tt_term - 2 w^T K_st v)``: the MMD of the notes with the constant
    target-target term ``v^T K_tt v`` given as a number (pure function of tensors)."""
    return 0.5 * (w @ k_ss @ w + tt_term - 2.0 * (w @ k_st @ v))


class MMDSW(Functional):
    """``1/2 MMD_K^2`` between the source's and the target's class distributions (module docstring).

    Parameters
    ----------
    kernel:
        ``riesz`` (``-SW_2^r``, default), ``gaussian`` (``exp(-SW_2^2 / 2h)``), ``laplace``
        (``exp(-SW_1 / h)``) or ``imq`` (``(h + SW_2^2)^{-1/2}``).
    r, h:
        The Riesz exponent (default 1) and the bandwidth of the others (``None``: the paper's
        default, 0.1 / 0.5 / 1); a parameter the kernel does not take must stay at its default.
    n_projections:
        ``L``, directions per step (500 in the paper).
    class_weights:
        ``uniform`` (``1/C``, the paper) or ``counts`` (``n_c / n``), for both datasets.
    target_batch:
        ``None`` (the whole target every step) or particles per target class resampled each step.
    method, n_quantiles:
        One-dimensional W_p: ``exact`` (quantile functions) or ``quantiles`` (the authors' fixed
        grid of ``n_quantiles`` levels, an approximation).
    seed:
        Seeds the directions (and the target minibatches) of every step.
    max_elements:
        Chunk size of the pairwise quantile differences (memory bound).
    """

    name = "mmd_sw"
    time_scaling = "class_mass"

    def __init__(self, kernel: str = "riesz", r: float = 1.0, h: float | None = None, n_projections: int = 500,
                 class_weights: str = "uniform", target_batch: int | None = None, method: str = "exact",
                 n_quantiles: int = 100, seed: int = 0, max_elements: int | None = None, target: Any = None,
                 **unknown):
        if unknown:
            keys = sorted(unknown)
            raise ValueError(
                f"mmd_sw: {', '.join('functional.' + k for k in keys)} {'is not an option' if len(keys) == 1 else 'are not options'} "
                f"of the WoW functional (an experiment written for OTDD?); drop "
                f"{' '.join('~functional.' + k for k in keys)} or see configs/functional/mmd_sw.yaml")
        from dsflow.ot.sliced import METHODS
        from dsflow.ot.sw_kernels import KERNELS

        if kernel not in KERNELS:
            raise ValueError(f"mmd_sw: functional.kernel={kernel!r} is not a kernel; choose one of {sorted(KERNELS)}")
        self.kernel = str(kernel)
        self.p, defaults = KERNELS[self.kernel]
        params: dict[str, float] = {}
        if "r" in defaults:
            params["r"] = float(r)
            if h is not None:
                raise ValueError(f"mmd_sw: the riesz kernel has no bandwidth; set functional.h=null (got {h})")
        else:
            if float(r) != 1.0:
                raise ValueError(f"mmd_sw: functional.r is the Riesz exponent; the {kernel} kernel takes h, "
                                 f"not r (got r={r}); set functional.r=1")
            params["h"] = float(defaults["h"] if h is None else h)
        for key, value in params.items():
            if not value > 0:
                raise ValueError(f"mmd_sw: functional.{key} must be > 0, got {value}")
        if "r" in params and params["r"] >= 2:
            raise ValueError(f"mmd_sw: functional.r must lie in (0, 2) (a conditionally positive definite "
                             f"Riesz kernel), got {params['r']}")
        self.kernel_params = params
        if int(n_projections) < 1:
            raise ValueError(f"mmd_sw: functional.n_projections must be >= 1, got {n_projections}")
        self.n_projections = int(n_projections)
        if class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"mmd_sw: functional.class_weights={class_weights!r}; choose one of {CLASS_WEIGHTS}")
        self.class_weights = class_weights
        from dsflow.functionals.batches import check_batch

        self.target_batch = check_batch(target_batch, "mmd_sw")
        if method not in METHODS:
            raise ValueError(f"mmd_sw: functional.method={method!r}; choose one of {METHODS}")
        self.method, self.n_quantiles = method, int(n_quantiles)
        self.seed = int(seed)
        self.max_elements = max_elements
        self.target = None
        self._cache: dict = {}
        if target is not None:
            self.bind(target=target)

    # ------------------------------------------------------------------ setup
    @property
    def label(self) -> str:
        return "½MMD²" + (f"_SW({self.kernel})" if self.kernel != "riesz" else "_SW")

    def bind(self, *, source=None, target=None) -> "MMDSW":
        if target is not None:
            from dsflow.data.container import LabeledData

            if not isinstance(target, LabeledData):
                raise TypeError(f"mmd_sw.bind: target must be a LabeledData, got {type(target).__name__}")
            self.target = target
            self._cache = {}
        return self

    def check(self, state) -> None:
        if state.labels is not None:
            raise ValueError(
                f"mmd_sw: the WoW flow moves classes as units and keeps every particle's class, but the dynamics "
                f"carry a {state.labels.kind!r} label state; use dynamics=fd")
        if self.target is None:
            raise ValueError("mmd_sw: no target; call bind(target=LabeledData) first (the app does)")
        if int(self.target.d) != int(state.d):
            raise ValueError(f"mmd_sw: the source has {state.d} features but the target {self.target.d}; "
                             "give datasets of the same shape")

    def _options(self) -> dict:
        opts = dict(p=self.p, method=self.method, n_quantiles=self.n_quantiles)
        if self.max_elements is not None:
            opts["max_elements"] = int(self.max_elements)
        return opts

    def _directions(self, step: int, d: int, device, dtype):
        from dsflow.ot.sliced import random_directions

        # one stream per step, reproducible after a resume; step -1 seeds the cached target term
        return random_directions(self.n_projections, d, seed=(self.seed * 1_000_003 + step + 1) % 2**63,
                                 device=device, dtype=dtype)

    def _kernel(self, sw):
        from dsflow.ot.sw_kernels import sw_kernel

        return sw_kernel(self.kernel, sw, **self.kernel_params)

    def _target(self, device, dtype) -> dict:
        """Target tensors, class weights and the constant ``v^T K_tt v`` per (device, dtype)."""
        import torch

        from dsflow.ot.class_stats import class_index
        from dsflow.ot.sliced import sliced_wasserstein_classes

        key = (str(device), dtype)
        if key in self._cache:
            return self._cache[key]
        if self.target is None:
            raise RuntimeError("mmd_sw: no target; call bind(target=LabeledData) first (the app does)")
        xt = self.target.x.detach().to(device=device, dtype=dtype).reshape(self.target.n, -1)
        yt = self.target.y.detach().to(device)
        classes, idx = class_index(yt)
        counts = torch.bincount(idx, minlength=classes.numel()).to(dtype)
        v = _class_weights(counts, self.class_weights)
        with torch.no_grad():
            sw_tt = sliced_wasserstein_classes(xt, yt, directions=self._directions(-1, xt.shape[1], device, dtype),
                                               **self._options())
            tt = float(v @ self._kernel(sw_tt) @ v)
        from dsflow.functionals.batches import class_members

        self._cache[key] = entry = {"x": xt, "y": yt, "v": v, "tt": tt, "members": class_members(yt)}
        return entry

    def _target_batch(self, tc: dict, step: int):
        """The whole target, or ``target_batch`` particles per class drawn for this step."""
        from dsflow.functionals.batches import per_class_rows

        if self.target_batch is None:
            return tc["x"], tc["y"]
        rows = per_class_rows(tc["members"], self.target_batch, self.seed, step)
        return tc["x"][rows], tc["y"][rows]

    # ------------------------------------------------------------------ the functional
    @staticmethod
    def _class_counts(y):
        """``(classes, counts, idx)`` of the labels ``y`` (``idx[i]``: the row of particle i's class)."""
        import torch

        from dsflow.ot.class_stats import class_index

        classes, idx = class_index(y)
        counts = torch.bincount(idx, minlength=classes.numel())
        return classes, counts, idx

    def particle_masses(self, y):
        """``m_i = w_c / n_c`` for particle ``i`` of class ``c``: its mass in ``P``."""
        import torch

        _, counts, idx = self._class_counts(y)
        w = _class_weights(counts.to(torch.float64), self.class_weights)
        return (w / counts.to(torch.float64))[idx]

    def velocity_factor(self, y) -> int:
        """1: the engine divides each gradient by its particle's mass, so ``lr`` is the time step."""
        return 1

    def evaluate(self, state):
        from dsflow.ot.sliced import sliced_wasserstein_blocks

        x = state.x.reshape(state.n, -1)
        tc = self._target(x.device, x.dtype)
        xt, yt = self._target_batch(tc, int(state.step))
        theta = self._directions(int(state.step), x.shape[1], x.device, x.dtype)
        sw_st, sw_ss = sliced_wasserstein_blocks(x, state.y, xt, yt, directions=theta, **self._options())
        _, counts, _ = self._class_counts(state.y)
        w = _class_weights(counts.to(x.dtype), self.class_weights)
        k_st, k_ss = self._kernel(sw_st), self._kernel(sw_ss)
        value = mmd_from_kernels(k_ss, k_st, w, tc["v"], tc["tt"])
        return value, {self.name: float(value.detach())}

    def __call__(self, state):
        return self.evaluate(state)[0]


__all__ = ["MMDSW", "mmd_from_kernels", "CLASS_WEIGHTS"]
