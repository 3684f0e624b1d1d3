"""Candidate N-response forms for field N2O emissions, leave-site-out comparison and stacking.

The shape of the N response of direct N2O emission is an open question (DOMAIN.md 3b): linear
with background (Bouwman 1996), exponential (Shcherbak et al. 2014), saturating, or other
forms (Philibert et al. 2012 compared 13). This module fits several candidate forms to field
records, scores them by leave-site-out prediction, weights them by stacking of predictive
distributions (Yao et al. 2018), and draws the form together with its parameters in a Monte
Carlo, so that model-form uncertainty reaches the inventory interval (issue 12, items 1-3, 6).

Pure computation: numpy/pandas in, dataclasses and plain dicts out; no configuration objects
and no file I/O.

One error model for every form
------------------------------
All candidates share the same error structure and differ only in the shape of the N response
``f(N)``; the comparison is then about the shape, not about a Gaussian versus a log-normal
likelihood::

    log E_ij = log f(N_ij; theta) + gamma'x_ij + u_i + e_ij,
    u_i ~ N(0, s2_site)  (site random intercept; random intercept + N slope for
                          ``exponential_rs``),   e_ij ~ N(0, s2_resid)

with ``E`` in kg N2O-N/ha per period, ``N`` in kg N/ha and ``x`` the caller's covariate
columns (they act multiplicatively in every form, as in today's exponential model). The
multiplicative (log-normal) error matches the right-skewed, variance-grows-with-mean fluxes of
field data, keeps every prediction positive, and makes the site effect a multiplicative site
level in every form. The forms (``a`` = log median background of a typical site):

========================  ==========================================================  =========
family                    log f(N) + gamma'x                                           N-params
========================  ==========================================================  =========
``linear``                a + log(1 + r N)            (E0 (1 + r N): Bouwman 1996)      r >= 0
``exponential``           a + b N                     (Stehfest & Bouwman 2006)         b
``quadratic``             a + b N + c N^2             (log-quadratic)                   b, c
``saturating``            a + log(1 + r (1 - exp(-k N)) / k)    (Mitscherlich)          r, k >= 0
``exponential_rs``        a + b N, random intercept *and* N slope by site              b
========================  ==========================================================  =========

The Mitscherlich curve ``E0 + A (1 - exp(-k N))`` is written with the relative initial slope
``r = A k / E0`` (per kg N/ha) so that it tends to the linear form as ``k -> 0`` (no ridge in
the likelihood when the data are close to linear); ``A / E0 = r / k``.

Fitting
-------
Profiled (RE)ML of a linear mixed model on ``log E`` (Bates' profiled deviance with the
relative covariance factor of the random effects), written in group sufficient statistics so
a fit takes milliseconds. The nonlinear N-parameters of ``linear`` and ``saturating`` enter as
an offset and are optimised jointly with the variance parameters (L-BFGS-B, several starts).
The parameter covariance is the Gauss-Newton (Lindstrom-Bates linearised) GLS covariance
``s2 (J' V^-1 J)^-1`` with ``J`` the Jacobian of the log-mean in all mean parameters, scaled by
``(t(0.975, G - 1) / z(0.975))^2`` for G sites, as the fit stage does for today's models.
Zero fluxes cannot enter a log model: they are floored (default half the smallest positive
flux) and counted in :attr:`FittedForm.n_floored`.

Retransformation (mean, not median)
-----------------------------------
``exp(E[log E])`` is the median. The expected emission of a new site is
``f(N) exp(gamma'x) * s`` with ``s`` the Duan (1983) smearing factor ``mean_j exp(log E_j -
eta_j)`` over the fitting records (marginal residuals, site effect included; default) or the
log-normal factor ``exp((s2_site + s2_resid) / 2)``. ``exponential_rs`` always uses the
log-normal factor, which depends on N: ``exp((s2_resid + z'Psi z) / 2)``, ``z = (1, N)``.
``log s`` is carried as the last parameter (``log_smearing``) with a site-cluster sandwich
variance, so Monte Carlo draws carry its uncertainty.

Central estimate versus Monte Carlo mean (issue 12 item 3)
---------------------------------------------------------
The mean over parameter draws of ``exp(x'b)`` is biased upward by Jensen's inequality (by
``exp(x'Sigma x / 2)`` for a log-linear form). The central estimate of this module is always
the *plug-in* ``predict_mean`` (estimates, with retransformation); draws serve only for the
interval. :meth:`FittedForm.predict_draws` can also apply the per-draw correction
``exp(-x'Sigma x / 2)`` (``jensen_correct=True``, exact for the log-linear forms, first order
for the others) when a Monte Carlo mean is wanted.

References
----------
Bouwman, A.F. (1996) Direct emission of nitrous oxide from agricultural soils. Nutrient
Cycling in Agroecosystems 46:53-70.
Stehfest, E. & Bouwman, L. (2006) Nutrient Cycling in Agroecosystems 74:207-228.
Shcherbak, I., Millar, N. & Robertson, G.P. (2014) Global metaanalysis of the nonlinear response
of soil nitrous oxide (N2O) emissions to fertilizer nitrogen. PNAS 111:9199-9204.
Philibert, A., Loyce, C. & Makowski, D. (2012) Quantifying uncertainties in N2O emission due to
N fertilizer application in cultivated areas. PLoS ONE 7:e50950.
Yao, Y., Vehtari, A., Simpson, D. & Gelman, A. (2018) Using stacking to average Bayesian
predictive distributions. Bayesian Analysis 13:917-1007.
Duan, N. (1983) Smearing estimate: a nonparametric retransformation method. JASA 78:605-610.
Bates, D., Maechler, M., Bolker, B. & Walker, S. (2015) Fitting linear mixed-effects models
using lme4. J. Stat. Softw. 67(1).
Lindstrom, M.J. & Bates, D.M. (1990) Nonlinear mixed effects models for repeated measures
data. Biometrics 46:673-687.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.stats import t as student_t

from pipeline.errors import ModelError

#: Candidate families, in reporting order.
FAMILIES: tuple[str, ...] = ("linear", "exponential", "quadratic", "saturating", "exponential_rs")
#: Families whose log-mean is linear in N with a positive-curvature (convex) mean.
EXPONENTIAL_FAMILIES: tuple[str, ...] = ("exponential", "exponential_rs")
#: Name of the log retransformation factor, always the last parameter.
LOG_SMEARING = "log_smearing"
#: Standard normal 97.5 % quantile.
Z95 = 1.959963984540054
#: Internal unit of N while fitting (100 kg N/ha), for conditioning; parameters are reported
#: per kg N/ha.
_NS = 100.0

_N_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("r_per_kg_n",),
    "exponential": ("b_per_kg_n",),
    "quadratic": ("b_per_kg_n", "c_per_kg_n2"),
    "saturating": ("r_per_kg_n", "k_per_kg_n"),
    "exponential_rs": ("b_per_kg_n",),
}
#: Power of N in each N-parameter's unit (user value = internal value / 100**power).
_N_POWER: dict[str, tuple[int, ...]] = {
    "linear": (1,),
    "exponential": (1,),
    "quadratic": (1, 2),
    "saturating": (1, 1),
    "exponential_rs": (1,),
}
_MIN_LEVELS = {"linear": 2, "exponential": 2, "quadratic": 3, "saturating": 3, "exponential_rs": 2}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _phi(x: np.ndarray) -> np.ndarray:
    """(1 - exp(-x)) / x, continuous at 0 (= 1)."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-8
    if not small.any():
        out = np.expm1(-x)
        out /= x
        return np.negative(out, out=out)
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 - x / 2.0, -np.expm1(-safe) / safe)


def _dphi(x: np.ndarray) -> np.ndarray:
    """d/dx of :func:`_phi`: (exp(-x) (1 + x) - 1) / x^2, continuous at 0 (= -1/2)."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-4
    safe = np.where(small, 1.0, x)
    return np.where(small, -0.5 + x / 3.0, (np.exp(-safe) * (1.0 + safe) - 1.0) / safe**2)


def _as_X(X: np.ndarray | pd.DataFrame | None, n: int, p: int | None = None) -> np.ndarray:
    if X is None:
        out = np.zeros((n, 0 if p is None else p))
        return out
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] != n:
        raise ModelError(f"covariate matrix has {arr.shape[0]} rows for {n} N rates. Fix: pass one row per record")
    if p is not None and arr.shape[1] != p:
        raise ModelError(
            f"covariate matrix has {arr.shape[1]} columns, the model was fitted with {p}. "
            "Fix: pass the same covariate columns, in the same order"
        )
    if not np.all(np.isfinite(arr)):
        raise ModelError(
            "covariate matrix has missing or non-finite values. Fix: fill them before fitting or predicting"
        )
    return arr


def _as_N(n_rate_kg_ha: Any) -> np.ndarray:
    N = np.atleast_1d(np.asarray(n_rate_kg_ha, dtype=float))
    if not np.all(np.isfinite(N)) or (N < 0).any():
        raise ModelError("N rates must be finite and >= 0 kg N/ha. Fix: correct the rates")
    return N


# ---------------------------------------------------------------------------------------------
# Profiled (RE)ML of a linear mixed model in group sufficient statistics
# ---------------------------------------------------------------------------------------------
class _LMM:
    """y = D beta + Z_g u_g + e, u_g ~ N(0, s2 L L'), e ~ N(0, s2 I); rows sorted by group."""

    def __init__(self, D: np.ndarray, Z: np.ndarray, starts: np.ndarray) -> None:
        self.D, self.Z, self.starts = D, Z, starts
        self.n, self.p = D.shape
        self.q = Z.shape[1]
        self.ZtZ = np.add.reduceat(Z[:, :, None] * Z[:, None, :], starts, axis=0)
        self.ZtD = np.add.reduceat(Z[:, :, None] * D[:, None, :], starts, axis=0)
        self.DtD = D.T @ D
        if self.q == 1:  # scalar fast path: z = 1, so Z'Z = n_g and Z'D = column sums per group
            self.ng = self.ZtZ[:, 0, 0]
            self.sD = self.ZtD[:, 0, :]
            self.sDD = self.sD[:, :, None] * self.sD[:, None, :]

    def L(self, theta: np.ndarray) -> np.ndarray:
        if self.q == 1:
            return np.array([[theta[0]]])
        return np.array([[theta[0], 0.0], [theta[1], theta[2]]])

    def _P(self, L: np.ndarray) -> tuple[np.ndarray, float]:
        M = np.eye(self.q) + L.T @ self.ZtZ @ L
        _sign, logdet = np.linalg.slogdet(M)
        P = L @ np.linalg.inv(M) @ L.T
        return P, float(logdet.sum())

    def criterion(self, theta: np.ndarray, y: np.ndarray, reml: bool = True) -> tuple[float, dict[str, Any]]:
        """-2 x profiled (restricted) log-likelihood and the estimates at ``theta``."""
        if self.q == 1:
            l2 = float(theta[0]) ** 2
            M = 1.0 + l2 * self.ng
            w = l2 / M
            logdetM = float(np.log(M).sum())
            sy = np.add.reduceat(y, self.starts)
            A = self.DtD - np.tensordot(w, self.sDD, axes=1)
            b = self.D.T @ y - (w * sy) @ self.sD
            c = float(y @ y - np.sum(w * sy**2))
            P = w[:, None, None]
        else:
            P, logdetM = self._P(self.L(theta))
            Zty = np.add.reduceat(self.Z * y[:, None], self.starts, axis=0)
            PZtD = P @ self.ZtD
            A = self.DtD - np.einsum("gqp,gqr->pr", self.ZtD, PZtD)
            b = self.D.T @ y - np.einsum("gqp,gq->p", PZtD, Zty)
            c = float(y @ y - np.einsum("gq,gqr,gr->", Zty, P, Zty))
        try:
            C = np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            return math.inf, {}
        beta = np.linalg.solve(A, b)
        Q = c - float(b @ beta)
        df = self.n - self.p if reml else self.n
        if not (Q > 0 and df > 0):
            return math.inf, {}
        val = logdetM + df * (1.0 + math.log(2.0 * math.pi * Q / df))
        if reml:
            val += 2.0 * float(np.log(np.diag(C)).sum())
        return val, {"beta": beta, "sigma2": Q / df, "P": P}

    def gls_information(self, J: np.ndarray, P: np.ndarray) -> np.ndarray:
        """s2 x J' V^-1 J for a Jacobian J (rows sorted like the data)."""
        ZtJ = np.add.reduceat(self.Z[:, :, None] * J[:, None, :], self.starts, axis=0)
        return J.T @ J - np.einsum("gqp,gqr->pr", ZtJ, P @ ZtJ)


# ---------------------------------------------------------------------------------------------
# Fitted form
# ---------------------------------------------------------------------------------------------
@dataclass
class FittedForm:
    """One fitted N-response form (see the module docstring for the model).

    Attributes
    ----------
    family
        One of :data:`FAMILIES`.
    param_names
        ``intercept`` (log median background of a typical site, log kg N2O-N/ha), the
        N-parameters (per kg N/ha, ``c`` per (kg N/ha)^2), the covariate names, and
        ``log_smearing`` (log retransformation factor).
    params, cov
        Estimates and their sampling covariance, same order.
    sigma2_resid, re_cov
        Residual variance and random-effect covariance on the log scale (``re_cov`` is 1x1,
        site intercept; 2x2 intercept and slope per kg N/ha for ``exponential_rs``).
    retransform, smearing
        ``"duan"`` or ``"lognormal"`` and the factor ``s`` at N = 0.
    n_records, n_sites, n_floored, floor_kg_ha
        Fitting data summary; records with flux <= 0 were floored at ``floor_kg_ha``.
    deviance
        -2 x the maximised restricted log-likelihood (same fixed design only: not comparable
        between families; compare them with :func:`leave_site_out_cv`).
    optimum
        Optimiser coordinates at the optimum (internal: nonlinear N-parameters per 100 kg N/ha
        and relative random-effect factor), used to warm-start refits.
    """

    family: str
    param_names: list[str]
    params: np.ndarray
    cov: np.ndarray
    sigma2_resid: float
    re_cov: np.ndarray
    retransform: str
    smearing: float
    n_records: int
    n_sites: int
    n_floored: int = 0
    floor_kg_ha: float = float("nan")
    deviance: float = float("nan")
    covariate_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    optimum: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ModelError(f"unknown N-response family {self.family!r}. Fix: use one of {', '.join(FAMILIES)}")
        self.params = np.asarray(self.params, dtype=float)
        k = len(self.params)
        self.cov = np.asarray(self.cov, dtype=float).reshape(k, k)
        self.re_cov = np.atleast_2d(np.asarray(self.re_cov, dtype=float))

    # -- evaluation ---------------------------------------------------------------------------
    @property
    def n_covariates(self) -> int:
        """Number of covariate columns X must have."""
        return len(self.covariate_names)

    def _log_mean(self, P: np.ndarray, N: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(m, n) log expected emission for parameter rows P (m, k)."""
        fam = self.family
        a = P[:, :1]
        nn = len(_N_PARAMS[fam])
        gam = P[:, 1 + nn : 1 + nn + self.n_covariates]
        ls = P[:, -1:]
        Nr = N[None, :]
        if fam in ("exponential", "exponential_rs"):
            shape = P[:, 1:2] * Nr
        elif fam == "quadratic":
            shape = P[:, 1:2] * Nr + P[:, 2:3] * Nr**2
        elif fam == "linear":
            with np.errstate(divide="ignore", invalid="ignore"):
                shape = np.log(np.clip(1.0 + P[:, 1:2] * Nr, 0.0, None))
        else:  # saturating
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                shape = np.log(np.clip(1.0 + P[:, 1:2] * Nr * _phi(P[:, 2:3] * Nr), 0.0, None))
        eta = a + shape + gam @ X.T + ls
        if fam == "exponential_rs":
            psi = self.re_cov
            eta = eta + (psi[0, 1] * Nr + 0.5 * psi[1, 1] * Nr**2)
        return eta

    def predict_mean(self, n_rate_kg_ha: Any, X: np.ndarray | pd.DataFrame | None = None) -> np.ndarray:
        """Plug-in expected emission, kg N2O-N/ha per period, of a new site (the central estimate).

        Parameters
        ----------
        n_rate_kg_ha
            N rates, kg N/ha, shape (n,).
        X
            Covariates (n, p) in the columns and centring used for the fit; ``None`` when the
            form has no covariates (or to evaluate at x = 0).

        Returns
        -------
        numpy.ndarray
            (n,) expected emission, retransformation-corrected (:attr:`retransform`).

        Notes
        -----
        ``E = f(N; theta_hat) exp(gamma_hat'x) s``; for ``exponential_rs``
        ``s(N) = s0 exp(psi_01 N + psi_11 N^2 / 2)``.
        """
        N = _as_N(n_rate_kg_ha)
        Xa = (
            _as_X(X, len(N), self.n_covariates)
            if (X is not None or self.n_covariates == 0)
            else np.zeros((len(N), self.n_covariates))
        )
        return np.exp(self._log_mean(self.params[None, :], N, Xa))[0]

    def background(self, X: np.ndarray | pd.DataFrame | None = None, n: int | None = None) -> np.ndarray:
        """Expected emission at N = 0, kg N2O-N/ha per period, for each row of X (n, p), or
        for ``n`` rows at x = 0 when X is None."""
        rows = (n or 1) if X is None else _as_X(X, len(np.asarray(X))).shape[0]
        return self.predict_mean(np.zeros(rows), X)

    def emission_factor(self, n_rate_kg_ha: Any, X: np.ndarray | pd.DataFrame | None = None) -> np.ndarray:
        """Fertilizer-induced EF(N) = (E(N) - E(0)) / N, kg N2O-N per kg N (NaN at N = 0)."""
        N = _as_N(n_rate_kg_ha)
        e = self.predict_mean(N, X)
        e0 = self.predict_mean(np.zeros_like(N), X)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(N > 0, (e - e0) / N, np.nan)

    def draw_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` parameter vectors from N(params, cov), shape (n, k) (variance components fixed)."""
        w, V = np.linalg.eigh((self.cov + self.cov.T) / 2.0)
        root = V * np.sqrt(np.clip(w, 0.0, None))
        return self.params + rng.standard_normal((n, len(self.params))) @ root.T

    def predict_draws(
        self,
        params: np.ndarray,
        n_rate_kg_ha: Any,
        X: np.ndarray | pd.DataFrame | None = None,
        jensen_correct: bool = False,
    ) -> np.ndarray:
        """Expected emission (kg N2O-N/ha per period) under each parameter draw, shape (m, n).

        Parameters
        ----------
        params
            (m, k) draws from :meth:`draw_params`.
        n_rate_kg_ha, X
            As :meth:`predict_mean`.
        jensen_correct
            Multiply each draw by ``exp(-g'Sigma g / 2)``, ``g`` the gradient of the log mean
            in the parameters at the estimate, so that the mean over draws targets the plug-in
            (exact for the log-linear forms, first order otherwise). Off by default: use the
            draws for the interval and :meth:`predict_mean` for the central estimate.
        """
        N = _as_N(n_rate_kg_ha)
        Xa = (
            _as_X(X, len(N), self.n_covariates)
            if (X is not None or self.n_covariates == 0)
            else np.zeros((len(N), self.n_covariates))
        )
        P = np.atleast_2d(np.asarray(params, dtype=float))
        if P.shape[1] != len(self.params):
            raise ModelError(
                f"{self.family}: params have {P.shape[1]} columns, the form has {len(self.params)}. "
                "Fix: draw them with draw_params()"
            )
        out = np.exp(self._log_mean(P, N, Xa))
        if jensen_correct:
            G = self._log_mean_gradient(N, Xa)
            out *= np.exp(-0.5 * np.einsum("ni,ij,nj->n", G, self.cov, G))[None, :]
        return out

    def _log_mean_gradient(self, N: np.ndarray, X: np.ndarray, h: float = 1e-6) -> np.ndarray:
        """(n, k) numerical gradient of the log mean in the parameters at the estimate."""
        k = len(self.params)
        E = np.eye(k) * (h * np.maximum(1.0, np.abs(self.params)))[:, None]
        up = self._log_mean(self.params + E, N, X)
        dn = self._log_mean(self.params - E, N, X)
        return ((up - dn) / (2.0 * np.diag(E))[:, None]).T

    def log_predictive_density(
        self, n_rate_kg_ha: Any, n2o_n_kg_ha: Any, X: np.ndarray | pd.DataFrame | None = None
    ) -> np.ndarray:
        """Pointwise log density of emissions of a *new* site, log(kg N2O-N/ha)^-1 per record.

        Notes
        -----
        Plug-in log-normal predictive: ``log E ~ N(eta, s2_resid + z'Psi z)`` with ``eta`` the
        log median (without the smearing term) and ``z = (1)`` or ``(1, N)``; density of E on
        the original scale, ``log p(E) = log phi(log E; eta, v) - log E``. Fluxes <= 0 are
        evaluated at the fit's floor. Parameter uncertainty is ignored (it is small next to
        the site and residual variances with tens of sites).
        """
        N = _as_N(n_rate_kg_ha)
        y = np.asarray(n2o_n_kg_ha, dtype=float)
        floor = self.floor_kg_ha if np.isfinite(self.floor_kg_ha) else 1e-6
        y = np.where(y > 0, y, floor)
        Xa = (
            _as_X(X, len(N), self.n_covariates)
            if (X is not None or self.n_covariates == 0)
            else np.zeros((len(N), self.n_covariates))
        )
        P = self.params.copy()
        P[-1] = 0.0
        eta = self._log_mean(P[None, :], N, Xa)[0]
        psi = self.re_cov
        if self.family == "exponential_rs":
            eta = eta - (psi[0, 1] * N + 0.5 * psi[1, 1] * N**2)
            v = self.sigma2_resid + psi[0, 0] + 2 * psi[0, 1] * N + psi[1, 1] * N**2
        else:
            v = np.full(len(N), self.sigma2_resid + psi[0, 0])
        ly = np.log(y)
        return -0.5 * np.log(2 * np.pi * v) - 0.5 * (ly - eta) ** 2 / v - ly

    def standard_errors(self) -> np.ndarray:
        """Square roots of the diagonal of :attr:`cov`."""
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    def confidence_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Normal (t-widened covariance) intervals of the parameters, one row per parameter."""
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2.0))
        se = self.standard_errors()
        return pd.DataFrame(
            {
                "param": self.param_names,
                "estimate": self.params,
                "se": se,
                "low": self.params - z * se,
                "high": self.params + z * se,
            }
        )

    # -- plain dicts --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A plain-JSON dict of the fitted form (the fit stage can store it per crop)."""

        def num(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "family": self.family,
            "param_names": list(self.param_names),
            "params": [float(v) for v in self.params],
            "cov": [[float(v) for v in row] for row in self.cov],
            "sigma2_resid": float(self.sigma2_resid),
            "re_cov": [[float(v) for v in row] for row in self.re_cov],
            "retransform": self.retransform,
            "smearing": float(self.smearing),
            "n_records": int(self.n_records),
            "n_sites": int(self.n_sites),
            "n_floored": int(self.n_floored),
            "floor_kg_ha": num(self.floor_kg_ha),
            "deviance": num(self.deviance),
            "covariate_names": list(self.covariate_names),
            "notes": list(self.notes),
            "optimum": [float(v) for v in self.optimum],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FittedForm:
        """Rebuild a form written by :meth:`to_json`."""
        d = dict(d)
        for key in ("floor_kg_ha", "deviance"):
            d[key] = float("nan") if d.get(key) is None else float(d[key])
        try:
            return cls(**d)
        except TypeError as e:
            raise ModelError(f"N-response form JSON is malformed ({e}). Fix: re-run the fit") from None


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------
def _cluster_var_log_smearing(ratio: np.ndarray, codes: np.ndarray) -> float:
    """Site-cluster sandwich variance of log(mean ratio) (delta method), as the fit stage does."""
    n = len(ratio)
    G = int(codes.max()) + 1
    s = float(np.mean(ratio))
    sums = np.bincount(codes, weights=ratio - s, minlength=G)
    return G / max(G - 1, 1) * float(np.sum(sums**2)) / n**2 / s**2


def fit_family(
    family: str,
    n_rate_kg_ha: Any,
    n2o_n_kg_ha: Any,
    groups: Any,
    X: np.ndarray | pd.DataFrame | None = None,
    *,
    covariate_names: Sequence[str] | None = None,
    retransform: str = "duan",
    floor_kg_ha: float | None = None,
    init: FittedForm | None = None,
) -> FittedForm:
    """Fit one candidate N-response form with site random effects.

    Parameters
    ----------
    family
        One of :data:`FAMILIES`.
    n_rate_kg_ha
        N rate of each record, kg N/ha (>= 0), shape (n,).
    n2o_n_kg_ha
        Emission of each record, kg N2O-N/ha per period (>= 0; zeros are floored).
    groups
        Site (or study) label of each record; the random effects are per group.
    X
        Optional (n, p) covariate design (numeric, e.g. centred soil and climate variables or
        0/1 indicators); its effects are multiplicative, ``exp(gamma'x)``.
    covariate_names
        Names of the X columns (default: DataFrame columns or ``x0, x1, ...``).
    retransform
        ``"duan"`` (smearing of marginal residuals) or ``"lognormal"`` (``exp(s2/2)``);
        ``exponential_rs`` always uses ``"lognormal"``.
    floor_kg_ha
        Value that replaces fluxes <= 0 (default: half the smallest positive flux).
    init
        A fit of the same family (e.g. on all records) whose optimum starts the optimiser;
        cross-validation folds use it.

    Returns
    -------
    FittedForm

    Raises
    ------
    ModelError
        Too few sites or N levels for the form, bad inputs, or no valid optimum.

    Notes
    -----
    ``log E_ij = log f(N_ij) + gamma'x_ij + u_i + e_ij`` (module docstring); profiled REML of
    the variance parameters jointly with the nonlinear N-parameters; Gauss-Newton covariance
    ``s2 (J'V^-1 J)^-1`` scaled by ``(t(0.975, G-1)/1.96)^2``; ``log s`` appended with the
    cluster sandwich variance ``G/(G-1) sum_g (sum_j (r_j - s))^2 / (n s)^2``, ``r_j`` the
    exponentiated marginal residuals (Duan 1983).
    """
    if family not in FAMILIES:
        raise ModelError(f"unknown N-response family {family!r}. Fix: use one of {', '.join(FAMILIES)}")
    if retransform not in ("duan", "lognormal"):
        raise ModelError(f"retransform {retransform!r} is unknown. Fix: use 'duan' or 'lognormal'")
    N = _as_N(n_rate_kg_ha)
    y = np.asarray(n2o_n_kg_ha, dtype=float)
    n = len(N)
    if y.shape != (n,) or not np.all(np.isfinite(y)):
        raise ModelError(
            f"{family}: emissions must be finite, one per N rate ({y.shape} vs {n}). Fix: correct the records"
        )
    if (y < 0).any():
        raise ModelError(
            f"{family}: {int((y < 0).sum())} negative emissions. Fix: decide the non-positive flux "
            "rule before fitting (e.g. floor them)"
        )
    if isinstance(X, pd.DataFrame) and covariate_names is None:
        covariate_names = [str(c) for c in X.columns]
    Xa = _as_X(X, n)
    names_x = list(covariate_names) if covariate_names is not None else [f"x{j}" for j in range(Xa.shape[1])]
    if len(names_x) != Xa.shape[1]:
        raise ModelError(f"{len(names_x)} covariate names for {Xa.shape[1]} columns. Fix: name every column")
    codes, uniq = pd.factorize(pd.Series(np.asarray(groups)).astype(str), sort=True)
    if len(codes) != n:
        raise ModelError(f"{family}: {len(codes)} group labels for {n} records. Fix: one site label per record")
    G = len(uniq)
    if G < 3:
        raise ModelError(f"{family}: {G} site(s); random site effects need at least 3. Fix: add sites or pool crops")
    if len(np.unique(N)) < _MIN_LEVELS[family]:
        raise ModelError(
            f"{family}: {len(np.unique(N))} distinct N rates; the form needs {_MIN_LEVELS[family]}. "
            "Fix: add records at other N rates (including zero-N controls)"
        )
    pos = y > 0
    if not pos.any():
        raise ModelError(f"{family}: no positive emission. Fix: check the flux units")
    floor = float(floor_kg_ha) if floor_kg_ha is not None else 0.5 * float(y[pos].min())
    y_fit = np.where(pos, y, floor)
    notes: list[str] = []
    if (~pos).any():
        notes.append(f"{int((~pos).sum())} records with flux <= 0 floored at {floor:.4g} kg N2O-N/ha")

    order = np.argsort(codes, kind="stable")
    codes_s = codes[order]
    starts = np.flatnonzero(np.r_[True, codes_s[1:] != codes_s[:-1]])
    t = N[order] / _NS
    Xs = Xa[order]
    ly = np.log(y_fit[order])
    ones = np.ones((n, 1))

    # fixed linear design, random design and nonlinear offset of each family
    if family in ("exponential", "exponential_rs"):
        D = np.column_stack([ones, t, Xs])
    elif family == "quadratic":
        D = np.column_stack([ones, t, t**2, Xs])
    else:
        D = np.column_stack([ones, Xs])
    Z = np.column_stack([ones, t]) if family == "exponential_rs" else ones
    if np.linalg.matrix_rank(D) < D.shape[1]:
        raise ModelError(f"{family}: the fixed-effect design is collinear. Fix: drop a covariate")
    lmm = _LMM(D, Z, starts)
    n_phi = {"linear": 1, "saturating": 2}.get(family, 0)
    n_theta = 3 if family == "exponential_rs" else 1

    def offset(phi: np.ndarray) -> np.ndarray:
        if family == "linear":
            return np.log1p(phi[0] * t)
        if family == "saturating":
            return np.log1p(phi[0] * t * _phi(phi[1] * t))
        return np.zeros(n)

    def objective(z: np.ndarray) -> float:
        phi, theta = z[:n_phi], z[n_phi:]
        val, _ = lmm.criterion(theta, ly - offset(phi))
        return val if np.isfinite(val) else 1e300

    theta_bounds = [(0.0, 20.0)] if n_theta == 1 else [(0.0, 20.0), (-20.0, 20.0), (0.0, 20.0)]
    phi_bounds = {"linear": [(0.0, 200.0)], "saturating": [(0.0, 200.0), (0.0, 20.0)]}.get(family, [])
    bounds = phi_bounds + theta_bounds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if init is not None and init.family == family and len(init.optimum) == n_phi + n_theta:
            z0 = np.clip(np.asarray(init.optimum, dtype=float), [b[0] for b in bounds], [b[1] for b in bounds])
        elif n_phi == 0:
            z0 = np.array([1.0] if n_theta == 1 else [1.0, 0.0, 0.3])
        else:  # coarse grid of the nonlinear N-parameters at a unit variance ratio
            grid = (
                [[r] for r in (0.1, 0.3, 1.0, 3.0, 10.0)]
                if family == "linear"
                else [[r, k] for r in (0.3, 1.0, 3.0, 10.0) for k in (0.0, 0.3, 1.0, 3.0)]
            )
            z0 = np.array([*min(grid, key=lambda ps: objective(np.array([*ps, 1.0]))), 1.0])
        if n_phi == 0 and n_theta == 1:  # one variance ratio only: bounded Brent
            r1 = optimize.minimize_scalar(
                lambda v: objective(np.array([v])), bounds=theta_bounds[0], method="bounded", options={"xatol": 1e-6}
            )
            best = optimize.OptimizeResult(x=np.array([r1.x]), fun=r1.fun)
            at0 = objective(np.array([0.0]))
            if at0 < best.fun:  # site variance on the boundary
                best = optimize.OptimizeResult(x=np.array([0.0]), fun=at0)
        else:
            # SLSQP: same optimum as L-BFGS-B on these smooth bounded problems, several times faster
            best = optimize.minimize(objective, z0, method="SLSQP", bounds=bounds, options={"maxiter": 500})
    if best is None or not np.isfinite(best.fun) or best.fun >= 1e299:
        raise ModelError(
            f"{family}: the mixed-model likelihood has no valid optimum. Fix: check the records, "
            "or drop this form from the candidates"
        )
    phi, theta = best.x[:n_phi], best.x[n_phi:]
    val, est = lmm.criterion(theta, ly - offset(phi))
    sigma2 = float(est["sigma2"])
    beta = est["beta"]
    L = lmm.L(theta)
    psi_int = sigma2 * (L @ L.T)

    # parameters in internal units: [a, N-params, gamma]
    if n_phi:
        theta_int = np.r_[beta[0], phi, beta[1:]]
        if family == "linear":
            dphi = (t / (1.0 + phi[0] * t))[:, None]
        else:
            g = t * _phi(phi[1] * t)
            den = 1.0 + phi[0] * g
            dr = g / den
            dk = phi[0] * t * t * _dphi(phi[1] * t) / den
            dphi = np.column_stack([dr, dk])
        J = np.column_stack([ones, dphi, Xs])
        at_bound = [i for i, (v, (lo, hi)) in enumerate(zip(phi, phi_bounds)) if v <= lo + 1e-8]
        for i in at_bound:
            notes.append(f"{_N_PARAMS[family][i]} at its lower bound 0 (the form reduces to a simpler one)")
    else:
        theta_int = beta
        J = D
    info = lmm.gls_information(J, est["P"])
    try:
        cov_int = sigma2 * np.linalg.inv(info)
    except np.linalg.LinAlgError:
        raise ModelError(
            f"{family}: the parameter information matrix is singular. Fix: drop this form "
            "or add records at other N rates"
        ) from None
    # to user units (per kg N/ha)
    scale = np.r_[1.0, [_NS**-pw for pw in _N_POWER[family]], np.ones(Xs.shape[1])]
    params = theta_int * scale
    cov = cov_int * np.outer(scale, scale)
    re_cov = psi_int if family != "exponential_rs" else psi_int * np.outer([1.0, 1 / _NS], [1.0, 1 / _NS])

    # retransformation
    eta = lmm.D @ beta + offset(phi)  # marginal log median of each fitting record
    ratio = np.exp(ly - eta)
    var_ls = _cluster_var_log_smearing(ratio, codes_s)
    if family == "exponential_rs":
        rt = "lognormal"
        log_s = 0.5 * (sigma2 + re_cov[0, 0])
        if retransform == "duan":
            notes.append("exponential_rs uses the log-normal retransformation exp((s2_resid + z'Psi z)/2)")
    elif retransform == "duan":
        rt = "duan"
        log_s = float(np.log(np.mean(ratio)))
    else:
        rt = "lognormal"
        log_s = 0.5 * (sigma2 + re_cov[0, 0])
    k = len(params) + 1
    cov_full = np.zeros((k, k))
    cov_full[:-1, :-1] = cov
    cov_full[-1, -1] = var_ls
    widen = (float(student_t.ppf(0.975, max(G - 1, 1))) / Z95) ** 2
    cov_full *= widen
    notes.append(f"covariance scaled by (t(0.975, {G - 1}) / z(0.975))^2 for {G} sites")
    if not np.all(np.isfinite(cov_full)):
        raise ModelError(f"{family}: the parameter covariance is not finite. Fix: drop this form or add records")
    return FittedForm(
        family=family,
        param_names=["intercept", *_N_PARAMS[family], *names_x, LOG_SMEARING],
        params=np.r_[params, log_s],
        cov=cov_full,
        sigma2_resid=sigma2,
        re_cov=re_cov,
        retransform=rt,
        smearing=float(np.exp(log_s)),
        n_records=n,
        n_sites=G,
        n_floored=int((~pos).sum()),
        floor_kg_ha=floor,
        deviance=float(val),
        optimum=[float(v) for v in best.x],
        covariate_names=names_x,
        notes=notes,
    )


def _frame_arrays(
    data: pd.DataFrame, n_col: str, y_col: str, site_col: str, covariates: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    for col in (n_col, y_col, site_col, *covariates):
        if col not in data.columns:
            raise ModelError(f"column '{col}' is missing from the records. Fix: add it or name the right column")
    X = data[list(covariates)].to_numpy(dtype=float) if covariates else None
    return (
        data[n_col].to_numpy(dtype=float),
        data[y_col].to_numpy(dtype=float),
        data[site_col].astype(str).to_numpy(),
        X,
    )


def fit_families(
    data: pd.DataFrame,
    families: Sequence[str] = FAMILIES,
    *,
    n_col: str = "n_rate_kg_ha",
    y_col: str = "n2o_n_kg_ha",
    site_col: str = "site_id",
    covariates: Sequence[str] = (),
    retransform: str = "duan",
    floor_kg_ha: float | None = None,
) -> tuple[dict[str, FittedForm], dict[str, str]]:
    """Fit every family to a table of records; returns (fitted forms, failure message per family)."""
    N, y, g, X = _frame_arrays(data, n_col, y_col, site_col, covariates)
    fits: dict[str, FittedForm] = {}
    failed: dict[str, str] = {}
    for fam in families:
        try:
            fits[fam] = fit_family(
                fam,
                N,
                y,
                g,
                X,
                covariate_names=list(covariates) or None,
                retransform=retransform,
                floor_kg_ha=floor_kg_ha,
            )
        except ModelError as e:
            failed[fam] = str(e)
    return fits, failed


# ---------------------------------------------------------------------------------------------
# Leave-site-out cross-validation
# ---------------------------------------------------------------------------------------------
@dataclass
class CVResult:
    """Leave-site-out predictions and scores of several forms.

    Attributes
    ----------
    families
        Families scored (column order of :attr:`lpd`).
    folds
        Fold index of each record (a site is in one fold only).
    predictions
        One row per record: ``site``, ``fold``, observed ``n2o_n_kg_ha`` and one plug-in
        predicted mean column per family (kg N2O-N/ha; NaN where that fold failed).
    lpd
        (n_records, n_families) pointwise log predictive density of the held-out records.
    scores
        One row per family: ``rmse_kg_ha``, ``bias_kg_ha`` (mean predicted - observed),
        ``rel_bias`` (sum predicted / sum observed - 1), ``mlpd`` (mean log predictive
        density), ``elpd`` (sum), ``elpd_se``, ``n_scored``, ``n_failed_folds``.
    failures
        Failure messages, by family, of folds that could not be fitted.
    """

    families: list[str]
    folds: np.ndarray
    predictions: pd.DataFrame
    lpd: np.ndarray
    scores: pd.DataFrame
    failures: dict[str, list[str]] = field(default_factory=dict)


def site_folds(sites: Any, n_folds: int | None = None, seed: int = 0) -> np.ndarray:
    """Fold index per record: one fold per site (``n_folds=None``, leave-one-site-out) or sites
    shuffled into ``n_folds`` folds of (nearly) equal numbers of sites."""
    codes, uniq = pd.factorize(pd.Series(np.asarray(sites)).astype(str), sort=True)
    G = len(uniq)
    if n_folds is None or n_folds >= G:
        return codes.astype(int)
    if n_folds < 2:
        raise ModelError("cross-validation needs at least 2 folds. Fix: set n_folds >= 2 or None (leave-one-site-out)")
    perm = np.random.default_rng(seed).permutation(G)
    site_fold = np.empty(G, dtype=int)
    site_fold[perm] = np.arange(G) % n_folds
    return site_fold[codes]


def leave_site_out_cv(
    data: pd.DataFrame,
    families: Sequence[str] = FAMILIES,
    *,
    n_col: str = "n_rate_kg_ha",
    y_col: str = "n2o_n_kg_ha",
    site_col: str = "site_id",
    covariates: Sequence[str] = (),
    n_folds: int | None = None,
    seed: int = 0,
    retransform: str = "duan",
    floor_kg_ha: float | None = None,
) -> CVResult:
    """Leave-site-out (or K-fold by site) predictions and scores for every family.

    Parameters
    ----------
    data
        Records with N rate (``n_col``, kg N/ha), emission (``y_col``, kg N2O-N/ha per period),
        site label (``site_col``) and numeric covariate columns.
    families
        Candidate forms (:data:`FAMILIES`).
    n_folds, seed
        ``None``: one fold per site; otherwise sites are shuffled (``seed``) into that many folds.
    retransform, floor_kg_ha
        Passed to :func:`fit_family`. The floor is set once from all records so that every fold
        uses the same one.

    Returns
    -------
    CVResult

    Notes
    -----
    Each held-out site is predicted as a new site (site effect unknown): the plug-in mean
    :meth:`FittedForm.predict_mean` for RMSE and bias (original scale, against the unfloored
    flux), and the log-normal predictive density :meth:`FittedForm.log_predictive_density` for
    the mean log predictive density and stacking. ``elpd_se = sqrt(n) sd(lpd_i)``.
    """
    N, y, g, X = _frame_arrays(data, n_col, y_col, site_col, covariates)
    if floor_kg_ha is None and (y > 0).any():
        floor_kg_ha = 0.5 * float(y[y > 0].min())
    folds = site_folds(g, n_folds, seed)
    n = len(N)
    fams = list(families)
    pred = np.full((n, len(fams)), np.nan)
    lpd = np.full((n, len(fams)), np.nan)
    failures: dict[str, list[str]] = {}
    failed_folds = np.zeros(len(fams), dtype=int)
    full: dict[str, FittedForm] = {}
    for fam in fams:  # fits on all records warm-start the folds
        try:
            full[fam] = fit_family(
                fam,
                N,
                y,
                g,
                X,
                covariate_names=list(covariates) or None,
                retransform=retransform,
                floor_kg_ha=floor_kg_ha,
            )
        except ModelError:
            pass
    for f in np.unique(folds):
        te = folds == f
        tr = ~te
        Xtr = X[tr] if X is not None else None
        Xte = X[te] if X is not None else None
        for j, fam in enumerate(fams):
            try:
                fit = fit_family(
                    fam,
                    N[tr],
                    y[tr],
                    g[tr],
                    Xtr,
                    covariate_names=list(covariates) or None,
                    retransform=retransform,
                    floor_kg_ha=floor_kg_ha,
                    init=full.get(fam),
                )
            except ModelError as e:
                failures.setdefault(fam, []).append(f"fold {f}: {e}")
                failed_folds[j] += 1
                continue
            pred[te, j] = fit.predict_mean(N[te], Xte)
            lpd[te, j] = fit.log_predictive_density(N[te], y[te], Xte)
    rows = []
    for j, fam in enumerate(fams):
        ok = np.isfinite(pred[:, j])
        err = pred[ok, j] - y[ok]
        lp = lpd[ok, j]
        rows.append(
            {
                "family": fam,
                "rmse_kg_ha": float(np.sqrt(np.mean(err**2))) if ok.any() else np.nan,
                "bias_kg_ha": float(np.mean(err)) if ok.any() else np.nan,
                "rel_bias": float(pred[ok, j].sum() / y[ok].sum() - 1.0) if ok.any() else np.nan,
                "mlpd": float(np.mean(lp)) if ok.any() else np.nan,
                "elpd": float(np.sum(lp)) if ok.any() else np.nan,
                "elpd_se": float(np.sqrt(ok.sum()) * np.std(lp)) if ok.any() else np.nan,
                "n_scored": int(ok.sum()),
                "n_failed_folds": int(failed_folds[j]),
            }
        )
    predictions = pd.DataFrame({"site": g, "fold": folds, "n_rate_kg_ha": N, "n2o_n_kg_ha": y})
    for j, fam in enumerate(fams):
        predictions[f"pred_{fam}"] = pred[:, j]
    return CVResult(
        families=fams,
        folds=folds,
        predictions=predictions,
        lpd=lpd,
        scores=pd.DataFrame(rows).set_index("family"),
        failures=failures,
    )


# ---------------------------------------------------------------------------------------------
# Stacking
# ---------------------------------------------------------------------------------------------
@dataclass
class StackingResult:
    """Weights of the candidate forms and why.

    Attributes
    ----------
    weights
        Family -> weight (non-negative, summing to 1).
    method
        ``"stacking"``, ``"pseudo_bma"`` or ``"pseudo_bma_plus"``.
    reason
        One-paragraph text for the fit report.
    objective
        Stacking: the maximised ``sum_i log sum_k w_k p_k(y_i)``; pseudo-BMA: the elpd of each
        family (dict).
    n_used
        Records (rows) used; rows with a missing density in any family are dropped.
    """

    weights: dict[str, float]
    method: str
    reason: str
    objective: Any
    n_used: int


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def stacking_weights(
    lpd: np.ndarray,
    families: Sequence[str] | None = None,
    *,
    method: str = "stacking",
    rng: np.random.Generator | None = None,
    n_bootstrap: int = 1000,
) -> StackingResult:
    """Weights of predictive distributions from their held-out log densities.

    Parameters
    ----------
    lpd
        (n, K) log predictive density of each held-out record under each family
        (:attr:`CVResult.lpd`).
    families
        Names of the K columns (default ``f0, f1, ...``).
    method
        ``"stacking"`` (default): maximise ``sum_i log sum_k w_k exp(lpd_ik)`` over the
        simplex (Yao et al. 2018, eq. 4), softmax parametrisation ``w = softmax(z)``, z_K = 0,
        BFGS with the analytic gradient; weights below 1e-8 are set to 0. ``"pseudo_bma"``: ``w_k ∝ exp(elpd_k)``
        (Akaike-type weights from the held-out elpd; nearly 0/1 with hundreds of records).
        ``"pseudo_bma_plus"``: the same regularised by the Bayesian bootstrap of the pointwise
        densities (Yao et al. 2018, section 3.4).
    rng, n_bootstrap
        Bayesian bootstrap for ``pseudo_bma_plus``.

    Returns
    -------
    StackingResult

    Notes
    -----
    Stacking optimises the combined predictive distribution, so two near-identical forms share
    weight and a form that is never best can still get weight when it covers records the others
    miss; pseudo-BMA weights each form by its own fit and concentrates on the best one when the
    truth is none of them (Yao et al. 2018, sections 2-3).
    """
    L = np.asarray(lpd, dtype=float)
    if L.ndim != 2 or L.shape[1] == 0:
        raise ModelError("stacking needs an (n_records, n_families) array of log densities")
    K = L.shape[1]
    names = list(families) if families is not None else [f"f{k}" for k in range(K)]
    if len(names) != K:
        raise ModelError(f"{len(names)} family names for {K} columns of log densities")
    ok_cols = np.isfinite(L).mean(axis=0) > 0.5
    dropped_cols = [names[k] for k in range(K) if not ok_cols[k]]
    L = L[:, ok_cols]
    kept = [names[k] for k in range(K) if ok_cols[k]]
    rows = np.all(np.isfinite(L), axis=1)
    L = L[rows]
    n = L.shape[0]
    if n == 0 or not kept:
        raise ModelError(
            "no record has a finite held-out density under the candidate forms. Fix: check the CV failures"
        )
    Kk = L.shape[1]
    elpd = L.sum(axis=0)
    if method == "stacking":
        m = L.max(axis=1, keepdims=True)
        P = np.exp(L - m)  # scaled densities

        def f(z: np.ndarray) -> tuple[float, np.ndarray]:
            w = _softmax(np.r_[z, 0.0])
            mix = P @ w
            val = -float(np.sum(np.log(mix)))
            gw = -(P / mix[:, None]).sum(axis=0)  # d(-obj)/dw
            gz = w * (gw - gw @ w)  # softmax chain rule
            return val, gz[:-1]

        best = None
        for z0 in (np.zeros(Kk - 1), np.r_[elpd[:-1] - elpd[-1]].clip(-20, 20) / max(n, 1)) if Kk > 1 else ():
            res = optimize.minimize(f, z0, jac=True, method="BFGS")
            if best is None or res.fun < best.fun:
                best = res
        if best is None:  # a single form
            best = optimize.OptimizeResult(x=np.zeros(0), fun=f(np.zeros(0))[0])
        w = _softmax(np.r_[best.x, 0.0])
        w[w < 1e-8] = 0.0
        w /= w.sum()
        objective: Any = float(-best.fun + m.sum())
        what = (
            f"stacking of leave-site-out predictive densities (Yao et al. 2018): maximised "
            f"sum_i log sum_k w_k p_k(y_i) = {objective:.2f} over {n} held-out records"
        )
    elif method in ("pseudo_bma", "pseudo_bma_plus"):
        if method == "pseudo_bma":
            w = _softmax(elpd)
        else:
            rng = rng if rng is not None else np.random.default_rng(0)
            B = rng.dirichlet(np.ones(n), size=n_bootstrap)  # (B, n)
            e_b = n * (B @ L)  # (B, K)
            w = np.mean([_softmax(row) for row in e_b], axis=0)
        objective = {k: float(v) for k, v in zip(kept, elpd)}
        what = (
            f"{'pseudo-BMA+' if method == 'pseudo_bma_plus' else 'pseudo-BMA'} weights "
            f"exp(elpd_k) normalised over {n} held-out records"
        )
    else:
        raise ModelError(f"weighting method {method!r} is unknown. Fix: use stacking, pseudo_bma or pseudo_bma_plus")
    weights = {name: 0.0 for name in names}
    for name, v in zip(kept, w):
        weights[name] = float(v)
    ranked = sorted(weights.items(), key=lambda kv: -kv[1])
    mlpd = {k: float(v) / n for k, v in zip(kept, elpd)}
    reason = (
        what
        + "; weights "
        + ", ".join(f"{k} {v:.3f}" for k, v in ranked)
        + "; mean log predictive density "
        + ", ".join(f"{k} {mlpd[k]:.3f}" for k in kept)
    )
    if dropped_cols:
        reason += "; no weight (most folds failed): " + ", ".join(dropped_cols)
    if (~rows).any():
        reason += f"; {int((~rows).sum())} records without a density in some form left out"
    return StackingResult(weights=weights, method=method, reason=reason, objective=objective, n_used=n)


# ---------------------------------------------------------------------------------------------
# Model average
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelAverage:
    """A weighted mixture of fitted forms for the Monte Carlo.

    Attributes
    ----------
    forms
        Family -> :class:`FittedForm`.
    weights
        Family -> weight; families with weight 0 or without a fitted form are ignored and
        the rest renormalised.
    reason
        Where the weights came from (:attr:`StackingResult.reason`).

    Notes
    -----
    Central estimate (plug-in): ``E_hat(N, x) = sum_k w_k E_hat_k(N, x)``. Monte Carlo
    iteration m: family ``k_m ~ Categorical(w)`` then ``theta_m ~ N(theta_hat_k, Sigma_k)`` and
    ``E_m(N, x) = E_k(N, x; theta_m)``; the draws give the interval, which thus carries
    model-form and parameter uncertainty. Because all rows of one iteration share the family and
    the parameters, totals and trend slopes over rows (years, regions) are consistent.
    """

    forms: dict[str, FittedForm]
    weights: dict[str, float]
    reason: str = ""

    def __post_init__(self) -> None:
        w = {k: float(v) for k, v in self.weights.items() if k in self.forms and v > 0}
        tot = sum(w.values())
        if not w or not np.isfinite(tot) or tot <= 0:
            raise ModelError("model average has no form with positive weight. Fix: fit at least one candidate form")
        self.weights = {k: v / tot for k, v in w.items()}

    @property
    def families(self) -> list[str]:
        """Families with positive weight."""
        return list(self.weights)

    def predict_mean(self, n_rate_kg_ha: Any, X: np.ndarray | pd.DataFrame | None = None) -> np.ndarray:
        """Plug-in central estimate, kg N2O-N/ha per period: ``sum_k w_k E_hat_k(N, x)``."""
        parts = [w * self.forms[k].predict_mean(n_rate_kg_ha, X) for k, w in self.weights.items()]
        return np.sum(parts, axis=0)

    def background(self, X: np.ndarray | pd.DataFrame | None = None, n: int | None = None) -> np.ndarray:
        """Weighted expected emission at N = 0, kg N2O-N/ha per period."""
        parts = [w * self.forms[k].background(X, n) for k, w in self.weights.items()]
        return np.sum(parts, axis=0)

    def draw_families(self, rng: np.random.Generator, n_draws: int, u: np.ndarray | None = None) -> np.ndarray:
        """Family name of each Monte Carlo iteration.

        ``rng.choice`` with the weights, or, given uniforms ``u`` (n_draws,), the inverse CDF of
        the weights at ``u``: passing the same ``u`` to the averages of several crops makes
        their form draws comonotone (all crops take their more convex forms together).
        """
        fams = np.array(self.families, dtype=object)
        w = np.array(list(self.weights.values()))
        if u is None:
            return fams[rng.choice(len(fams), size=n_draws, p=w)]
        u = np.asarray(u, dtype=float)
        if u.shape != (n_draws,):
            raise ModelError(f"u has shape {u.shape}, expected ({n_draws},). Fix: one uniform per iteration")
        return fams[np.minimum(np.searchsorted(np.cumsum(w), u, side="right"), len(fams) - 1)]

    def predict_draws(
        self,
        rng: np.random.Generator,
        n_draws: int,
        n_rate_kg_ha: Any,
        X: np.ndarray | pd.DataFrame | None = None,
        aggregate: np.ndarray | None = None,
        chunk: int = 250,
        u: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Monte Carlo draws of the expected emission with the form drawn per iteration.

        Parameters
        ----------
        rng, n_draws
            Generator and number of iterations.
        n_rate_kg_ha, X
            Rows to evaluate (kg N/ha; covariates as fitted).
        aggregate
            Optional (n_rows, m) matrix (e.g. sown area in ha of each row in each year or
            region); the draws are then ``E @ aggregate`` (kg N2O-N per aggregate) and memory
            stays (n_draws, m).
        chunk
            Draws evaluated at once.
        u
            Optional uniforms choosing the form of each iteration (:meth:`draw_families`).

        Returns
        -------
        families, draws
            (n_draws,) family of each iteration and (n_draws, n_rows) or (n_draws, m) draws.
        """
        N = _as_N(n_rate_kg_ha)
        fam = self.draw_families(rng, n_draws, u)
        m = N.size if aggregate is None else np.asarray(aggregate).shape[1]
        out = np.empty((n_draws, m))
        for k in self.families:
            idx = np.flatnonzero(fam == k)
            if idx.size == 0:
                continue
            P = self.forms[k].draw_params(rng, idx.size)
            for s in range(0, idx.size, chunk):
                E = self.forms[k].predict_draws(P[s : s + chunk], N, X)
                out[idx[s : s + chunk]] = E if aggregate is None else E @ aggregate
        return fam, out

    def contributions(self, families_drawn: np.ndarray) -> dict[str, float]:
        """Share of Monte Carlo iterations per family (for the estimate and trend reports)."""
        fam = np.asarray(families_drawn)
        return {k: float(np.mean(fam == k)) for k in self.families}

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON dict: weights, reason and every form with positive weight."""
        return {
            "weights": dict(self.weights),
            "reason": self.reason,
            "forms": {k: self.forms[k].to_json() for k in self.families},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelAverage:
        """Rebuild from :meth:`to_json`."""
        if not isinstance(d, dict) or "forms" not in d or "weights" not in d:
            raise ModelError("model-average JSON lacks 'forms' or 'weights'. Fix: re-run the fit")
        return cls(
            forms={k: FittedForm.from_json(v) for k, v in d["forms"].items()},
            weights={k: float(v) for k, v in d["weights"].items()},
            reason=str(d.get("reason", "")),
        )


def fit_model_average(
    data: pd.DataFrame,
    families: Sequence[str] = FAMILIES,
    *,
    n_col: str = "n_rate_kg_ha",
    y_col: str = "n2o_n_kg_ha",
    site_col: str = "site_id",
    covariates: Sequence[str] = (),
    n_folds: int | None = None,
    seed: int = 0,
    method: str = "stacking",
    retransform: str = "duan",
) -> tuple[ModelAverage, CVResult, StackingResult]:
    """CV by site, weights, and the forms refitted on all records, in one call.

    Returns
    -------
    average, cv, stacking
        The :class:`ModelAverage` (forms fitted on all records, stacking weights), the CV
        table and the weighting result with its reason text.
    """
    cv = leave_site_out_cv(
        data,
        families,
        n_col=n_col,
        y_col=y_col,
        site_col=site_col,
        covariates=covariates,
        n_folds=n_folds,
        seed=seed,
        retransform=retransform,
    )
    st = stacking_weights(cv.lpd, cv.families, method=method)
    fits, failed = fit_families(
        data,
        [f for f in cv.families if st.weights.get(f, 0) > 0],
        n_col=n_col,
        y_col=y_col,
        site_col=site_col,
        covariates=covariates,
        retransform=retransform,
    )
    reason = st.reason + (
        "; failed on all records: " + "; ".join(f"{k}: {v}" for k, v in failed.items()) if failed else ""
    )
    return ModelAverage(forms=fits, weights=st.weights, reason=reason), cv, st
