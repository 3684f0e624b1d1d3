"""Emission-factor models by crop class, chosen or stacked by leave-site-out cross-validation.

Pure functions do the work (:func:`prepare_observations`, :func:`fit_crop`,
:func:`fit_pooled`, :func:`cross_validate`, :func:`fit_all`, :func:`ef_curves`); the fit
stage (:mod:`pipeline.stages.fit`) reads and writes the files. The science and every rule (zero fluxes, missing covariates, pooling,
model choice) are documented in ``docs/fit.md``.

References
----------
Stehfest, E. & Bouwman, L. (2006) Nutr. Cycl. Agroecosyst. 74:207-228.
Philibert, A., Loyce, C. & Makowski, D. (2012) PLoS ONE 7:e50950.
Duan, N. (1983) JASA 78:605-610.
Mancl, L.A. & DeRouen, T.A. (2001) Biometrics 57:126-134.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from pipeline.contract import CROPS
from pipeline.errors import InputError, ModelError
from pipeline.methods import response_forms as rf
from pipeline.methods.models import (
    LOG_SMEARING,
    Z95,
    AveragedModel,
    CropModel,
    Family,
    FittedModel,
    InventoryModel,
    Tier1Model,
)
from pipeline.methods.options import FitOptions

log = logging.getLogger(__name__)

N_COL = "n_rate_kg_ha"
FLUX_COL = "flux_kg_n2o_n_ha"
#: flux used in the fit after the non-positive-flux rule, kg N2O-N/ha
FIT_FLUX_COL = "flux_fit_kg_n2o_n_ha"
REQUIRED = ("obs_id", "site_id", "crop", N_COL, FLUX_COL)
#: Measurement-period covariate: log(duration_days / 365), 0 for an annual record.
PERIOD_COL = "log_period_ratio"
DURATION_COL = "duration_days"
DAYS_PER_YEAR = 365.0


# ---------------------------------------------------------------------------------------------
# Observations: checks and the non-positive flux rule
# ---------------------------------------------------------------------------------------------
def _locate(obs: pd.DataFrame, i: int, source: str) -> tuple[str, int | None]:
    """File and line of the i-th row (the original file when the table records it)."""
    if "source_file" in obs.columns and "source_row" in obs.columns:
        f, r = obs["source_file"].iloc[i], obs["source_row"].iloc[i]
        if not pd.isna(f) and not pd.isna(r):
            return str(f), int(r)
    return source, i + 2  # header = line 1 of the table as written


def check_observations(obs: pd.DataFrame, cfg: FitOptions, source: str = "observations.parquet") -> pd.DataFrame:
    """Check the columns the fit needs; return a copy with numeric columns as float.

    Raises
    ------
    InputError
        A required column is missing, or a cell is missing or not a finite number, or a crop
        is not a contract crop class; the message names file, row, column and fix.
    """
    if len(obs) == 0:
        raise InputError(
            source, "the observation table has no rows", "run `cropn2o ingest` on a non-empty observations file"
        )
    need = [*REQUIRED, cfg.group_by]
    for col in need:
        if col not in obs.columns:
            raise InputError(
                source,
                "required column missing from the observation table",
                "re-run `cropn2o ingest`, or map the column in the observations mapping",
                column=col,
            )
    out = obs.copy()
    for col in (N_COL, FLUX_COL):
        x = pd.to_numeric(out[col], errors="coerce").astype(float)
        bad = ~np.isfinite(x.to_numpy())
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            f, r = _locate(out, i, source)
            raise InputError(
                f, f"'{out[col].iloc[i]}' is not a finite number", "correct or remove the record", row=r, column=col
            )
        out[col] = x
    neg_n = out[N_COL].to_numpy() < 0
    if neg_n.any():
        i = int(np.flatnonzero(neg_n)[0])
        f, r = _locate(out, i, source)
        raise InputError(f, f"negative N rate {out[N_COL].iloc[i]} kg N/ha", "correct the record", row=r, column=N_COL)
    for col in ("crop", cfg.group_by):
        miss = out[col].isna().to_numpy()
        if miss.any():
            i = int(np.flatnonzero(miss)[0])
            f, r = _locate(out, i, source)
            raise InputError(f, "value is missing", "fill it in the observations file", row=r, column=col)
    bad_crop = ~out["crop"].astype(str).isin(CROPS).to_numpy()
    if bad_crop.any():
        i = int(np.flatnonzero(bad_crop)[0])
        f, r = _locate(out, i, source)
        raise InputError(
            f,
            f"crop '{out['crop'].iloc[i]}' is not one of {', '.join(CROPS)}",
            "recode it in the observations mapping (`values: crop:`)",
            row=r,
            column="crop",
        )
    out["crop"] = out["crop"].astype(str)
    out[cfg.group_by] = out[cfg.group_by].astype(str)
    for col in cfg.covariates:
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    return out


def apply_flux_rule(obs: pd.DataFrame, cfg: FitOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the configured rule for zero and negative fluxes; never drop rows silently.

    Parameters
    ----------
    obs
        Checked observations (:func:`check_observations`).
    cfg
        ``nonpositive_flux``: ``"floor"`` replaces fluxes <= 0 by ``flux_floor_kg_ha`` (kg
        N2O-N/ha) in :data:`FIT_FLUX_COL`; ``"quarantine"`` moves those rows to the returned
        quarantine frame with the reason.

    Returns
    -------
    kept, quarantined
        ``kept`` has :data:`FIT_FLUX_COL` and a boolean ``floored`` column.

    Notes
    -----
    Both log-scale and Gamma models need y > 0. Flooring keeps the zero-N controls, which
    carry the background; a small floor biases the mean up by at most the floor per record.
    Cross-validation scores are always computed against the unfloored flux.
    """
    y = obs[FLUX_COL].to_numpy(dtype=float)
    nonpos = y <= 0
    if cfg.nonpositive_flux == "floor":
        kept = obs.copy()
        kept[FIT_FLUX_COL] = np.where(nonpos, cfg.flux_floor_kg_ha, y)
        kept["floored"] = nonpos
        quarantined = obs.iloc[0:0].copy()
    else:
        kept = obs.loc[~nonpos].copy()
        kept[FIT_FLUX_COL] = kept[FLUX_COL]
        kept["floored"] = False
        quarantined = obs.loc[nonpos].copy()
    quarantined["reason"] = "flux <= 0 kg N2O-N/ha (fit.nonpositive_flux: quarantine)"
    if nonpos.any():
        log.info(
            "%d records with flux <= 0: %s",
            int(nonpos.sum()),
            f"floored at {cfg.flux_floor_kg_ha} kg N2O-N/ha" if cfg.nonpositive_flux == "floor" else "quarantined",
        )
    return kept, quarantined


def model_covariates(cfg: FitOptions, data: pd.DataFrame) -> list[str]:
    """Numeric covariates of the fit: ``fit.covariates`` and, when the observations carry it,
    the measurement-period covariate :data:`PERIOD_COL`."""
    return [*cfg.covariates, *([PERIOD_COL] if PERIOD_COL in data.columns and PERIOD_COL not in cfg.covariates else [])]


def add_period_covariate(obs: pd.DataFrame, cfg: FitOptions) -> tuple[pd.DataFrame, str]:
    """Add ``log_period_ratio = log(duration_days / 365)`` so seasonal and annual records are
    not mixed silently.

    Parameters
    ----------
    obs
        Checked observations; ``duration_days`` (d) is the length of the measured period.
    cfg
        ``fit.measurement_period``: ``"covariate"`` adds the column, ``"ignore"`` does not.

    Returns
    -------
    obs, note
        The table (with :data:`PERIOD_COL` when added) and a one-line note for the diagnostics.

    Notes
    -----
    Field fluxes are cumulated over the measured period, which runs from a few weeks to more
    than a year (KenSyn: 1 to 1,095 days). The period enters as a covariate on the log scale,
    ``log E = ... + g log(D / 365)``, i.e. ``E ∝ D^g``: ``g = 1`` would be a constant daily
    rate (an offset), ``g = 0`` all emission inside the shortest period (post-fertilisation
    peaks); the data decide, as Stehfest & Bouwman (2006) did with classes of experiment length
    (length of measurement as a factor of the emission model) and Philibert et al. (2012), who
    accounted for the measurement duration. Activity rows have no period: they take the
    reference period ``fit.period_reference``: ``"median"`` (default) the median measured period
    of the crop's records (a crop season when the records are seasonal, so nothing is
    extrapolated), ``"annual"`` 365 days (value 0). Records without a duration take the median
    duration of the table (counted in the note).

    References
    ----------
    Stehfest, E. & Bouwman, L. (2006) Nutr. Cycl. Agroecosyst. 74:207-228.
    Philibert, A., Loyce, C. & Makowski, D. (2012) PLoS ONE 7:e50950.
    """
    if cfg.measurement_period == "ignore":
        return obs, "measurement period ignored (fit.measurement_period: ignore): seasonal and annual records mixed"
    if DURATION_COL not in obs.columns:
        return obs, (
            "no duration_days column in the observations: the measurement period cannot be modelled, "
            "seasonal and annual records are mixed"
        )
    d = pd.to_numeric(obs[DURATION_COL], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return (
            obs,
            "duration_days is empty: the measurement period cannot be modelled, seasonal and annual records mixed",
        )
    med = float(np.median(d[ok]))
    out = obs.copy()
    out[PERIOD_COL] = np.log(np.where(ok, d, med) / DAYS_PER_YEAR)
    note = (
        f"measurement period modelled: covariate log(duration_days/365) (durations {d[ok].min():.0f}-"
        f"{d[ok].max():.0f} d, median {med:.0f} d; estimates for "
        + ("365 d" if cfg.period_reference == "annual" else "the median measured period of each crop")
        + ")"
    )
    if (~ok).any():
        note += f"; {int((~ok).sum())} records without a duration take the median"
    return out, note


def prepare_observations(
    obs: pd.DataFrame, cfg: FitOptions, source: str = "observations.parquet"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`check_observations`, :func:`add_period_covariate`, then :func:`apply_flux_rule`.

    The period note is kept in ``kept.attrs["period_note"]``.
    """
    checked, note = add_period_covariate(check_observations(obs, cfg, source), cfg)
    kept, quarantined = apply_flux_rule(checked, cfg)
    kept.attrs["period_note"] = note
    return kept, quarantined


# ---------------------------------------------------------------------------------------------
# Model structure from training data
# ---------------------------------------------------------------------------------------------
def _levels(
    train: pd.DataFrame,
    var: str,
    preferred_ref: str | None,
    group: str,
    min_sites: int,
    candidates: list[str] | None = None,
) -> tuple[str, list[str], list[str], list[str]]:
    """Reference level, levels with a coefficient, levels merged into the reference, notes."""
    sites = train.groupby(train[var].astype(str))[group].nunique()
    notes: list[str] = []
    present = sorted(sites.index)
    if preferred_ref is not None and preferred_ref in present:
        ref = preferred_ref
    else:
        ref = max(present, key=lambda lv: (sites[lv], lv))
        if preferred_ref is not None:
            notes.append(f"{var} '{preferred_ref}' has no records; assumed equal to '{ref}'")
    wanted = [lv for lv in present if lv != ref and (candidates is None or lv in candidates)]
    coef_levels = [lv for lv in wanted if sites[lv] >= min_sites]
    merged = sorted(
        {lv for lv in present if lv != ref and lv not in coef_levels}
        | ({preferred_ref} if preferred_ref is not None and preferred_ref not in present else set())
    )
    for lv in wanted:
        if lv not in coef_levels:
            notes.append(f"{var} '{lv}' has {sites[lv]} site(s) < fit.min_sites_per_level; treated as '{ref}'")
    return ref, coef_levels, merged, notes


def _skeleton(
    train: pd.DataFrame,
    crop: str,
    family: str,
    cfg: FitOptions,
    crop_effects: list[str] | None,
    reference_crop: str | None,
) -> FittedModel:
    """A :class:`CropModel` with the structure (terms, centring, levels) but no estimates."""
    notes: list[str] = []
    names = ["intercept", N_COL]
    terms = [N_COL]
    center: dict[str, float] = {}
    fill: dict[str, float] = {}
    if train[N_COL].nunique() < 2:
        raise ModelError(
            f"crop {crop}: all records have the same N rate; the N response cannot be "
            "fitted. Fix: add records with other N rates (including zero-N controls)"
        )
    for cov in model_covariates(cfg, train):
        if cov not in train.columns:
            notes.append(f"covariate {cov} dropped: column absent")
            continue
        x = train[cov].to_numpy(dtype=float)
        miss = np.isnan(x)
        if miss.mean() > cfg.max_missing_covariate:
            notes.append(f"covariate {cov} dropped: {miss.mean():.0%} missing > fit.max_missing_covariate")
            continue
        med = float(np.nanmedian(x))
        filled = np.where(miss, med, x)
        if np.ptp(filled) <= 1e-12 * max(1.0, abs(med)):
            notes.append(f"covariate {cov} dropped: constant in the training data")
            continue
        if miss.any():
            notes.append(f"covariate {cov}: {int(miss.sum())} missing values filled with the median {med:.4g}")
        # the period covariate is pre-filled (add_period_covariate); rows without it (activity
        # data) take the reference period: the crop's median measured period, or a year (0)
        fill[cov] = med if cov != PERIOD_COL else (0.0 if cfg.period_reference == "annual" else med)
        center[cov] = float(filled.mean())
        names.append(cov)
        terms.append(cov)
    reference: dict[str, str] = {}
    merged: dict[str, list[str]] = {}
    defaults: dict[str, str] = {}
    group = cfg.group_by
    if crop_effects is not None:
        ref, levels, mrg, nts = _levels(
            train, "crop", reference_crop, group, cfg.min_sites_per_level, candidates=crop_effects
        )
        reference["crop"], merged["crop"] = ref, mrg
        defaults["crop"] = crop
        names += [f"crop[{lv}]" for lv in levels]
        terms.append("crop")
        notes += nts
    elif crop == "rice" and "water_regime" in train.columns and train["water_regime"].notna().any():
        tr = train.assign(water_regime=train["water_regime"].fillna(cfg.rice_water_regime).astype(str))
        ref, levels, mrg, nts = _levels(tr, "water_regime", cfg.rice_water_regime, group, cfg.min_sites_per_level)
        reference["water_regime"], merged["water_regime"] = ref, mrg
        names += [f"water_regime[{lv}]" for lv in levels]
        terms.append("water_regime")
        notes += nts
    if crop == "rice" or (crop_effects is not None and "rice" in (crop_effects or [])):
        defaults["water_regime"] = cfg.rice_water_regime
    k = len(names)
    return FittedModel(
        crop=crop,
        family=family,
        terms=terms,
        coef_names=names,
        coef=np.zeros(k),
        cov=np.zeros((k, k)),
        center=center,
        fill=fill,
        reference=reference,
        merged=merged,
        defaults=defaults,
        notes=notes,
    )


def _estimate(model: FittedModel, train: pd.DataFrame, cfg: FitOptions) -> FittedModel:
    """Fill a skeleton's coefficients, covariance and variance components from ``train``.

    Notes
    -----
    ``glm_gamma``: ``y ~ Gamma``, ``log E[y] = x'beta`` (statsmodels GLM with the Log link
    passed explicitly); standard errors are cluster-robust by site/study (CR3, Mancl-DeRouen:
    :func:`cluster_cov`), because records of one site are not independent.
    ``mixed_lognormal``: ``log y = x'beta + u_g + e``,
    ``u_g ~ N(0, s2_g)``, ``e ~ N(0, s2_e)``, REML; mean retransformation ``s = mean(exp(log y -
    x'beta))`` (Duan) or ``exp((s2_g + s2_e)/2)``.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, ModelWarning

    D = model.design(train)
    if np.linalg.matrix_rank(D) < D.shape[1]:
        raise ModelError(
            f"crop {model.crop}: the terms {', '.join(model.coef_names)} are collinear in "
            "its records. Fix: remove a covariate from fit.covariates or add records"
        )
    y = train[FIT_FLUX_COL].to_numpy(dtype=float)
    logy = np.log(y)
    groups = pd.factorize(train[cfg.group_by].astype(str), sort=True)[0]
    model.n_records, model.n_groups = len(train), int(groups.max() + 1)
    start = np.linalg.lstsq(D, logy, rcond=None)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", ModelWarning)  # e.g. singular RE covariance at a zero site variance
        if model.family == Family.GLM_GAMMA:
            glm = sm.GLM(y, D, family=sm.families.Gamma(link=sm.families.links.Log()))
            res = glm.fit(start_params=start, maxiter=200)
            if not getattr(res, "converged", True) or not np.all(np.isfinite(res.params)):
                raise ModelError(
                    f"crop {model.crop}: the Gamma GLM did not converge. Fix: check the "
                    "records for extreme fluxes, or pin mixed_lognormal in fit.pin"
                )
            model.coef = np.asarray(res.params, dtype=float)
            model.cov = cluster_cov(D, np.asarray(res.resid_working), np.asarray(glm.weights), groups)
            model.dispersion = float(res.scale)
            model.retransform, model.smearing = "none", 1.0
        elif model.family == Family.MIXED_LOGNORMAL:
            res = _fit_mixed(sm.MixedLM(logy, D, groups=groups), model.k)
            if res is None:
                raise ModelError(
                    f"crop {model.crop}: the mixed model did not converge. Fix: add sites, or pin glm_gamma in fit.pin"
                )
            k = model.k
            model.coef = np.asarray(res.fe_params, dtype=float)
            model.cov = np.asarray(res.cov_params(), dtype=float)[:k, :k]
            model.sigma2_resid = float(res.scale)
            model.sigma2_group = float(np.asarray(res.cov_re)[0, 0])
            if cfg.retransform == "duan":
                model.smearing = float(np.mean(np.exp(logy - D @ model.coef)))
            else:
                model.smearing = float(np.exp((model.sigma2_group + model.sigma2_resid) / 2.0))
            model.retransform = cfg.retransform
            _add_log_smearing(model, np.exp(logy - D @ model.coef), groups)
        else:
            raise ModelError(f"family {model.family!r} cannot be fitted. Fix: use glm_gamma or mixed_lognormal")
    # Few sites: widen so that normal intervals (and Monte Carlo draws) match t(G - 1) intervals.
    g = model.n_groups
    model.cov = model.cov * (float(student_t.ppf(0.975, max(g - 1, 1))) / Z95) ** 2
    model.notes.append(f"covariance scaled by (t(0.975, {g - 1}) / z(0.975))^2 for {g} sites")
    if not np.all(np.isfinite(model.cov)):
        raise ModelError(
            f"crop {model.crop}: the {model.family} covariance is not finite. Fix: remove covariates or add records"
        )
    return model


def _add_log_smearing(model, ratio: np.ndarray, groups: np.ndarray) -> None:
    """Make log(smearing) a coefficient with a cluster-robust variance.

    Notes
    -----
    The mean of a log-normal model is exp(x'beta) x s. The fixed-effect covariance of REML
    describes the median (x'beta) only; s estimates how far the mean sits above it and is itself
    uncertain, mostly through the between-site spread. With r_j = exp(log y_j - x_j'beta) and
    sites g, Var(s) is estimated as G/(G-1) sum_g (sum_{j in g} (r_j - s))^2 / n^2 (cluster
    sandwich of a mean, s = mean r_j) and Var(log s) = Var(s) / s^2 (delta method). The new coefficient is
    uncorrelated with beta: s measures the spread of the residuals around a fit whose level beta
    already absorbs. Simulated-world check (docs/validation.md): the national interval's width
    then matches the spread of the estimates across worlds.
    """
    n = len(ratio)
    G = len(np.unique(groups))
    # The relative variance of the mean of exp(residual) (Duan's factor) also serves the
    # exp(s2/2) variant: both estimate the same mean-to-median ratio from the same residuals.
    duan = float(np.mean(ratio))
    site_sums = pd.Series(ratio - duan).groupby(np.asarray(groups)).sum().to_numpy()
    var_rel = G / max(G - 1, 1) * float(np.sum(site_sums**2)) / n**2 / duan**2
    k = len(model.coef)
    cov = np.zeros((k + 1, k + 1))
    cov[:k, :k] = model.cov
    cov[k, k] = var_rel
    model.coef = np.append(model.coef, np.log(model.smearing))
    model.coef_names = [*model.coef_names, LOG_SMEARING]
    model.cov = cov


def _fit_mixed(md, k: int):
    """REML fit of a MixedLM that does not trust one optimiser's word for convergence.

    statsmodels' lbfgs sometimes reports convergence at a wrong point (intercept 0, site
    variance 0, a covariance with eigenvalues of +-1e13). bfgs and lbfgs are both run and the
    valid result (finite, positive semi-definite fixed-effect covariance) with the higher REML
    log-likelihood is kept; powell and Nelder-Mead are tried only when neither is valid.
    """

    def valid(r) -> bool:
        if not (r.converged and np.all(np.isfinite(r.fe_params)) and np.isfinite(r.llf)):
            return False
        cov = np.asarray(r.cov_params(), dtype=float)[:k, :k]
        return bool(np.all(np.isfinite(cov)) and np.linalg.eigvalsh((cov + cov.T) / 2).min() >= -1e-10 * abs(cov).max())

    for methods in (("bfgs", "lbfgs"), ("powell", "nm")):
        found = []
        for method in methods:
            try:
                r = md.fit(reml=True, method=[method])
            except (np.linalg.LinAlgError, ValueError):
                continue
            if valid(r):
                found.append(r)
        if found:
            return max(found, key=lambda r: r.llf)
    return None


def cluster_cov(
    D: np.ndarray, resid_working: np.ndarray, weights: np.ndarray, groups: np.ndarray, adjustment: str = "cr3"
) -> np.ndarray:
    """Cluster-robust (sandwich) covariance of GLM coefficients with a small-sample adjustment.

    Parameters
    ----------
    D
        (n, k) design matrix.
    resid_working, weights
        IRLS working residuals and weights of the converged GLM.
    groups
        Integer cluster (site) code of each row.
    adjustment
        ``"cr3"`` (default): Mancl-DeRouen bias-reduced sandwich, ``A_g = (I - H_gg)^-1``;
        ``"cr2"``: Bell-McCaffrey, ``A_g = (I - H_gg)^(-1/2)``; ``"cr0"``: none.

    Returns
    -------
    numpy.ndarray
        (k, k) covariance, in the units of the coefficients squared.

    Notes
    -----
    With ``Xw = sqrt(w) D``, ``r = sqrt(w) resid_working``, ``B = (Xw'Xw)^-1`` and ``H_gg = Xw_g
    B Xw_g'``: ``V = B [sum_g Xw_g' A_g r_g r_g' A_g' Xw_g] B``. The plain sandwich (CR0)
    underestimates the variance with a few dozen clusters because residuals of high-leverage
    clusters are shrunk towards the fit. CR2 removes that bias only when the working model
    (independent records) is right; with site effects (correlated records) it stays biased low
    for site-level covariates (measured in docs/validation.md). CR3 inflates each cluster's
    residuals by the full ``(I - H_gg)^-1``: for the Gamma log-link model it equals the GEE
    bias-reduced sandwich of Mancl & DeRouen (2001) with an independence working correlation.

    References
    ----------
    Mancl, L.A. & DeRouen, T.A. (2001) A covariance estimator for GEE with improved small-sample
    properties. Biometrics 57:126-134.
    Bell, R.M. & McCaffrey, D.F. (2002) Bias reduction in standard errors for linear regression
    with multi-stage samples. Survey Methodology 28:169-181.
    """
    power = {"cr3": 1.0, "cr2": 0.5, "cr0": 0.0}[adjustment]
    sw = np.sqrt(weights)
    Xw = D * sw[:, None]
    r = resid_working * sw
    B = np.linalg.inv(Xw.T @ Xw)
    meat = np.zeros((D.shape[1], D.shape[1]))
    for g in np.unique(groups):
        idx = groups == g
        Xg = Xw[idx]
        H = Xg @ B @ Xg.T
        vals, vecs = np.linalg.eigh(np.eye(len(Xg)) - H)
        # eigenvalues of I - H_gg lie in (0, 1]; guard the (near-)zero ones of a saturated cluster
        A = (vecs * np.clip(vals, 1e-10, None) ** -power) @ vecs.T
        s = Xg.T @ (A @ r[idx])
        meat += np.outer(s, s)
    return B @ meat @ B


def _fit_frame(
    data: pd.DataFrame,
    crop: str,
    family: str,
    cfg: FitOptions,
    crop_effects: list[str] | None = None,
    reference_crop: str | None = None,
) -> FittedModel:
    if FIT_FLUX_COL not in data.columns:
        data, _ = apply_flux_rule(data, cfg)
    model = _skeleton(data, crop, family, cfg, crop_effects, reference_crop)
    return _estimate(model, data, cfg)


# ---------------------------------------------------------------------------------------------
# Data selection per crop: minimums and pooling
# ---------------------------------------------------------------------------------------------
@dataclass
class CropData:
    """Records a crop's model is fitted on, and how they were chosen."""

    crop: str
    data: pd.DataFrame
    own_records: int
    own_sites: int
    pooled_with: list[str] = field(default_factory=list)

    @property
    def crop_effects(self) -> list[str] | None:
        return [self.crop] if self.pooled_with else None

    @property
    def reference_crop(self) -> str | None:
        return self.pooled_with[0] if self.pooled_with else None


def select_crop_data(obs: pd.DataFrame, crop: str, cfg: FitOptions) -> CropData:
    """The records for ``crop``'s model, applying ``fit.pooling`` and the minimums.

    Notes
    -----
    With ``fit.pooling: {crop: donor}`` (``donor`` may be ``"wheat,maize"``) the crop is fitted
    on its own and the donors' records together, with its own intercept (``crop[<crop>]``)
    and every slope (N rate, covariates) shared. Without pooling, a crop with fewer than
    ``fit.min_records`` records or ``fit.min_sites`` sites is an error.

    Raises
    ------
    ModelError
        Too few records or sites, naming the counts and the fix.
    """
    own = obs.loc[obs["crop"] == crop]
    n_rec, n_sites = len(own), int(own[cfg.group_by].nunique())
    donors = [d.strip() for d in cfg.pooling.get(crop, "").split(",") if d.strip()]
    for d in donors:
        if d not in CROPS or d == crop:
            raise ModelError(
                f"fit.pooling.{crop}: '{d}' is not another crop class. Fix: use one of "
                f"{', '.join(c for c in CROPS if c != crop)}"
            )
    if donors:
        data = obs.loc[obs["crop"].isin([crop, *donors])]
        log.warning(
            "crop %s (%d records, %d sites) is pooled with %s: shared N and covariate slopes, "
            "own intercept (fit.pooling)",
            crop,
            n_rec,
            n_sites,
            ", ".join(donors),
        )
        n_rec_p, n_sites_p = len(data), int(data[cfg.group_by].nunique())
        if n_rec_p < cfg.min_records or n_sites_p < cfg.min_sites:
            raise ModelError(
                f"crop {crop} pooled with {', '.join(donors)} still has {n_rec_p} records at "
                f"{n_sites_p} sites (minimum {cfg.min_records} records, {cfg.min_sites} sites). "
                "Fix: pool with more crops or add observations"
            )
        return CropData(crop, data, n_rec, n_sites, donors)
    if n_rec < cfg.min_records or n_sites < cfg.min_sites:
        raise ModelError(
            f"crop {crop} has {n_rec} usable records at {n_sites} sites (minimum "
            f"{cfg.min_records} records, {cfg.min_sites} sites). Fix: add observations, "
            f"set fit.pooling.{crop} to a crop whose records it may share (e.g. other_upland), "
            "or remove it from fit.crops"
        )
    return CropData(crop, own, n_rec, n_sites)


def fit_crop(obs: pd.DataFrame, crop: str, family: str, cfg: FitOptions) -> CropModel:
    """Fit one crop's emission model.

    Parameters
    ----------
    obs
        Observations in the :data:`pipeline.contract.OBSERVATIONS` schema (all crops);
        fluxes in kg N2O-N/ha, N rates in kg N/ha.
    crop
        Crop class to fit.
    family
        ``"glm_gamma"`` or ``"mixed_lognormal"``.
    cfg
        The ``fit`` config section (covariates, pooling, minimums, flux rule).

    Returns
    -------
    CropModel
        With coefficients on the log scale and their covariance.

    Notes
    -----
    Mean model: ``E = exp(b0 + b_N N + sum_j g_j (x_j - xbar_j) [+ regime/crop effects])``;
    the fertilizer-induced EF is ``(E(N) - E(0)) / N``.

    References
    ----------
    Philibert et al. (2012) PLoS ONE 7:e50950 (exponential models with random study effects).
    """
    if FIT_FLUX_COL not in obs.columns:
        obs, _ = prepare_observations(obs, cfg)
    cd = select_crop_data(obs, crop, cfg)
    model = _fit_frame(cd.data, crop, family, cfg, cd.crop_effects, cd.reference_crop)
    model.pooled_with = cd.pooled_with
    return model


def fit_pooled(
    obs: pd.DataFrame,
    crops: list[str],
    family: str,
    cfg: FitOptions,
    crop_effects: list[str] | None = None,
    name: str = "pooled",
) -> CropModel:
    """One model over several crops: shared slopes, an intercept shift per crop in ``crop_effects``.

    Used by the pooling rule and to report a crop effect on a mixed dataset (e.g. the rice
    effect on the KenSyn compilation). The reference is every crop not in ``crop_effects``.
    ``name`` becomes the model's ``crop`` label.
    """
    if FIT_FLUX_COL not in obs.columns:
        obs, _ = prepare_observations(obs, cfg)
    data = obs.loc[obs["crop"].isin(crops)]
    if len(data) < cfg.min_records or data[cfg.group_by].nunique() < cfg.min_sites:
        raise ModelError(
            f"pooled model {name} has {len(data)} records at {data[cfg.group_by].nunique()} "
            f"sites (minimum {cfg.min_records}, {cfg.min_sites}). Fix: add observations"
        )
    if crop_effects:
        # every crop outside crop_effects is one reference level "other"
        data = data.assign(crop=np.where(data["crop"].isin(crop_effects), data["crop"], "other"))
        model = _fit_frame(data, name, family, cfg, crop_effects=list(crop_effects), reference_crop="other")
        model.defaults.pop("crop", None)
    else:
        model = _fit_frame(data, name, family, cfg)
    model.pooled_with = sorted(crops)
    return model


# ---------------------------------------------------------------------------------------------
# Cross-validation
# ---------------------------------------------------------------------------------------------
def site_folds(groups: pd.Series, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of each record: whole sites are assigned to folds (leave-site-out).

    Sites are sorted, shuffled with ``numpy.random.default_rng(seed)`` and dealt round-robin,
    so the assignment depends only on the site names and the seed.
    """
    sites = np.array(sorted(groups.astype(str).unique()))
    order = np.random.default_rng(seed).permutation(len(sites))
    fold_of = {sites[j]: i % min(n_folds, len(sites)) for i, j in enumerate(order)}
    return groups.astype(str).map(fold_of).to_numpy(dtype=int)


def _cv_fold(
    train: pd.DataFrame,
    test: pd.DataFrame,
    crop: str,
    family: str,
    cfg: FitOptions,
    crop_effects: list[str] | None,
    reference_crop: str | None,
) -> np.ndarray:
    """Held-out mean predictions (kg N2O-N/ha); NaN when the training fit fails."""
    try:
        model = _fit_frame(train, crop, family, cfg, crop_effects, reference_crop)
        # unseen="reference": a regime or crop level present only in the held-out sites
        return np.exp(model.design(test, unseen="reference") @ model.coef) * model.retransform_factor
    except ModelError as e:
        log.info("CV fold for %s/%s failed: %s", crop, family, e)
        return np.full(len(test), np.nan)


def _cv_tasks(cd: CropData, family: str, cfg: FitOptions) -> tuple[np.ndarray, list[Any]]:
    import dask

    folds = site_folds(cd.data[cfg.group_by], cfg.cv_folds, cfg.cv_seed)
    # the records enter the graph once (a distributed client scatters them), each fold splits them
    data_d = dask.delayed(cd.data, pure=False)
    tasks = [
        dask.delayed(_cv_fold_of)(data_d, folds, f, cd.crop, family, cfg, cd.crop_effects, cd.reference_crop)
        for f in range(int(folds.max()) + 1)
    ]
    return folds, tasks


def _cv_fold_of(data: pd.DataFrame, folds: np.ndarray, f: int, *args: Any) -> np.ndarray:
    """:func:`_cv_fold` on fold ``f`` of ``data`` (split where the task runs)."""
    return _cv_fold(data.loc[folds != f], data.loc[folds == f], *args)


def _cv_summary(
    cd: CropData, family: str, folds: np.ndarray, preds: list[np.ndarray]
) -> tuple[dict[str, Any], pd.DataFrame]:
    pred = np.full(len(cd.data), np.nan)
    for f, p in enumerate(preds):
        pred[folds == f] = p
    # score only the crop's own records (a pooled fit also predicts the donors')
    own = (cd.data["crop"] == cd.crop).to_numpy()
    obs_y = cd.data[FLUX_COL].to_numpy(dtype=float)
    ok = own & np.isfinite(pred)
    err = pred[ok] - obs_y[ok]
    sst = float(np.sum((obs_y[ok] - obs_y[ok].mean()) ** 2)) if ok.any() else float("nan")
    metrics = {
        "cv_rmse_kg_ha": float(np.sqrt(np.mean(err**2))) if ok.any() else float("nan"),
        "cv_bias_kg_ha": float(np.mean(err)) if ok.any() else float("nan"),
        "cv_r2": float(1.0 - np.sum(err**2) / sst) if ok.any() and sst > 0 else float("nan"),
        "cv_n_scored": int(ok.sum()),
        "cv_n_failed": int((own & ~np.isfinite(pred)).sum()),
        "cv_folds": int(folds.max() + 1),
    }
    table = pd.DataFrame(
        {
            "crop": cd.crop,
            "family": family,
            "obs_id": cd.data["obs_id"].astype(str).to_numpy()[own],
            "fold": folds[own],
            "observed_kg_ha": obs_y[own],
            "predicted_kg_ha": pred[own],
        }
    )
    return metrics, table


def cross_validate(obs: pd.DataFrame, crop: str, family: str, cfg: FitOptions) -> tuple[dict[str, Any], pd.DataFrame]:
    """Leave-site-out cross-validation of one crop x family, folds run in parallel with Dask.

    Returns
    -------
    metrics, predictions
        ``metrics``: ``cv_rmse_kg_ha``, ``cv_bias_kg_ha`` (mean predicted - observed, kg
        N2O-N/ha, original scale, against the unfloored flux), ``cv_r2`` (1 - SSE/SST), counts.
        ``predictions``: one row per record with its fold.

    Notes
    -----
    Sites (``fit.group_by``) are dealt into ``fit.cv_folds`` folds (:func:`site_folds`); each
    fold's records are predicted by a model fitted without any record of their sites.
    """
    import dask

    if FIT_FLUX_COL not in obs.columns:
        obs, _ = prepare_observations(obs, cfg)
    cd = select_crop_data(obs, crop, cfg)
    folds, tasks = _cv_tasks(cd, family, cfg)
    return _cv_summary(cd, family, folds, list(dask.compute(*tasks)))


# ---------------------------------------------------------------------------------------------
# All crops
# ---------------------------------------------------------------------------------------------
def _safe_fit(cd: CropData, family: str, cfg: FitOptions) -> CropModel | str:
    try:
        model = _fit_frame(cd.data, cd.crop, family, cfg, cd.crop_effects, cd.reference_crop)
        model.pooled_with = cd.pooled_with
        return model
    except ModelError as e:
        return str(e)


def _r2(model: CropModel, cd: CropData) -> float:
    own = cd.data.loc[cd.data["crop"] == cd.crop]
    y = own[FLUX_COL].to_numpy(dtype=float)
    pred = model.mean_emission(own)
    sst = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((pred - y) ** 2) / sst) if sst > 0 else float("nan")


def coefficient_table(models: dict[tuple[str, str], CropModel], chosen: dict[str, str]) -> pd.DataFrame:
    """Coefficients with standard errors and normal 95 % intervals, one row per crop x family x term.

    ``models`` is keyed by (crop, family); ``chosen`` maps crop -> chosen family.
    """
    rows = []
    for (crop, family), m in sorted(models.items()):
        se = m.standard_errors()
        for name, b, s in zip(m.coef_names, m.coef, se):
            rows.append(
                {
                    "crop": crop,
                    "family": family,
                    "chosen": chosen.get(crop) == family,
                    "term": name,
                    "estimate": b,
                    "std_error": s,
                    "ci_low_95": b - Z95 * s,
                    "ci_high_95": b + Z95 * s,
                    "scale": "EF" if isinstance(m, Tier1Model) else "log",
                }
            )
    return pd.DataFrame(rows)


def covariance_table(models: dict[str, CropModel]) -> pd.DataFrame:
    """Long-form parameter covariance (crop, term_i, term_j, covariance) for Monte Carlo."""
    rows = []
    for crop, m in sorted(models.items()):
        for i, a in enumerate(m.coef_names):
            for j, b in enumerate(m.coef_names):
                rows.append({"crop": crop, "family": m.family, "term_i": a, "term_j": b, "covariance": m.cov[i, j]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# N-response forms and their model average (issue 12)
# ---------------------------------------------------------------------------------------------
def form_design(cd: CropData, cfg: FitOptions) -> tuple[CropModel, pd.DataFrame, list[str]]:
    """Design of the response forms of one crop: the skeleton (terms, centring, levels), a
    frame with N rate, flux, site and the covariate design columns, and those columns' names.

    The covariate design is the one of the single-family models (``x - center``, medians for
    missing values, indicators of water regime or crop for pooled fits), so every form and every
    family see the same covariates.
    """
    skel = _skeleton(cd.data, cd.crop, Family.MIXED_LOGNORMAL.value, cfg, cd.crop_effects, cd.reference_crop)
    skel.n_records, skel.n_groups = len(cd.data), int(cd.data[cfg.group_by].nunique())
    skel.pooled_with = list(cd.pooled_with)
    D = skel.design(cd.data)
    names = [n for n in skel.coef_names if n not in ("intercept", N_COL)]
    frame = pd.DataFrame(D[:, [skel.coef_names.index(n) for n in names]], columns=names)
    frame[N_COL] = cd.data[N_COL].to_numpy(dtype=float)
    # negative fluxes (measurement noise around zero) count as zero: the forms floor every flux
    # <= 0 at fit.flux_floor_kg_ha, as the single-family rule does (apply_flux_rule)
    frame[FLUX_COL] = np.clip(cd.data[FLUX_COL].to_numpy(dtype=float), 0.0, None)
    frame["_site"] = cd.data[cfg.group_by].astype(str).to_numpy()
    return skel, frame, names


def fit_forms(cd: CropData, cfg: FitOptions) -> tuple[AveragedModel, dict[str, Any]]:
    """Fit the candidate N-response forms of one crop, score them by leave-site-out CV, weight
    them and build the :class:`~pipeline.methods.models.AveragedModel`.

    Returns
    -------
    model, report
        The averaged model and a JSON-ready report: candidates, design spec (covariates, center,
        fill, reference, merged, defaults), CV scores per form, weighting (method, weights,
        reason), CV failures and the model-average JSON.

    Notes
    -----
    Forms and error model: :mod:`pipeline.methods.response_forms` (log E = log f(N) + g'x + u_site
    + e). CV: sites dealt into ``fit.cv_folds`` folds (``fit.cv_seed``; leave-one-site-out when
    there are fewer sites), each held-out site predicted as a new site; scored against the
    unfloored flux. Weights: ``fit.form_weighting`` on the held-out log predictive densities
    (stacking, Yao et al. 2018, by default). Zero fluxes are floored at ``fit.flux_floor_kg_ha``
    in every fold and in the final fits. Pooled crops are scored on all records fitted (own
    and donors').
    """
    skel, frame, names = form_design(cd, cfg)
    floor = cfg.flux_floor_kg_ha if cfg.nonpositive_flux == "floor" else None
    kw: dict[str, Any] = {
        "n_col": N_COL,
        "y_col": FLUX_COL,
        "site_col": "_site",
        "covariates": names,
        "retransform": cfg.retransform,
        "floor_kg_ha": floor,
    }
    cv = rf.leave_site_out_cv(frame, cfg.response_forms, n_folds=cfg.cv_folds, seed=cfg.cv_seed, **kw)
    st = rf.stacking_weights(cv.lpd, cv.families, method=cfg.form_weighting)
    fits, failed = rf.fit_families(frame, [f for f in cv.families if st.weights.get(f, 0.0) > 0], **kw)
    if not fits:
        raise ModelError(
            f"crop {cd.crop}: no N-response form could be fitted ("
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
            + "). Fix: set fit.model: single_family"
        )
    reason = st.reason + (
        "; failed on all records (weight renormalised over the others): "
        + "; ".join(f"{k}: {v}" for k, v in failed.items())
        if failed
        else ""
    )
    avg = rf.ModelAverage(forms=fits, weights=st.weights, reason=reason)
    model = AveragedModel.from_average(cd.crop, avg, skel)
    model.notes.append(f"model average of {', '.join(model.families)} ({cfg.form_weighting})")
    scores = cv.scores.reset_index()
    report = {
        "crop": cd.crop,
        "candidates": list(cfg.response_forms),
        "design": {
            "covariates": names,
            "center": skel.center,
            "fill": skel.fill,
            "reference": skel.reference,
            "merged": skel.merged,
            "defaults": skel.defaults,
            "pooled_with": list(cd.pooled_with),
        },
        "cv": {
            "folds": int(cv.folds.max() + 1),
            "seed": int(cfg.cv_seed),
            "n_records": int(len(frame)),
            "n_sites": int(frame["_site"].nunique()),
            "scores": scores.to_dict(orient="records"),
            "failures": cv.failures,
        },
        "weighting": {"method": st.method, "weights": st.weights, "final_weights": avg.weights, "reason": reason},
        "model_average": avg.to_json(),
    }
    return model, report


def _safe_forms(cd: CropData, cfg: FitOptions) -> tuple[AveragedModel, dict[str, Any]] | str:
    try:
        return fit_forms(cd, cfg)
    except ModelError as e:
        return str(e)


def form_cv_table(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per crop x form: CV scores (kg N2O-N/ha; mlpd per record) and the weight."""
    rows = []
    for crop, r in sorted(reports.items()):
        w = r["weighting"]["weights"]
        fw = r["weighting"]["final_weights"]
        for sc in r["cv"]["scores"]:
            rows.append(
                {
                    "crop": crop,
                    **sc,
                    "weight": w.get(sc["family"], 0.0),
                    "final_weight": fw.get(sc["family"], 0.0),
                    "weighting": r["weighting"]["method"],
                    "cv_folds": r["cv"]["folds"],
                    "n_sites": r["cv"]["n_sites"],
                }
            )
    return pd.DataFrame(rows)


def paired_control_ef(obs: pd.DataFrame, cfg: FitOptions) -> pd.DataFrame:
    """Fertilizer-induced EF from paired zero-N controls, per fertilised record.

    Parameters
    ----------
    obs
        Checked observations (fluxes in kg N2O-N/ha per period, N in kg N/ha).
    cfg
        ``fit.group_by`` defines the site.

    Returns
    -------
    pandas.DataFrame
        One row per record with N > 0 that has a zero-N control at the same site, crop, year and
        measurement duration (when those columns exist): ``crop``, site, ``year``, ``n_rate_kg_ha``,
        ``e_n_kg_ha`` (its flux), ``e0_kg_ha`` (mean flux of the controls), ``n_controls``,
        ``ef`` = (E_N - E_0) / N (kg N2O-N per kg N).

    Notes
    -----
    The classic difference method of IPCC EF1 and Bouwman (1996): the emission of the fertilised
    plot minus the emission of the unfertilised control, per kg N applied. Unlike the
    model-based EF(N) of the fit it uses no model, so it is the diagnostic the curves are compared
    with. Raw fluxes (not floored) are used.
    """
    keys = [cfg.group_by, "crop", *[c for c in ("year", DURATION_COL) if c in obs.columns]]
    d = obs.copy()
    for c in keys[2:]:
        d[c] = pd.to_numeric(d[c], errors="coerce").fillna(-1.0)
    n = d[N_COL].to_numpy(dtype=float)
    ctrl = (
        d.loc[n == 0]
        .groupby(keys, dropna=False)[FLUX_COL]
        .agg(["mean", "size"])
        .rename(columns={"mean": "e0_kg_ha", "size": "n_controls"})
        .reset_index()
    )
    fert = d.loc[n > 0, [*keys, "obs_id", N_COL, FLUX_COL]].rename(columns={FLUX_COL: "e_n_kg_ha"})
    out = fert.merge(ctrl, on=keys, how="inner")
    out["ef"] = (out["e_n_kg_ha"] - out["e0_kg_ha"]) / out[N_COL]
    for c in keys[2:]:
        out[c] = out[c].where(out[c] >= 0)
    cols = ["crop", cfg.group_by, *keys[2:], "obs_id", N_COL, "e_n_kg_ha", "e0_kg_ha", "n_controls", "ef"]
    return out[cols].sort_values(["crop", cfg.group_by, N_COL], kind="stable").reset_index(drop=True)


def fit_all(
    obs: pd.DataFrame, cfg: FitOptions, source: str = "observations.parquet"
) -> tuple[InventoryModel, dict[str, pd.DataFrame]]:
    """Fit every configured crop with every candidate family, cross-validate, choose.

    Parameters
    ----------
    obs
        Observations in the OBSERVATIONS schema.
    cfg
        The ``fit`` config section.
    source
        Name used in error messages when rows do not record their own file.

    Returns
    -------
    model, tables
        The fitted :class:`InventoryModel` (the chosen family per crop) and tables
        ``diagnostics``, ``coefficients`` (every candidate, ``chosen`` flag), ``covariance``
        (chosen models), ``cv_predictions`` and ``quarantine``.

    Notes
    -----
    Choice: the family pinned in ``fit.pin`` if any, else the lowest leave-site-out CV RMSE
    on the original scale (kg N2O-N/ha). All fits and folds run as one Dask graph.
    """
    import dask

    kept, quarantined = prepare_observations(obs, cfg, source)
    period_note = kept.attrs.get("period_note", "")
    crop_data = {crop: select_crop_data(kept, crop, cfg) for crop in cfg.crops}
    families = list(dict.fromkeys([*cfg.candidates, *(cfg.pin[c] for c in cfg.crops if c in cfg.pin)]))
    fit_tasks, cv_tasks, cv_folds, form_tasks = {}, {}, {}, {}
    for crop, cd in crop_data.items():
        for fam in families:
            fit_tasks[(crop, fam)] = dask.delayed(_safe_fit)(cd, fam, cfg)
            cv_folds[(crop, fam)], cv_tasks[(crop, fam)] = _cv_tasks(cd, fam, cfg)
        if cfg.model == "model_average":
            form_tasks[crop] = dask.delayed(_safe_forms)(cd, cfg)
    fits, cvs, forms = dask.compute(fit_tasks, cv_tasks, form_tasks)
    form_reports: dict[str, dict[str, Any]] = {}

    fitted: dict[tuple[str, str], CropModel] = {}
    diag_rows, cv_tables = [], []
    chosen: dict[str, CropModel] = {}
    for crop, cd in crop_data.items():
        metrics = {}
        for fam in families:
            m, t = _cv_summary(cd, fam, cv_folds[(crop, fam)], list(cvs[(crop, fam)]))
            metrics[fam] = m
            cv_tables.append(t)
        ok = {fam: fits[(crop, fam)] for fam in families if isinstance(fits[(crop, fam)], CropModel)}
        if not ok:
            raise ModelError(
                f"crop {crop}: no candidate model could be fitted ("
                + "; ".join(str(fits[(crop, f)]) for f in families)
                + ")"
            )
        if crop in cfg.pin:
            pick = cfg.pin[crop]
            if pick not in ok:
                raise ModelError(
                    f"crop {crop}: the pinned family {pick} failed ({fits[(crop, pick)]}). "
                    "Fix: remove fit.pin for this crop"
                )
            reason = f"pinned in config (fit.pin.{crop})"
        else:
            scored = {f: metrics[f]["cv_rmse_kg_ha"] for f in ok if np.isfinite(metrics[f]["cv_rmse_kg_ha"])}
            pick = min(scored, key=lambda f: (scored[f], f)) if scored else sorted(ok)[0]
            reason = (
                (
                    "lowest leave-site-out CV RMSE ("
                    + ", ".join(f"{f} {scored[f]:.4g}" for f in sorted(scored))
                    + " kg N2O-N/ha)"
                )
                if scored
                else "no CV score available; first family that fitted"
            )
        chosen[crop] = ok[pick]
        if cfg.model == "model_average":
            got = forms[crop]
            if isinstance(got, str):
                raise ModelError(
                    f"crop {crop}: the model average failed ({got}). Fix: set fit.model: single_family, "
                    "or drop the failing forms from fit.response_forms"
                )
            avg_model, form_reports[crop] = got
            chosen[crop] = avg_model
            fitted[(crop, Family.MODEL_AVERAGE.value)] = avg_model
            diag_rows.append(
                {
                    "crop": crop,
                    "family": Family.MODEL_AVERAGE.value,
                    "chosen": True,
                    "reason": "fit.model: model_average; " + form_reports[crop]["weighting"]["reason"],
                    "n_records": cd.own_records,
                    "n_sites": cd.own_sites,
                    "n_records_fitted": len(cd.data),
                    "pooled_with": ",".join(cd.pooled_with),
                    "r2_insample": _r2(avg_model, cd),
                    "fit_error": "",
                    "measurement_period": period_note,
                    "notes": " | ".join(avg_model.notes),
                }
            )
            pick = Family.MODEL_AVERAGE.value
        n_floor = int(cd.data.loc[cd.data["crop"] == crop, "floored"].sum())
        n_quar = int((quarantined["crop"] == crop).sum()) if len(quarantined) else 0
        for fam in families:
            m = fits[(crop, fam)]
            is_model = isinstance(m, CropModel)
            if is_model:
                fitted[(crop, fam)] = m
            row = {
                "crop": crop,
                "family": fam,
                "chosen": fam == pick,
                "reason": reason if fam == pick else "",
                "n_records": cd.own_records,
                "n_sites": cd.own_sites,
                "n_records_fitted": len(cd.data),
                "pooled_with": ",".join(cd.pooled_with),
                "n_nonpositive_floored": n_floor,
                "n_nonpositive_quarantined": n_quar,
                "r2_insample": _r2(m, cd) if is_model else float("nan"),
                **metrics[fam],
                "n_slope_per_kg_n_ha": float(m.coef[m.coef_names.index(N_COL)]) if is_model else float("nan"),
                "smearing": m.smearing if is_model else float("nan"),
                "fit_error": "" if is_model else m,
                "measurement_period": period_note,
                "notes": " | ".join(m.notes) if is_model else "",
            }
            diag_rows.append(row)
    diagnostics = pd.DataFrame(diag_rows).sort_values(["crop", "family"], kind="stable").reset_index(drop=True)
    coefs = coefficient_table(fitted, {c: m.family for c, m in chosen.items()})
    cov = covariance_table(chosen)
    cv_pred = pd.concat(cv_tables, ignore_index=True).sort_values(["crop", "family", "obs_id"], kind="stable")
    inv = InventoryModel(
        models=chosen,
        kind="fitted",
        provenance={
            "fit_config": cfg.model_dump(mode="json"),
            "chosen": {c: m.family for c, m in sorted(chosen.items())},
            "measurement_period": period_note,
            **(
                {"form_weights": {c: r["weighting"]["final_weights"] for c, r in sorted(form_reports.items())}}
                if form_reports
                else {}
            ),
        },
    )
    quarantine_cols = [
        c
        for c in ("obs_id", "site_id", "crop", N_COL, FLUX_COL, "source_file", "source_row", "reason")
        if c in quarantined.columns
    ]
    return inv, {
        "diagnostics": diagnostics,
        "coefficients": coefs,
        "covariance": cov,
        "cv_predictions": cv_pred.reset_index(drop=True),
        "quarantine": quarantined[quarantine_cols].reset_index(drop=True),
        "form_cv": form_cv_table(form_reports),
        "response_forms": form_reports,
        "paired_ef": paired_control_ef(kept, cfg),
    }


# ---------------------------------------------------------------------------------------------
# EF(N) curves
# ---------------------------------------------------------------------------------------------
def reference_rows(model: CropModel, n_grid: np.ndarray, climate: str) -> pd.DataFrame:
    """Rows at each N rate (kg N/ha) with covariates at the training means of ``model`` (the
    measurement period at the model's reference period, ``fit.period_reference``)."""
    X = pd.DataFrame({N_COL: n_grid})
    for cov, value in model.center.items():
        X[cov] = model.fill.get(PERIOD_COL, 0.0) if cov == PERIOD_COL else value
    X["climate"] = climate
    X["crop"] = model.crop
    return X


def ef_curves(fitted: InventoryModel, tier1: InventoryModel, cfg: FitOptions) -> pd.DataFrame:
    """Fertilizer-induced EF(N) = (E(N) - E(0)) / N per crop, fitted and Tier 1, with 95 % bands.

    Returns
    -------
    pandas.DataFrame
        crop, model, climate, n_rate_kg_ha, e_kg_ha, e0_kg_ha (kg N2O-N/ha), ef (kg N2O-N per
        kg N), ef_lo95, ef_hi95 (2.5 and 97.5 percentiles over ``fit.ef_curve_draws`` parameter
        draws). Fitted curves use covariates at their training means; they do not depend on
        climate and are listed once (``climate = "all"``).
    """
    n_grid = np.arange(10.0, cfg.ef_curve_max_n_kg_ha + 1e-9, 10.0)
    rows = []
    for i, crop in enumerate(sorted(fitted.models)):
        for kind, inv in (("fitted", fitted), ("tier1", tier1)):
            if crop not in inv.models:
                continue
            m = inv.models[crop]
            climates = ["wet", "dry"] if m.tier1_rule == "climate_fertilizer" else ["all"]
            for climate in climates:
                ref = fitted.models[crop]
                X = reference_rows(ref, n_grid, "wet" if climate == "all" else climate)
                e, e0 = m.mean_emission(X), m.background(X)
                rng = np.random.default_rng([cfg.cv_seed, i, 0 if kind == "fitted" else 1])
                P = m.draw_params(rng, cfg.ef_curve_draws)
                ef_draws = (m.mean_emission(X, P) - m.background(X, P)) / n_grid
                rows.append(
                    pd.DataFrame(
                        {
                            "crop": crop,
                            "model": kind if kind == "tier1" else m.family,
                            "climate": climate,
                            N_COL: n_grid,
                            "e_kg_ha": e,
                            "e0_kg_ha": e0,
                            "ef": (e - e0) / n_grid,
                            "ef_lo95": np.percentile(ef_draws, 2.5, axis=0),
                            "ef_hi95": np.percentile(ef_draws, 97.5, axis=0),
                        }
                    )
                )
                if isinstance(m, AveragedModel):
                    rows += _form_curves(m, X, n_grid, cfg, i)
    return pd.concat(rows, ignore_index=True)


def _form_curves(m: AveragedModel, X: pd.DataFrame, n_grid: np.ndarray, cfg: FitOptions, i: int) -> list[pd.DataFrame]:
    """EF(N) of each form of a model average (``model = "form:<family>"``, with its weight)."""
    out = []
    N = X[N_COL].to_numpy(dtype=float)
    Z = m.covariates(X)
    for j, fam in enumerate(m.families):
        f = m.form(fam)
        e, e0 = f.predict_mean(N, Z), f.predict_mean(np.zeros_like(N), Z)
        P = f.draw_params(np.random.default_rng([cfg.cv_seed, i, 2 + j]), cfg.ef_curve_draws)
        ef_draws = (f.predict_draws(P, N, Z) - f.predict_draws(P, np.zeros_like(N), Z)) / n_grid
        out.append(
            pd.DataFrame(
                {
                    "crop": m.crop,
                    "model": f"form:{fam}",
                    "climate": "all",
                    N_COL: n_grid,
                    "e_kg_ha": e,
                    "e0_kg_ha": e0,
                    "ef": (e - e0) / n_grid,
                    "ef_lo95": np.percentile(ef_draws, 2.5, axis=0),
                    "ef_hi95": np.percentile(ef_draws, 97.5, axis=0),
                    "weight": m.weights[fam],
                }
            )
        )
    return out
