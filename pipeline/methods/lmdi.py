"""Index decomposition (LMDI-I) of a change in emissions into its drivers.

The identity decomposed, for each county x crop row ``i`` of crop ``k``::

    E_i = A * (A_k / A) * (a_i / A_k) * I_i

with ``A`` the total sown area (ha), ``A_k / A`` the crop mix, ``a_i / A_k`` the location of crop
``k``'s area among counties, and ``I_i = E_i / a_i`` the emission intensity (kg N2O-N/ha). The
intensity of a nonlinear model depends on the N rate and on the environment (water input,
climate): ``I_i = I(N_i, env_i)``. Its log change is split exactly into an N-rate part and an
environment part by the two-factor Shapley rule, evaluated with the emission model at the crossed
states ``I(N_1, env_0)`` and ``I(N_0, env_1)``. So **the whole effect of the N rate on intensity,
including the rise of the emission factor with N, is assigned to the N rate**; the part a linear
(constant-EF) model would give, ``L * ln(N_1/N_0)``, is reported beside it as
``n_rate_proportional``, and the rest as ``n_rate_ef_response``.

LMDI-I is exact for a multiplicative identity: the effects sum to the change of the identity's
value. Zeros (a crop absent in one period, zero intensity) are replaced by a tiny positive
number (Ang & Liu 2007); the identity is then evaluated on the replaced factors, so the effects
still sum exactly to its change, and the difference from the true change (of the order of the
replacement) is reported as ``residual``.

References
----------
Ang, B.W. (2005) The LMDI approach to decomposition analysis: a practical guide. Energy Policy
33:867-871.
Ang, B.W., Liu, N. (2007) Handling zero values in the logarithmic mean Divisia index
decomposition approach. Energy Policy 35:238-246.
Shang, Z. et al. (2019) Global Change Biology 25:3706-3719 (IDA of China's cropland N2O).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Replacement for zero factors (Ang & Liu 2007); small against any kg or ha value.
ZERO = 1e-100

EFFECTS = ("area", "crop_mix", "location", "n_rate", "environment")


def logarithmic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logarithmic mean ``L(a, b) = (a - b) / (ln a - ln b)``, ``L(a, a) = a``.

    Parameters
    ----------
    a, b
        Positive arrays of the same shape.

    Returns
    -------
    numpy.ndarray
        ``L(a, b)``; 0 where either is 0.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (np.log(a) - np.log(b))
    close = np.isclose(a, b, rtol=1e-12, atol=0.0)
    out = np.where(close, a, out)
    return np.where((a <= 0) | (b <= 0), 0.0, out)


def lmdi(factors0: Mapping[str, np.ndarray], factors1: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Additive LMDI-I of ``V = sum_i prod_k x_ki`` between two states.

    Parameters
    ----------
    factors0, factors1
        Factor arrays by name (same names, same row order), non-negative.

    Returns
    -------
    dict
        ``name -> effect`` (units of ``V``), plus ``"total"`` = ``V1 - V0`` of the identity
        evaluated on the zero-replaced factors (the effects sum to it exactly).

    Notes
    -----
    ``effect_k = sum_i L(V1_i, V0_i) ln(x1_ki / x0_ki)`` with ``V_i = prod_k x_ki``.

    References
    ----------
    Ang (2005) Energy Policy 33:867.
    """
    names = list(factors0)
    if set(names) != set(factors1):
        raise ValueError("both states need the same factors")
    x0 = {k: np.maximum(np.asarray(factors0[k], float), ZERO) for k in names}
    x1 = {k: np.maximum(np.asarray(factors1[k], float), ZERO) for k in names}
    # Sum the logs instead of multiplying: a product of several ZEROs would underflow to 0.
    lv0 = sum(np.log(x0[k]) for k in names)
    lv1 = sum(np.log(x1[k]) for k in names)
    v0, v1 = np.exp(lv0), np.exp(lv1)
    w = logarithmic_mean(v1, v0)
    out = {k: float(np.sum(w * (np.log(x1[k]) - np.log(x0[k])))) for k in names}
    out["total"] = float(np.sum(v1 - v0))
    return out


def shapley_two(f00: np.ndarray, f10: np.ndarray, f01: np.ndarray, f11: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-factor split of ``f11 - f00`` (Shapley / Sun 1998).

    ``f10`` has the first factor at its new value and the second at its old one.

    Returns
    -------
    (first, second)
        ``first = ((f10 - f00) + (f11 - f01)) / 2``, ``second = ((f01 - f00) + (f11 - f10)) / 2``;
        ``first + second = f11 - f00``.
    """
    first = 0.5 * ((f10 - f00) + (f11 - f01))
    second = 0.5 * ((f01 - f00) + (f11 - f10))
    return first, second


def decompose_emissions(rows: pd.DataFrame) -> dict[str, float]:
    """LMDI of the change in emissions between two states of county x crop rows.

    Parameters
    ----------
    rows
        One row per county x crop present in either state, with columns ``crop``,
        ``area_ha_0``, ``area_ha_1`` (ha; 0 when absent), ``n2o_n_kg_0``, ``n2o_n_kg_1``
        (kg N2O-N), ``n_rate_kg_ha_0``, ``n_rate_kg_ha_1`` (kg N/ha) and the crossed
        intensities ``intensity_n1_env0_kg_ha`` (N rate of state 1, environment of state 0)
        and ``intensity_n0_env1_kg_ha`` (kg N2O-N/ha), evaluated with the emission model.
        Rows absent from one state may hold anything in the crossed columns.

    Returns
    -------
    dict
        Effects in kg N2O-N: ``area``, ``crop_mix``, ``location``, ``n_rate``,
        ``environment``, the sub-terms ``n_rate_proportional`` and ``n_rate_ef_response``
        (they sum to ``n_rate``), ``total`` (observed change), ``sum_of_effects`` and
        ``residual = total - sum_of_effects``.

    Notes
    -----
    ``E_i = A (A_k/A) (a_i/A_k) I_i``; ``ln I_i`` change split by :func:`shapley_two` into
    N-rate and environment parts, each weighted by ``L(E1_i, E0_i)``. The proportional part
    is ``L ln(N1/N0)`` over rows with N > 0 in both states.

    References
    ----------
    Ang (2005); Ang & Liu (2007); Shang et al. (2019).
    """
    r = rows
    a0, a1 = r["area_ha_0"].to_numpy(float), r["area_ha_1"].to_numpy(float)
    e0, e1 = r["n2o_n_kg_0"].to_numpy(float), r["n2o_n_kg_1"].to_numpy(float)
    crop = r["crop"].astype(str).to_numpy()
    present0, present1 = a0 > 0, a1 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        i0 = np.where(present0, e0 / a0, 0.0)
        i1 = np.where(present1, e1 / a1, 0.0)
    both = present0 & present1
    # A row that appears or vanishes changes through its location share only; its intensity
    # is taken as equal in both states so that no N-rate or environment effect is invented.
    i0 = np.where(present0, i0, i1)
    i1 = np.where(present1, i1, i0)
    i10 = np.where(both, r["intensity_n1_env0_kg_ha"].to_numpy(float), i0)
    i01 = np.where(both, r["intensity_n0_env1_kg_ha"].to_numpy(float), i0)

    def shares(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        total = a.sum()
        by_crop = pd.Series(a).groupby(crop).transform("sum").to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            return (
                np.full(a.shape, total),
                np.where(total > 0, by_crop / total, 0.0),
                np.where(by_crop > 0, a / by_crop, 0.0),
            )

    A0, S0, s0 = shares(a0)
    A1, S1, s1 = shares(a1)
    eff = lmdi(
        {"area": A0, "crop_mix": S0, "location": s0, "intensity": i0},
        {"area": A1, "crop_mix": S1, "location": s1, "intensity": i1},
    )
    lnv0 = np.log(np.maximum(A0, ZERO)) + np.log(np.maximum(S0, ZERO)) + np.log(np.maximum(s0, ZERO))
    lnv1 = np.log(np.maximum(A1, ZERO)) + np.log(np.maximum(S1, ZERO)) + np.log(np.maximum(s1, ZERO))
    lf = [np.log(np.maximum(x, ZERO)) for x in (i0, i10, i01, i1)]
    w = logarithmic_mean(np.exp(lnv1 + lf[3]), np.exp(lnv0 + lf[0]))
    part_n, part_env = shapley_two(*lf)
    n_eff = float(np.sum(w * part_n))
    env_eff = float(np.sum(w * part_env))
    n0, n1 = r["n_rate_kg_ha_0"].to_numpy(float), r["n_rate_kg_ha_1"].to_numpy(float)
    ok = both & (n0 > 0) & (n1 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        prop = float(np.sum(np.where(ok, w * np.log(np.where(ok, n1 / np.where(ok, n0, 1.0), 1.0)), 0.0)))
    out = {
        "area": eff["area"],
        "crop_mix": eff["crop_mix"],
        "location": eff["location"],
        "n_rate": n_eff,
        "environment": env_eff,
        "n_rate_proportional": prop,
        "n_rate_ef_response": n_eff - prop,
        "total": float(e1.sum() - e0.sum()),
    }
    out["sum_of_effects"] = sum(out[k] for k in EFFECTS)
    out["residual"] = out["total"] - out["sum_of_effects"]
    return out
