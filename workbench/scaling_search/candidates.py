"""The candidates of step 1: (α, β, γ) with α·β²·γ² ≈ 2, on a grid of `step`.

The sampler (grid or TPE) proposes α and β; γ is the grid value that brings α·β²·γ² closest
to the target, and the candidate is feasible when the product is within `tolerance` of it
(relative). Both strategies therefore search the same finite set, and the tolerance decides
how strictly "FLOPs double per unit of φ" is held. Pure Python: no Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOPS_TARGET = 2.0  # α·β²·γ²: FLOPs roughly double per unit of φ (the paper's constraint)


@dataclass(frozen=True)
class Candidate:
    alpha: float  # depth multiplier per unit of φ
    beta: float  # width
    gamma: float  # resolution

    @property
    def product(self) -> float:
        return self.alpha * self.beta**2 * self.gamma**2

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "product": round(self.product, 4)}


def grid_values(low: float, high: float, step: float) -> list[float]:
    """low, low+step, ..., high (inclusive), rounded so 1.1 stays 1.1 in tables and JSON."""
    if step <= 0 or high < low:
        raise ValueError(f"grid {low}..{high} step {step}: need step > 0 and high >= low")
    count = math.floor((high - low) / step + 1e-9) + 1
    return [round(low + i * step, 6) for i in range(count)]


def complete(
    alpha: float, beta: float, *, step: float, gamma_range: tuple[float, float], target: float = FLOPS_TARGET
) -> Candidate:
    """The candidate (α, β, γ) whose γ (on the grid, inside `gamma_range`) brings the product
    closest to `target`."""
    gammas = grid_values(gamma_range[0], gamma_range[1], step)
    gamma = min(gammas, key=lambda g: (abs(alpha * beta**2 * g**2 - target), g))
    return Candidate(alpha, beta, gamma)


def constraint_error(candidate: Candidate, target: float = FLOPS_TARGET) -> float:
    """Relative distance of α·β²·γ² from the target."""
    return abs(candidate.product / target - 1.0)


def feasible_grid(
    alphas: list[float],
    betas: list[float],
    *,
    step: float,
    gamma_range: tuple[float, float],
    tolerance: float,
    target: float = FLOPS_TARGET,
) -> list[Candidate]:
    """Every grid candidate that meets the constraint (for reports: how big the space is)."""
    out = []
    for a in alphas:
        for b in betas:
            c = complete(a, b, step=step, gamma_range=gamma_range, target=target)
            if constraint_error(c, target) <= tolerance:
                out.append(c)
    return out
