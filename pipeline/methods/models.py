"""Emission model objects shared by every stage: fitted exponential models and IPCC Tier 1.

A crop's model maps rows of activity or observation data to the expected direct N2O emission
in kg N2O-N/ha per season. :class:`CropModel` holds the data every family shares (coefficients,
covariance, centring, JSON); :class:`FittedModel` and :class:`Tier1Model` implement the
emission interface :class:`EmissionModel` (mean emission, background, parameter draws, the N
coefficient); the family names are :class:`Family`:

``glm_gamma``
    E[y] = exp(x'beta), fitted on the original scale (Gamma GLM, log link).
``mixed_lognormal``
    log y = x'beta + u_site + e, fitted by REML; the mean is exp(x'beta) times a
    retransformation factor (Duan smearing or exp((s2_site + s2_resid)/2)), because
    exp(E[log y]) is the median, not the mean.
``ipcc_tier1``
    E = N x EF, no background, EF by IPCC edition and (2019) disaggregation.
``model_average``
    A weighted mixture of candidate N-response forms (linear, exponential, quadratic,
    saturating, exponential with random N slopes; :mod:`pipeline.methods.response_forms`),
    weighted by stacking of leave-site-out predictive densities; every Monte Carlo draw takes
    one form and that form's parameters (:class:`AveragedModel`, issue 12).

An :class:`InventoryModel` holds one model per crop and serialises to plain JSON (no pickle).

References
----------
Stehfest, E. & Bouwman, L. (2006) N2O and NO emission from agricultural fields and soils under
natural vegetation. Nutrient Cycling in Agroecosystems 74:207-228.
Philibert, A., Loyce, C. & Makowski, D. (2012) Quantifying uncertainties in N2O emission due to
N fertilizer application in cultivated areas. PLoS ONE 7:e50950.
Duan, N. (1983) Smearing estimate: a nonparametric retransformation method. JASA 78:605-610.
IPCC (2006) Guidelines for National GHG Inventories, Vol. 4 Ch. 11, Table 11.1.
IPCC (2019) Refinement to the 2006 Guidelines, Vol. 4 Ch. 11, Table 11.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

import numpy as np
import pandas as pd

from pipeline.contract import CROPS
from pipeline.errors import ConfigError, ModelError
from pipeline.methods.response_forms import FittedForm, ModelAverage

log = logging.getLogger(__name__)


class Family(StrEnum):
    """Every model family, by the name written in model.json and the tables."""

    GLM_GAMMA = "glm_gamma"
    MIXED_LOGNORMAL = "mixed_lognormal"
    IPCC_TIER1 = "ipcc_tier1"
    MODEL_AVERAGE = "model_average"


#: Families fitted to observations (log-linear in their coefficients).
FITTED_FAMILIES: tuple[Family, ...] = (Family.GLM_GAMMA, Family.MIXED_LOGNORMAL)
FAMILIES: tuple[str, ...] = tuple(f.value for f in Family)


@dataclass(frozen=True)
class PreparedRows:
    """Rows as one crop's model evaluates them, built once by :meth:`CropModel.prepare`.

    A Monte Carlo task evaluates its rows four times (draws and plug-in, at N and at N = 0):
    preparing them once keeps the pandas work (column look-ups, categorical levels, the copy
    of the table at N = 0) to one pass per task instead of four, and every evaluation gives the
    same bits as from the table itself.

    Attributes
    ----------
    crop, family
        The model that prepared them (another crop's model refuses them).
    n_rate_kg_ha
        (n,) N rate, kg N/ha.
    design
        (n, p) what the family multiplies by its parameters: the design matrix (fitted), the EF
        selector (Tier 1) or the covariate design of the forms (model average).
    design_zero_n
        The design at N = 0, for the fitted families (``None`` where N is not in the design).
    """

    crop: str
    family: str
    n_rate_kg_ha: np.ndarray
    design: np.ndarray
    design_zero_n: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.n_rate_kg_ha)


#: What a model evaluates: a table of rows, or rows it has prepared (:class:`PreparedRows`).
Rows: TypeAlias = "pd.DataFrame | PreparedRows"


class EmissionModel(Protocol):
    """What the estimate, trend and fit stages need of a crop's emission model."""

    crop: str
    family: str
    coef: np.ndarray
    cov: np.ndarray
    coef_names: list[str]

    def prepare(self, X: Rows) -> PreparedRows: ...
    def mean_emission(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray: ...
    def background(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray: ...
    def draw_params(self, rng: np.random.Generator, n: int) -> np.ndarray: ...
    def n_coef_index(self) -> int | None: ...
    def to_json(self) -> dict[str, Any]: ...


#: Coefficient holding log(retransformation factor) of a mixed model; its design column is 1.
LOG_SMEARING = "log_smearing"
#: Quantile of the standard normal for a two-sided 95 % interval.
Z95 = 1.959963984540054

# Categorical columns a model may read, and the value assumed when X lacks the column.
_CATEGORICAL_DEFAULTS = {"fertilizer_type": "synthetic", "water_regime": "single_drainage"}


def _split_level(name: str) -> tuple[str, str] | None:
    """``"water_regime[continuous_flooding]"`` -> ``("water_regime", "continuous_flooding")``."""
    if name.endswith("]") and "[" in name:
        var, level = name[:-1].split("[", 1)
        return var, level
    return None


@dataclass
class CropModel:
    """The emission model of one crop class.

    Attributes
    ----------
    crop
        Crop class (one of :data:`pipeline.contract.CROPS`).
    family
        ``"glm_gamma"``, ``"mixed_lognormal"`` or ``"ipcc_tier1"``.
    terms
        Columns of X the model reads (``n_rate_kg_ha``, covariates, categorical columns).
    coef_names
        Name of each coefficient: ``intercept``, a numeric column, ``var[level]`` for an
        indicator, or an EF name for Tier 1.
    coef, cov
        Point estimates (k,) and their sampling covariance (k, k). Log scale for the fitted
        families (per unit of the column: kg N/ha, mm, degC, pH unit, g C/kg, %); the
        dimensionless EF (kg N2O-N per kg N) for Tier 1.
    center, fill
        Numeric covariates are used as ``x - center``; missing values in X are replaced by
        ``fill`` (the training median) before centring.
    reference, merged
        Reference level of each categorical column, and levels that had too few sites in the
        training data and are treated as the reference.
    defaults
        Value of a categorical column assumed when X lacks it (e.g. the rice water regime of
        activity rows, the crop of a pooled model).
    retransform, smearing
        How the log-scale prediction became a mean (``"none"``, ``"duan"``, ``"lognormal"``)
        and the multiplicative factor applied.
    sigma2_group, sigma2_resid, dispersion
        Variance components (mixed model, log scale) or Gamma dispersion (GLM).
    ranges
        Tier 1 only: the IPCC uncertainty range (low, high) of each EF.
    """

    crop: str
    family: str
    terms: list[str]
    coef_names: list[str]
    coef: np.ndarray
    cov: np.ndarray
    center: dict[str, float] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)
    merged: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    retransform: str = "none"
    smearing: float = 1.0
    sigma2_group: float = float("nan")
    sigma2_resid: float = float("nan")
    dispersion: float = float("nan")
    n_records: int = 0
    n_groups: int = 0
    pooled_with: list[str] = field(default_factory=list)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    tier1_rule: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ModelError(
                f"unknown model family {self.family!r} for crop {self.crop}. Fix: use one of {', '.join(FAMILIES)}"
            )
        self.coef = np.asarray(self.coef, dtype=float)
        self.cov = np.asarray(self.cov, dtype=float).reshape(len(self.coef), len(self.coef))
        if len(self.coef_names) != len(self.coef):
            raise ModelError(
                f"crop {self.crop}: {len(self.coef_names)} coefficient names for "
                f"{len(self.coef)} coefficients. Fix: re-fit or repair model.json"
            )

    # ------------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of coefficients."""
        return len(self.coef)

    def _categorical(self, X: pd.DataFrame, var: str, n: int) -> np.ndarray:
        default = self.defaults.get(var, _CATEGORICAL_DEFAULTS.get(var, self.crop if var == "crop" else None))
        if var in X.columns:
            s = X[var].astype(object).to_numpy()
            missing = pd.isna(s)
            if missing.any():
                if default is None:
                    raise ModelError(
                        f"crop {self.crop}: column '{var}' has missing values and no "
                        "default. Fix: fill it in the activity or observation table"
                    )
                s = np.where(missing, default, s)
            return s.astype(str)
        if default is None:
            raise ModelError(
                f"crop {self.crop}: the model reads column '{var}', which X lacks. "
                f"Fix: add '{var}' to the table passed to the model"
            )
        return np.full(n, default, dtype=object).astype(str)

    def design(self, X: pd.DataFrame, unseen: str = "error") -> np.ndarray:
        """The (n, k) design matrix of X for this model's coefficients.

        Parameters
        ----------
        X
            Rows to evaluate; must hold the numeric columns in :attr:`terms` (missing cells
            take the training median) and may omit categorical ones that have a default.
        unseen
            ``"error"`` raises :class:`ModelError` for a categorical level the model has
            never seen; ``"reference"`` treats it as the reference level (used only to score
            held-out folds in cross-validation).
        """
        n = len(X)
        D = np.empty((n, self.k), dtype=float)
        cats: dict[str, np.ndarray] = {}
        for var, ref in self.reference.items():
            values = self._categorical(X, var, n)
            known = {
                ref,
                *self.merged.get(var, []),
                *(lv for v, lv in filter(None, map(_split_level, self.coef_names)) if v == var),
            }
            bad = ~np.isin(values, sorted(known))
            if bad.any():
                if unseen == "error":
                    raise ModelError(
                        f"crop {self.crop}: level '{values[bad][0]}' of '{var}' was not in the "
                        f"data the model was fitted on (known: {', '.join(sorted(known))}). "
                        "Fix: recode it, or add observations of that level and re-fit"
                    )
                values = np.where(bad, ref, values)
            cats[var] = values
        for j, name in enumerate(self.coef_names):
            split = _split_level(name)
            if name in ("intercept", LOG_SMEARING):
                D[:, j] = 1.0
            elif split is not None:
                var, level = split
                D[:, j] = cats[var] == level
            else:
                if name not in X.columns:
                    if name in self.fill:
                        D[:, j] = self.fill[name] - self.center.get(name, 0.0)
                        continue
                    raise ModelError(
                        f"crop {self.crop}: the model reads column '{name}', which X "
                        f"lacks. Fix: add '{name}' to the table passed to the model"
                    )
                x = pd.to_numeric(X[name], errors="coerce").to_numpy(dtype=float)
                if name in self.fill:
                    x = np.where(np.isnan(x), self.fill[name], x)
                elif np.isnan(x).any():
                    raise ModelError(
                        f"crop {self.crop}: column '{name}' has missing values. "
                        "Fix: fill them before applying the model"
                    )
                D[:, j] = x - self.center.get(name, 0.0)
        return D

    def _linear(self, D: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        if params is None:
            return D @ self.coef
        P = np.atleast_2d(np.asarray(params, dtype=float))
        if P.shape[1] != self.k:
            raise ModelError(
                f"crop {self.crop}: params have {P.shape[1]} columns, the model has "
                f"{self.k} coefficients. Fix: draw them with draw_params()"
            )
        return P @ D.T

    # The emission interface (:class:`EmissionModel`), implemented by each family's class.
    def prepare(self, X: Rows) -> PreparedRows:
        """``X`` as this model evaluates it (:class:`PreparedRows`); rows it prepared already
        are returned as they are."""
        if isinstance(X, PreparedRows):
            if (X.crop, X.family) != (self.crop, self.family):
                raise ModelError(
                    f"rows prepared by the {X.crop} {X.family} model were passed to the {self.crop} "
                    f"{self.family} model. Fix: prepare them with this crop's model"
                )
            return X
        return self._prepare(X)

    def _prepare(self, X: pd.DataFrame) -> PreparedRows:
        raise NotImplementedError(f"{type(self).__name__} has no emission form; use FittedModel or Tier1Model")

    def _n_rate(self, X: pd.DataFrame) -> np.ndarray:
        if "n_rate_kg_ha" not in X.columns:
            raise ModelError("the table passed to the model has no 'n_rate_kg_ha' column. Fix: add it")
        return pd.to_numeric(X["n_rate_kg_ha"], errors="coerce").to_numpy(dtype=float)

    def mean_emission(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Expected emission, kg N2O-N/ha per season (see the subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} has no emission form; use FittedModel or Tier1Model")

    def background(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Emission at N = 0, kg N2O-N/ha per season (see the subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} has no emission form; use FittedModel or Tier1Model")

    def draw_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Parameter draws, shape (n, k) (see the subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} has no parameter distribution")

    def n_coef_index(self) -> int | None:
        """Index of the N-rate coefficient in a log-linear model, None otherwise."""
        raise NotImplementedError(type(self).__name__)

    def standard_errors(self) -> np.ndarray:
        """Square roots of the diagonal of :attr:`cov`."""
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    # ------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A plain-JSON dict of the model."""
        return {
            "crop": self.crop,
            "family": self.family,
            "terms": list(self.terms),
            "coef_names": list(self.coef_names),
            "coef": [float(v) for v in self.coef],
            "cov": [[float(v) for v in row] for row in self.cov],
            "center": {k: float(v) for k, v in self.center.items()},
            "fill": {k: float(v) for k, v in self.fill.items()},
            "reference": dict(self.reference),
            "merged": {k: list(v) for k, v in self.merged.items()},
            "defaults": dict(self.defaults),
            "retransform": self.retransform,
            "smearing": float(self.smearing),
            "sigma2_group": _num(self.sigma2_group),
            "sigma2_resid": _num(self.sigma2_resid),
            "dispersion": _num(self.dispersion),
            "n_records": int(self.n_records),
            "n_groups": int(self.n_groups),
            "pooled_with": list(self.pooled_with),
            "ranges": {k: [float(a) for a in v] for k, v in self.ranges.items()},
            "tier1_rule": self.tier1_rule,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CropModel:
        """Rebuild a model written by :meth:`to_json`."""
        d = dict(d)
        for key in ("sigma2_group", "sigma2_resid", "dispersion"):
            d[key] = float("nan") if d.get(key) is None else float(d[key])
        target = cls
        if cls is CropModel:  # dispatch on the family written in the JSON
            target = {Family.IPCC_TIER1.value: Tier1Model, Family.MODEL_AVERAGE.value: AveragedModel}.get(
                d.get("family", ""), FittedModel
            )
        try:
            return target(**d)
        except TypeError as e:
            raise ModelError(
                f"model JSON for crop {d.get('crop')!r} is malformed ({e}). Fix: re-run `cropn2o fit`"
            ) from None


@dataclass
class FittedModel(CropModel):
    """A log-linear model fitted to observations (``glm_gamma`` or ``mixed_lognormal``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in FITTED_FAMILIES:
            raise ModelError(
                f"crop {self.crop}: {self.family!r} is not a fitted family. "
                f"Fix: use one of {', '.join(FITTED_FAMILIES)}"
            )

    def _prepare(self, X: pd.DataFrame) -> PreparedRows:
        """The design of X, and the same with the N column at N = 0 (what :meth:`design` gives
        for X with ``n_rate_kg_ha`` set to 0, to the bit: ``0 - center``)."""
        D = self.design(X)
        D0 = D.copy()
        if "n_rate_kg_ha" in self.coef_names:
            D0[:, self.coef_names.index("n_rate_kg_ha")] = 0.0 - self.center.get("n_rate_kg_ha", 0.0)
        return PreparedRows(self.crop, self.family, self._n_rate(X), D, D0)

    def mean_emission(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Expected emission, kg N2O-N/ha per season, for each row of X.

        Parameters
        ----------
        X
            Activity or observation rows (``n_rate_kg_ha`` in kg N/ha and the model's terms),
            or rows this model prepared (:meth:`prepare`).
        params
            ``None`` for the point estimate, or an (n_draws, k) array of coefficient draws.

        Returns
        -------
        numpy.ndarray
            (n_rows,) without ``params``; (n_draws, n_rows) with them.

        Notes
        -----
        ``E = s * exp(x'beta)`` with ``s`` the retransformation factor (1 for the Gamma GLM; for
        the mixed model ``log s`` is the coefficient ``log_smearing``, so parameter draws carry
        its uncertainty).
        """
        return self._emission(self.prepare(X).design, params)

    def _emission(self, D: np.ndarray, params: np.ndarray | None) -> np.ndarray:
        eta = self._linear(D, params)
        out = np.exp(eta, out=eta)
        out *= self.retransform_factor
        return out

    @property
    def retransform_factor(self) -> float:
        """Factor applied on top of exp(x'beta): the smearing, unless its log is a coefficient
        (``log_smearing``, drawn with the others in the Monte Carlo) and so already in x'beta."""
        return 1.0 if LOG_SMEARING in self.coef_names else self.smearing

    def background(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Emission at N = 0 (kg N2O-N/ha per season), shapes as :meth:`mean_emission`."""
        D0 = self.prepare(X).design_zero_n
        assert D0 is not None  # a fitted model's rows always carry it
        return self._emission(D0, params)

    def draw_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` coefficient vectors from N(coef, cov), shape (n, k).

        The retransformation factor (unless it is the ``log_smearing`` coefficient) and the
        variance components are held at their estimates.
        """
        return rng.multivariate_normal(self.coef, self.cov, size=n, method="svd")

    def n_coef_index(self) -> int | None:
        """Index of the N-rate coefficient; N must enter only as that one linear term."""
        if "n_rate_kg_ha" not in self.coef_names or sum("n_rate" in name for name in self.coef_names) != 1:
            raise ModelError(
                f"crop {self.crop}: the estimate stage needs N rate to enter the model as one "
                f"linear term 'n_rate_kg_ha' (terms: {', '.join(self.coef_names)}). "
                "Fix: re-fit without N interactions"
            )
        return self.coef_names.index("n_rate_kg_ha")


@dataclass
class Tier1Model(CropModel):
    """IPCC Tier 1: E = N x EF (no background), EF by edition and (2019) disaggregation rule."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != Family.IPCC_TIER1:
            raise ModelError(
                f"crop {self.crop}: a Tier 1 model has family ipcc_tier1, not {self.family!r}. "
                "Fix: rebuild it with tier1_model()"
            )

    def _tier1_ef_selector(self, X: pd.DataFrame) -> np.ndarray:
        """(n, k) 0/1 matrix choosing which EF of :attr:`coef` applies to each row."""
        n = len(X)
        S = np.zeros((n, self.k))
        idx = {name: j for j, name in enumerate(self.coef_names)}
        if self.tier1_rule == "single":
            S[:, 0] = 1.0
        elif self.tier1_rule == "water_regime":
            regime = self._categorical(X, "water_regime", n)
            ok = np.isin(regime, ["continuous_flooding", "single_drainage", "multiple_drainage"])
            if not ok.all():
                raise ModelError(
                    f"Tier 1 rice model: water regime '{regime[~ok][0]}' is not a flooded "
                    "regime. Fix: use continuous_flooding, single_drainage or multiple_drainage"
                )
            S[regime == "continuous_flooding", idx["ef_continuous_flooding"]] = 1.0
            S[regime != "continuous_flooding", idx["ef_drainage"]] = 1.0
        elif self.tier1_rule == "climate_fertilizer":
            if "climate" not in X.columns or X["climate"].isna().any():
                raise ModelError(
                    f"Tier 1 2019 disaggregated model ({self.crop}) needs a 'climate' "
                    "column (wet/dry) without gaps. Fix: add it, or set ipcc.disaggregated: false"
                )
            climate = X["climate"].astype(str).to_numpy()
            bad = ~np.isin(climate, ["wet", "dry"])
            if bad.any():
                raise ModelError(f"Tier 1: climate '{climate[bad][0]}' is not wet or dry. Fix: recode it")
            fert = self._categorical(X, "fertilizer_type", n)
            wet = climate == "wet"
            S[wet & (fert == "synthetic"), idx["ef_wet_synthetic"]] = 1.0
            S[wet & (fert != "synthetic"), idx["ef_wet_other"]] = 1.0
            S[~wet, idx["ef_dry"]] = 1.0
        else:
            raise ModelError(
                f"Tier 1 model for {self.crop} has unknown rule {self.tier1_rule!r}. Fix: rebuild it with tier1_model()"
            )
        return S

    def _prepare(self, X: pd.DataFrame) -> PreparedRows:
        return PreparedRows(self.crop, self.family, self._n_rate(X), self._tier1_ef_selector(X))

    def mean_emission(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Emission, kg N2O-N/ha per season: ``E = N * EF(row)`` (shapes as for fitted models)."""
        R = self.prepare(X)
        return self._linear(R.design, params) * R.n_rate_kg_ha

    def background(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Tier 1 has no background term: zeros of the shape of :meth:`mean_emission`."""
        n = len(X)
        return np.zeros(n) if params is None else np.zeros((np.atleast_2d(params).shape[0], n))

    def draw_params(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` EF vectors, shape (n, k).

        Notes
        -----
        Each EF independently from a split normal whose median is the IPCC default and whose
        2.5 % and 97.5 % quantiles are the ends of the IPCC range (``x = c + z * (c - low) / 1.96``
        for ``z < 0``, ``c + z * (high - c) / 1.96`` otherwise, ``z ~ N(0, 1)``), truncated at 0
        because an EF cannot be negative. IPCC ranges are read as 95 % intervals (2006 Guidelines
        Vol. 1 Ch. 3).
        """
        z = rng.standard_normal((n, self.k))
        c = self.coef
        lo = np.array([self.ranges[name][0] for name in self.coef_names])
        hi = np.array([self.ranges[name][1] for name in self.coef_names])
        x = np.where(z < 0, c + z * (c - lo) / Z95, c + z * (hi - c) / Z95)
        return np.maximum(x, 0.0)

    def n_coef_index(self) -> int | None:
        """None: the Tier 1 emission is proportional to N, not log-linear in it."""
        return None


def _form_shape(family: str, P: np.ndarray, N: np.ndarray) -> np.ndarray:
    """log f(N) - log f(0) of a response form for parameter rows P (m, k) and N (m, n) or (n,).

    Mirrors :meth:`pipeline.methods.response_forms.FittedForm._log_mean` (the N part only, which
    is 0 at N = 0 for every form), so N can differ between draws (Monte Carlo N-rate errors).
    ``exponential_rs`` also carries its N-dependent log-normal factor ``psi_01 N + psi_11 N^2/2``
    (added by the caller from the form's ``re_cov``).
    """
    Nr = np.asarray(N, dtype=float)
    if Nr.ndim == 1:
        Nr = Nr[None, :]
    if family in ("exponential", "exponential_rs"):
        return P[:, 1:2] * Nr
    if family == "quadratic":
        return P[:, 1:2] * Nr + P[:, 2:3] * Nr**2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if family == "linear":
            return np.log(np.clip(1.0 + P[:, 1:2] * Nr, 0.0, None))
        k = P[:, 2:3] * Nr
        small = np.abs(k) < 1e-8
        phi = np.where(small, 1.0 - k / 2.0, -np.expm1(-np.where(small, 1.0, k)) / np.where(small, 1.0, k))
        return np.log(np.clip(1.0 + P[:, 1:2] * Nr * phi, 0.0, None))


@dataclass
class AveragedModel(CropModel):
    """A model average of N-response forms (``model_average``): the EmissionModel interface.

    Attributes
    ----------
    average
        The :meth:`pipeline.methods.response_forms.ModelAverage.to_json` dict (forms with
        positive weight, their weights and the reason).
    design_names
        Covariate design columns of every form, in order: numeric covariates (used as
        ``x - center``, missing -> ``fill``) and indicators ``var[level]``; built from X by
        :meth:`CropModel.design` with these names.

    Notes
    -----
    ``coef``/``cov``/``coef_names`` hold every form's parameters side by side
    (``"<family>:<param>"``, block-diagonal covariance), so the generic checks and tables work.
    A Monte Carlo parameter row (:meth:`draw_params`) is ``[form index, block of form 1, ...,
    block of form K]``: column 0 is the index of the form drawn in :attr:`families`, and only
    that form's block is drawn (the others stay at their estimates and are not used).
    The plug-in :meth:`mean_emission` (``params=None``) is ``sum_k w_k E_hat_k``: the central
    estimate, free of the Jensen inflation of a mean over draws.
    """

    average: dict[str, Any] = field(default_factory=dict)
    design_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family != Family.MODEL_AVERAGE:
            raise ModelError(
                f"crop {self.crop}: an averaged model has family model_average, not {self.family!r}. "
                "Fix: rebuild it with AveragedModel.from_average()"
            )
        self._avg = ModelAverage.from_json(self.average)
        offsets, start = {}, 1
        for fam in self.families:
            k = len(self._avg.forms[fam].params)
            offsets[fam] = (start, start + k)
            start += k
        self._blocks = offsets
        if start - 1 != self.k:
            raise ModelError(
                f"crop {self.crop}: model-average JSON has {self.k} coefficients for forms with "
                f"{start - 1} parameters. Fix: re-run `cropn2o fit`"
            )

    @classmethod
    def from_average(cls, crop: str, avg: ModelAverage, skeleton: CropModel) -> AveragedModel:
        """Wrap a fitted :class:`ModelAverage` with the design (terms, centring, levels) of
        ``skeleton`` (a :class:`CropModel` whose ``coef_names`` are ``intercept``,
        ``n_rate_kg_ha`` and the covariate design columns)."""
        names, coefs, covs = [], [], []
        for fam in avg.families:
            f = avg.forms[fam]
            names += [f"{fam}:{p}" for p in f.param_names]
            coefs.append(f.params)
            covs.append(f.cov)
        k = sum(len(c) for c in coefs)
        cov = np.zeros((k, k))
        i = 0
        for c in covs:
            cov[i : i + len(c), i : i + len(c)] = c
            i += len(c)
        design = [n for n in skeleton.coef_names if n not in ("intercept", "n_rate_kg_ha", LOG_SMEARING)]
        return cls(
            crop=crop,
            family=Family.MODEL_AVERAGE.value,
            terms=list(skeleton.terms),
            coef_names=names,
            coef=np.concatenate(coefs),
            cov=cov,
            center=dict(skeleton.center),
            fill=dict(skeleton.fill),
            reference=dict(skeleton.reference),
            merged={k2: list(v) for k2, v in skeleton.merged.items()},
            defaults=dict(skeleton.defaults),
            retransform="per_form",
            smearing=1.0,
            n_records=skeleton.n_records,
            n_groups=skeleton.n_groups,
            pooled_with=list(skeleton.pooled_with),
            notes=list(skeleton.notes),
            average=avg.to_json(),
            design_names=design,
        )

    # -- the model average ---------------------------------------------------------------------
    @property
    def families(self) -> list[str]:
        """Forms with positive weight, in the order of the form index of a draw."""
        return list(self.average["weights"])

    @property
    def weights(self) -> dict[str, float]:
        """Form -> weight (sum 1)."""
        return dict(self._avg.weights)

    def form(self, family: str) -> FittedForm:
        """The fitted form ``family``."""
        return self._avg.forms[family]

    def covariates(self, X: pd.DataFrame) -> np.ndarray:
        """(n, p) covariate design of X for the forms (centred numeric columns, indicators)."""
        shell = CropModel(
            crop=self.crop,
            family=Family.MIXED_LOGNORMAL.value,
            terms=self.terms,
            coef_names=list(self.design_names),
            coef=np.zeros(len(self.design_names)),
            cov=np.zeros((len(self.design_names),) * 2),
            center=self.center,
            fill=self.fill,
            reference=self.reference,
            merged=self.merged,
            defaults=self.defaults,
        )
        return shell.design(X)

    def _prepare(self, X: pd.DataFrame) -> PreparedRows:
        return PreparedRows(self.crop, self.family, self._n_rate(X), self.covariates(X))

    def form_emission(self, X: Rows, family: str) -> np.ndarray:
        """Plug-in expected emission (kg N2O-N/ha per season) of one form at the rows of X."""
        R = self.prepare(X)
        return self.form(family).predict_mean(R.n_rate_kg_ha, R.design)

    def mean_emission(self, X: Rows, params: np.ndarray | None = None, n_mult: np.ndarray | None = None) -> np.ndarray:
        """Expected emission, kg N2O-N/ha per season.

        Parameters
        ----------
        X
            Rows with ``n_rate_kg_ha`` (kg N/ha) and the model's terms, or rows this model
            prepared (:meth:`prepare`).
        params
            ``None``: the plug-in model average ``sum_k w_k E_hat_k(N, x)`` (central estimate),
            shape (n,). Otherwise (m, 1 + k) draws from :meth:`draw_params`: each row is
            evaluated with its own form and parameters, shape (m, n).
        n_mult
            Optional (m, n) multiplicative N-rate errors (with ``params``): each draw is
            evaluated at ``N * n_mult`` exactly, whatever the form.
        """
        R = self.prepare(X)
        N, Z = R.n_rate_kg_ha, R.design
        if params is None:
            return self._avg.predict_mean(N, Z)
        P = np.atleast_2d(np.asarray(params, dtype=float))
        if P.shape[1] != 1 + self.k:
            raise ModelError(
                f"crop {self.crop}: model-average draws have {P.shape[1]} columns, expected "
                f"{1 + self.k}. Fix: draw them with draw_params()"
            )
        out = np.empty((P.shape[0], len(N)))
        idx = P[:, 0].astype(int)
        zeros = np.zeros(len(N))
        for j, fam in enumerate(self.families):
            rows = np.flatnonzero(idx == j)
            if rows.size == 0:
                continue
            f = self.form(fam)
            lo, hi = self._blocks[fam]
            Pf = P[rows, lo:hi]
            eta = f._log_mean(Pf, zeros, Z)  # level, covariates and log smearing (shape = 0 at N = 0)
            Nd = N[None, :] if n_mult is None else N[None, :] * n_mult[rows]
            eta = eta + _form_shape(fam, Pf, Nd)
            if fam == "exponential_rs":
                psi = f.re_cov
                eta = eta + psi[0, 1] * Nd + 0.5 * psi[1, 1] * Nd**2
            out[rows] = np.exp(eta)
        return out

    def background(self, X: Rows, params: np.ndarray | None = None) -> np.ndarray:
        """Emission at N = 0 (kg N2O-N/ha per season), shapes as :meth:`mean_emission`
        (the covariate design does not hold N, so it is the same at N = 0)."""
        R = self.prepare(X)
        at_zero = PreparedRows(self.crop, self.family, np.zeros(len(R)), R.design)
        return self.mean_emission(at_zero, params)

    def draw_params(self, rng: np.random.Generator, n: int, u: np.ndarray | None = None) -> np.ndarray:
        """``n`` Monte Carlo rows ``[form index, parameters...]``, shape (n, 1 + k).

        The form of each draw is Categorical(weights) (or the inverse CDF of the weights at the
        uniforms ``u``, shared across crops so their form draws are comonotone); its parameters
        are drawn from N(theta_hat_k, Sigma_k) of that form.
        """
        fams = self._avg.draw_families(rng, n, u)
        out = np.tile(self.coef, (n, 1))
        out = np.column_stack([np.zeros(n), out])
        for j, fam in enumerate(self.families):
            rows = np.flatnonzero(fams == fam)
            out[rows, 0] = j
            if rows.size:
                lo, hi = self._blocks[fam]
                out[rows, lo:hi] = self.form(fam).draw_params(rng, rows.size)
        return out

    def draw_families(self, params: np.ndarray) -> np.ndarray:
        """Form name of each Monte Carlo row of :meth:`draw_params`."""
        return np.asarray(self.families, dtype=object)[np.atleast_2d(params)[:, 0].astype(int)]

    def n_coef_index(self) -> int | None:
        """None: N does not enter as one log-linear term (N errors go through ``n_mult``)."""
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the :class:`CropModel` fields, the forms and their weights."""
        return {**super().to_json(), "average": self.average, "design_names": list(self.design_names)}


def _num(v: float) -> float | None:
    """NaN is not JSON; write null."""
    return None if v is None or not np.isfinite(v) else float(v)


@dataclass
class InventoryModel:
    """One :class:`CropModel` per crop class, with where it came from.

    ``kind`` is ``"fitted"`` or ``"tier1"``; ``provenance`` records the input hashes, the
    config section and library versions (fitted) or the IPCC edition (Tier 1).
    """

    models: dict[str, CropModel]
    kind: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def for_crop(self, crop: str) -> CropModel:
        """The model of ``crop``; a clear error when there is none."""
        if crop not in self.models:
            raise ModelError(
                f"no {self.kind} emission model for crop '{crop}' (models: "
                f"{', '.join(sorted(self.models))}). Fix: add it to fit.crops or set fit.pooling"
            )
        return self.models[crop]

    def mean_emission(self, X: pd.DataFrame) -> np.ndarray:
        """Point-estimate emission (kg N2O-N/ha) of rows of several crops (column ``crop``)."""
        out = np.full(len(X), np.nan)
        crops = X["crop"].astype(str).to_numpy()
        for crop in sorted(set(crops)):
            mask = crops == crop
            out[mask] = self.for_crop(crop).mean_emission(X.loc[mask])
        return out

    def to_json(self) -> dict[str, Any]:
        """Portable JSON dict (no pickle)."""
        return {
            "kind": self.kind,
            "provenance": self.provenance,
            "models": {c: m.to_json() for c, m in sorted(self.models.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InventoryModel:
        """Rebuild from :meth:`to_json` output."""
        if not isinstance(d, dict) or "models" not in d or "kind" not in d:
            raise ModelError("model JSON lacks 'models' or 'kind'. Fix: re-run `cropn2o fit`")
        return cls(
            models={c: CropModel.from_json(m) for c, m in d["models"].items()},
            kind=d["kind"],
            provenance=d.get("provenance", {}),
        )


# ---------------------------------------------------------------------------------------------
# IPCC Tier 1
# ---------------------------------------------------------------------------------------------
#: Default EFs (kg N2O-N per kg N) and their ranges, by edition. 2006: Vol. 4 Ch. 11 Table
#: 11.1 (EF1, EF1FR). 2019 Refinement: Vol. 4 Ch. 11 Table 11.1 (aggregated EF1, flooded rice
#: EF1FR; disaggregated: synthetic N in wet climates, other N in wet climates, all N in dry
#: climates; flooded rice by water regime). The ranges of the two disaggregated rice EFs
#: (continuous flooding 0-0.010, single/multiple drainage 0-0.016) are (unverified) against the
#: printed table; the other values are as listed in docs/fit.md.
TIER1_EF: dict[str, dict[str, tuple[float, float, float]]] = {
    "2006": {
        "ef1": (0.01, 0.003, 0.03),
        "ef1fr": (0.003, 0.0, 0.006),
    },
    "2019": {
        "ef1": (0.010, 0.002, 0.018),
        "ef1fr": (0.004, 0.0, 0.029),
        "ef_wet_synthetic": (0.016, 0.013, 0.019),
        "ef_wet_other": (0.006, 0.001, 0.011),
        "ef_dry": (0.005, 0.0, 0.011),
        "ef_continuous_flooding": (0.003, 0.0, 0.010),
        "ef_drainage": (0.005, 0.0, 0.016),
    },
}


def _tier1_crop(
    crop: str, names: list[str], table: dict[str, tuple[float, float, float]], rule: str, defaults: dict[str, str]
) -> CropModel:
    coef = np.array([table[n][0] for n in names])
    ranges = {n: [table[n][1], table[n][2]] for n in names}
    # cov: the range read as +-1.96 sd (a summary only; draws use the split normal)
    sd = np.array([(table[n][2] - table[n][1]) / (2 * Z95) for n in names])
    terms = ["n_rate_kg_ha"] + (
        ["climate", "fertilizer_type"]
        if rule == "climate_fertilizer"
        else ["water_regime"]
        if rule == "water_regime"
        else []
    )
    return Tier1Model(
        crop=crop,
        family=Family.IPCC_TIER1.value,
        terms=terms,
        coef_names=list(names),
        coef=coef,
        cov=np.diag(sd**2),
        ranges=ranges,
        tier1_rule=rule,
        defaults=dict(defaults),
    )


def tier1_model(edition: str, disaggregated: bool, rice_water_regime: str = "single_drainage") -> InventoryModel:
    """IPCC Tier 1 direct-N2O model (E = N x EF1, rice: N x EF1FR; no background).

    Parameters
    ----------
    edition
        ``"2006"`` (Guidelines) or ``"2019"`` (Refinement).
    disaggregated
        2019 only: EF by climate (wet/dry) and fertilizer type (synthetic/other) for upland
        crops, and by water regime for flooded rice. The 2006 edition has no disaggregation;
        the flag is then recorded as not applicable.
    rice_water_regime
        Regime assumed for rice rows without a ``water_regime`` column.

    Returns
    -------
    InventoryModel
        ``kind="tier1"``, one model per crop of :data:`pipeline.contract.CROPS`.

    Notes
    -----
    E (kg N2O-N/ha) = N (kg N/ha) x EF (kg N2O-N/kg N). Activity N is synthetic, so the wet
    climate synthetic-N EF applies to upland activity rows unless X has ``fertilizer_type``.

    References
    ----------
    IPCC (2006) Vol. 4 Ch. 11 Table 11.1; IPCC (2019) Refinement Vol. 4 Ch. 11 Table 11.1.
    """
    if edition not in TIER1_EF:
        raise ConfigError(f"IPCC edition {edition!r} is unknown. Fix: set ipcc.edition to '2006' or '2019'")
    table = TIER1_EF[edition]
    use_dis = disaggregated and edition == "2019"
    defaults = {"water_regime": rice_water_regime, "fertilizer_type": "synthetic"}
    models: dict[str, CropModel] = {}
    for crop in CROPS:
        if crop == "rice":
            names, rule = (
                (["ef_continuous_flooding", "ef_drainage"], "water_regime") if use_dis else (["ef1fr"], "single")
            )
        else:
            names, rule = (
                (["ef_wet_synthetic", "ef_wet_other", "ef_dry"], "climate_fertilizer")
                if use_dis
                else (["ef1"], "single")
            )
        models[crop] = _tier1_crop(crop, names, table, rule, defaults)
    note = (
        "disaggregated by climate, fertilizer type and rice water regime"
        if use_dis
        else "aggregated"
        if edition == "2019" or not disaggregated
        else "aggregated (the 2006 edition has no disaggregated EFs; setting not applicable)"
    )
    return InventoryModel(
        models=models,
        kind="tier1",
        provenance={
            "edition": edition,
            "disaggregated": bool(use_dis),
            "disaggregation_note": note,
            "rice_water_regime": rice_water_regime,
            "source": f"IPCC {edition} {'Guidelines' if edition == '2006' else 'Refinement'}, Vol. 4 Ch. 11, Table 11.1",
            "draws": "split normal per EF: median = default, 2.5/97.5 % = range ends, truncated at 0",
        },
    )
