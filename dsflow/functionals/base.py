"""Base classes for functionals F(rho) over labeled particle systems.

A functional is a callable on a `ParticleState` returning a 0-d tensor whose autograd
gradient with respect to the moving tensors is the particle velocity field (up to sign)
times a factor the functional declares (its *time scaling*).  Most functionals of dsflow
(OTDD, potentials, interactions) are particle averages: for an empirical measure with uniform weights,
``grad_{x_i} F(rho_N) = (1/n) grad delta F/delta rho (x_i)``, i.e. each particle has mass
``1/n`` and its velocity is ``n`` times its gradient (``time_scaling = "particle_average"``,
``velocity_factor(y) = n``).  The app turns a flow time step into ``optimizer.lr`` by asking
the functional for that factor, so ``time_step`` means a time step for every functional
and every n.  A family whose particles carry other masses declares ``time_scaling =
"class_mass"`` and its masses (`Functional.particle_masses`): the Wasserstein-over-Wasserstein
flows (`dsflow.functionals.mmd_sw`), where particle ``i`` of class ``c`` has mass ``w_c / n_c``
and velocity ``grad_i / m_i``; the engine divides each gradient by its mass, so ``lr`` is the
time step (``velocity_factor = 1``).

Internal energy (entropy, ``f(t) = t log t``) has no particle value; it is realised as
Brownian noise in the update (Euler-Maruyama).  A functional advertises its temperature
through ``temperature`` and the engine adds ``sqrt(2 * temperature * lr) * N(0, I)``.

The engine reads a functional only through this interface (``evaluate``, ``parts``,
``temperature``, ``reset``, ``state_dict``/``load_state_dict``, ``time_scaling``), so every
method has a default here and nothing is probed with ``hasattr``.
"""

from __future__ import annotations

from typing import Any, Mapping

from dsflow.state import ParticleState

#: The time scalings a functional can declare (see `Functional.velocity_factor` and
#: `Functional.particle_masses`): every particle of mass ``1/n`` (``particle_average``), or the
#: mass ``w_c / n_c`` of its class in a distribution over class distributions (``class_mass``,
#: the WoW flows: the engine divides each particle's gradient by its mass).
TIME_SCALINGS = ("particle_average", "class_mass")


class Functional:
    """A functional of the particle state.  Subclasses implement ``__call__``."""

    name: str = "functional"
    #: Brownian temperature contributed by this functional (0 for deterministic ones).
    temperature: float = 0.0
    #: How the particle gradient relates to the velocity of the flow: ``"particle_average"``
    #: (the value is an average over the n particles, so the gradient is velocity / n).
    time_scaling: str = "particle_average"

    def __call__(self, state: ParticleState):  # pragma: no cover - abstract
        raise NotImplementedError

    def bind(self, *, source=None, target=None) -> "Functional":
        """Receive the datasets of the run (e.g. the OTDD target).  Returns ``self``."""
        return self

    @property
    def label(self) -> str:
        """What the value is, for axis labels (e.g. ``OTDD²``); default: the name."""
        return str(self.name)

    def check(self, state: ParticleState) -> None:
        """Refuse an initial state this functional cannot evaluate, before step 0 (the app
        calls it once the particles are built).  Raises ``ValueError``; default: accept."""

    def reset(self) -> None:
        """Forget caches (warm starts, cached label distances), e.g. after labels change."""

    def evaluate(self, state: ParticleState):
        """``(value, parts)``: the 0-d tensor and a dict ``name -> float`` for the logs."""
        value = self(state)
        return value, {self.name: float(value.detach())}

    def parts(self) -> Mapping[str, "Functional"]:
        """The named sub-functionals whose values ``evaluate`` logs separately (a sum's
        terms); the engine re-evaluates them one by one to name the part whose gradient is
        not finite.  A functional with no parts returns ``{}``."""
        return {}

    def state_dict(self) -> dict:
        """What the next evaluation depends on besides the state and the bound data (e.g.
        warm-start potentials), for checkpoints; ``{}`` for a functional without such state."""
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore `state_dict` output after a resume.  Default: forget caches (`reset`), so
        nothing computed before the resume is reused."""
        self.reset()

    def velocity_factor(self, y) -> int:
        """The factor that turns a particle's gradient into its velocity, for particles
        with labels ``y`` (``(n,)``): ``n`` for ``time_scaling="particle_average"`` (each
        particle has mass ``1/n``).  Plain gradient descent with ``lr`` then advances the
        flow by ``lr / factor``, so ``lr = time_step * factor`` (`dsflow.units`)."""
        if self.time_scaling != "particle_average":
            raise ValueError(f"{type(self).__name__}: time_scaling={self.time_scaling!r} is not one of "
                             f"{TIME_SCALINGS}; override velocity_factor for it")
        return int(y.shape[0])

    def particle_masses(self, y):
        """``None`` for a particle average (every particle has mass ``1/n``: the gradient is
        scaled by one factor, `velocity_factor`, folded into ``lr``).  A functional with
        ``time_scaling="class_mass"`` returns the ``(n,)`` float64 masses ``m_i`` of its
        particles: the engine divides particle ``i``'s gradient by ``m_i`` before the optimizer
        step, so the step follows the velocity ``grad_i / m_i``."""
        if self.time_scaling == "particle_average":
            return None
        raise NotImplementedError(f"{type(self).__name__}: time_scaling={self.time_scaling!r} needs particle_masses")

    def __add__(self, other: "Functional") -> "WeightedSum":
        return WeightedSum({self.name: self, other.name: other})


class WeightedSum(Functional):
    """``F = sum_k w_k F_k``.  Logs every part (unweighted) next to the total.

    ``terms`` maps a name to either a `Functional` (weight 1) or a mapping
    ``{"weight": w, "functional": F}`` (the shape Hydra configs use).
    """

    name = "total"

    def __init__(self, terms: Mapping[str, Any]):
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        self.terms: dict[str, Functional] = {}
        self.weights: dict[str, float] = {}
        for key, term in terms.items():
            if isinstance(term, Functional):
                fn, w = term, 1.0
            elif isinstance(term, Mapping) and "functional" in term:
                fn, w = term["functional"], float(term.get("weight", 1.0))
            else:
                raise TypeError(
                    f"WeightedSum term {key!r} must be a Functional or "
                    f"{{weight: float, functional: Functional}}, got {type(term).__name__}"
                )
            if not isinstance(fn, Functional):
                raise TypeError(f"WeightedSum term {key!r}: {type(fn).__name__} is not a Functional")
            fn.name = str(key)
            self.terms[str(key)] = fn
            self.weights[str(key)] = w
        scalings = {k: f.time_scaling for k, f in self.terms.items()}
        unknown = {k: s for k, s in scalings.items() if s not in TIME_SCALINGS}
        if unknown:
            raise ValueError(f"WeightedSum: terms {unknown} declare time scalings that are not one of {TIME_SCALINGS}")
        #: terms whose masses are per class (WoW); the particle-average terms are rescaled to them
        self._class_mass_terms = [k for k, s in scalings.items() if s == "class_mass"]

    @property
    def time_scaling(self) -> str:  # type: ignore[override]
        return "class_mass" if self._class_mass_terms else "particle_average"

    def particle_masses(self, y):
        """The class-mass terms' masses (they must agree), or ``None`` for a sum of particle
        averages.  In a mixed sum every term keeps the velocity it has in its own flow: a
        particle-average term's gradient ``grad_i F_k`` (velocity ``n grad_i F_k``) is
        multiplied by ``n m_i`` inside `evaluate`, so that the engine's division by ``m_i``
        gives back ``n grad_i F_k``.  With uniform class weights and equal class sizes
        ``m_i = 1/n`` and nothing is rescaled."""
        if not self._class_mass_terms:
            return None
        masses = None
        for key in self._class_mass_terms:
            m = self.terms[key].particle_masses(y)
            if masses is not None and (m.shape != masses.shape or not bool(((m - masses).abs()
                                                                             <= 1e-12 * masses).all())):
                raise ValueError(f"WeightedSum: the class-mass terms {self._class_mass_terms} give the particles "
                                 "different masses (class_weights differ); give them the same class_weights")
            masses = m
        return masses

    def velocity_factor(self, y) -> int:
        if self._class_mass_terms:
            return 1
        return next(iter(self.terms.values())).velocity_factor(y)

    def parts(self) -> Mapping[str, Functional]:
        return dict(self.terms)

    @property
    def temperature(self) -> float:  # type: ignore[override]
        return sum(self.weights[k] * f.temperature for k, f in self.terms.items())

    def bind(self, *, source=None, target=None) -> "WeightedSum":
        for f in self.terms.values():
            f.bind(source=source, target=target)
        return self

    @property
    def label(self) -> str:
        return " + ".join(f.label if self.weights[k] == 1 else f"{self.weights[k]:g}·{f.label}"
                          for k, f in self.terms.items())

    def check(self, state: ParticleState) -> None:
        for f in self.terms.values():
            f.check(state)

    def reset(self) -> None:
        for f in self.terms.values():
            f.reset()

    def state_dict(self) -> dict:
        """The parts' resumable state (e.g. OTDD warm starts), keyed by term name; parts
        without any (an empty `state_dict`) are left out."""
        return {k: sd for k, sd in ((k, f.state_dict()) for k, f in self.terms.items()) if sd}

    def load_state_dict(self, state: Mapping) -> None:
        for k, sub in state.items():
            if k in self.terms:
                self.terms[k].load_state_dict(sub)

    def _rescaled_state(self, state: ParticleState) -> ParticleState:
        """``state`` whose features pass gradients back multiplied by ``n m_i`` (mixed sums)."""
        from dsflow.functionals.gradient_scale import scale_gradient

        masses = self.particle_masses(state.y)
        factor = (masses * state.n).to(device=state.x.device, dtype=state.x.dtype)
        return ParticleState(x=scale_gradient(state.x, factor), y=state.y, labels=state.labels,
                             template=state.template, step=state.step, meta=state.meta)

    def evaluate(self, state: ParticleState):
        total = None
        parts: dict[str, float] = {}
        mixed = bool(self._class_mass_terms) and len(self._class_mass_terms) < len(self.terms)
        averaged = self._rescaled_state(state) if mixed else state
        for key, f in self.terms.items():
            v, sub = f.evaluate(averaged if f.time_scaling == "particle_average" else state)
            if sub:  # a term with no computable value (entropy) reports no part
                parts.update(sub if len(sub) > 1 else {key: float(v.detach())})
            weighted = self.weights[key] * v
            total = weighted if total is None else total + weighted
        parts[self.name] = float(total.detach())
        return total, parts

    def __call__(self, state: ParticleState):
        return self.evaluate(state)[0]
