"""Internal energy ``T * int rho log rho`` (entropy), realised as Brownian noise.

The entropy of an empirical measure is not defined (it has no density), so this functional
has no particle value.  Its gradient-flow contribution is the diffusion ``T * Laplacian(rho)``
of the Fokker-Planck equation, which particles realise by Euler-Maruyama: after each
optimizer step the engine adds ``sqrt(2 * T * lr) * N(0, I)`` to the moving features
(`dsflow.flow.engine.run_flow`, seeded).  Hence:

* ``__call__`` returns a constant 0 (no gradient), so it can sit in a `WeightedSum`;
* `evaluate` reports *no* part: the entropy is absent from the logged parts and from the
  logged total (which is the sum of the computable terms only);
* ``temperature`` carries ``T`` (a `WeightedSum` multiplies it by the term's weight).
"""

from __future__ import annotations

from dsflow.state import ParticleState
from dsflow.functionals.base import Functional


class Entropy(Functional):
    """Entropy ``T int rho log rho``: Brownian noise of temperature ``T`` in the flow."""

    name = "entropy"

    def __init__(self, temperature: float = 0.01) -> None:
        temperature = float(temperature)
        if not temperature >= 0 or temperature == float("inf"):
            raise ValueError(f"Entropy: temperature must be a finite number >= 0, got {temperature}")
        self._temperature = temperature

    @property
    def temperature(self) -> float:  # type: ignore[override]
        return self._temperature

    def __call__(self, state: ParticleState):
        return state.x.new_zeros(())

    def evaluate(self, state: ParticleState):
        """``(0, {})``: the value is not computable from particles, so no part is logged."""
        return self(state), {}


__all__ = ["Entropy"]
