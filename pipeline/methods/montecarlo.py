"""Emissions per unit x crop x year with Monte Carlo uncertainty (used by the estimate stage).

The emission of one county, crop and year is its sown area times the model's expected emission
per hectare at that county's own N rate and covariates (never at an averaged N rate: the
exponential model is convex, so averaging first would underestimate; DOMAIN.md pitfall 4).
Uncertainty follows IPCC Approach 2: every Monte Carlo draw takes one set of model parameters
for the whole country (a national total is not a sum of independent county draws) and one
multiplicative error per province and crop for N rate and for sown area (survey errors are
systematic within a province's statistics).

Memory stays flat in the number of draws: work is split into tasks of (year, block of rows)
sized so that draws x rows stays under a fixed budget; each task returns per-row summaries and
per-draw province sums, which are small.

References
----------
IPCC (2006) Guidelines Vol. 1 Ch. 3 (Approach 2, Monte Carlo); Vol. 4 Ch. 11 (indirect N2O:
EF4, EF5, FracGASF, FracLEACH).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline import units
from pipeline.errors import ModelError
from pipeline.methods.models import AveragedModel, CropModel, InventoryModel
from pipeline.methods.options import EstimateOptions

log = logging.getLogger(__name__)

QUANTILES = (0.025, 0.5, 0.975)

#: Indirect N2O parameters by IPCC edition: EF4 (volatilised N), EF5 (leached N), FracGASF,
#: FracLEACH (kg N per kg N). 2006: Vol. 4 Ch. 11 Table 11.3; 2019 Refinement: Table 11.3
#: (aggregated values; FracLEACH only on wet-climate or irrigated land).
INDIRECT = {
    "2006": {"ef4": 0.010, "ef5": 0.0075, "frac_gasf": 0.10, "frac_leach": 0.30},
    "2019": {"ef4": 0.010, "ef5": 0.011, "frac_gasf": 0.11, "frac_leach": 0.24},
}


@dataclass(frozen=True)
class Draws:
    """Every random quantity of a Monte Carlo run, drawn once so chunking cannot change it.

    ``params[crop]`` is (n, k) (model-average crops: (n, 1 + k), column 0 the form drawn);
    ``n_mult`` and ``area_mult`` are (n, n_provinces, n_crops) multiplicative errors indexed by
    ``provinces`` and ``crops``; ``forms[crop]`` is the (n,) form name of each draw of a
    model-average crop (absent for single-family models).
    """

    params: dict[str, np.ndarray]
    n_mult: np.ndarray
    area_mult: np.ndarray
    provinces: np.ndarray
    crops: tuple[str, ...]
    forms: dict[str, np.ndarray] = field(default_factory=dict)


def lognormal_multiplier(rng: np.random.Generator, rel_error: float, shape: tuple[int, ...]) -> np.ndarray:
    """Mean-one lognormal multipliers with coefficient of variation ``rel_error``.

    Notes
    -----
    With s^2 = ln(1 + cv^2), m = exp(z s - s^2/2), z ~ N(0, 1) has E[m] = 1 and CV = cv.
    """
    if rel_error == 0:
        return np.ones(shape)
    s2 = np.log1p(rel_error**2)
    return np.exp(rng.standard_normal(shape) * np.sqrt(s2) - s2 / 2)


def make_draws(model: InventoryModel, provinces: np.ndarray, crops: tuple[str, ...], cfg: EstimateOptions) -> Draws:
    """Draw model parameters and activity errors for ``cfg.draws`` Monte Carlo iterations.

    Model-average crops draw the form of each iteration too (column 0 of their parameter rows);
    with ``cfg.form_draws == "shared"`` (default) one uniform per iteration picks every crop's
    form (comonotone), with ``"independent"`` each crop draws its own.

    Raises
    ------
    ModelError
        A crop's coefficient covariance is not positive semi-definite (a failed fit would
        otherwise give draws of 1e6 on the log scale and overflowing emissions).
    """
    for c in crops:
        _check_covariance(model.for_crop(c))
    rng = np.random.default_rng(cfg.seed)
    averaged = [c for c in crops if isinstance(model.for_crop(c), AveragedModel)]
    # One uniform per iteration chooses the form of every model-average crop (comonotone form
    # draws: all crops take their more convex forms together), unless the config asks for
    # independent form draws per crop.
    shared_u = rng.random(cfg.draws) if averaged and getattr(cfg, "form_draws", "shared") == "shared" else None
    params, forms = {}, {}
    for c in crops:
        m = model.for_crop(c)
        if isinstance(m, AveragedModel):
            params[c] = m.draw_params(rng, cfg.draws, u=shared_u)
            forms[c] = m.draw_families(params[c])
        else:
            params[c] = m.draw_params(rng, cfg.draws)
    shape = (cfg.draws, len(provinces), len(crops))
    n_mult = lognormal_multiplier(rng, cfg.rel_error_n_rate, shape)
    area_mult = lognormal_multiplier(rng, cfg.rel_error_area, shape)
    return Draws(params, n_mult, area_mult, np.asarray(provinces), tuple(crops), forms)


def _check_covariance(m: CropModel) -> None:
    """Raise :class:`ModelError` unless ``m.cov`` is finite, symmetric and positive semi-definite.

    Notes
    -----
    Both tolerances are relative to the scale of the matrix, ``s = max |cov_ij|``: symmetric when
    ``max |cov - cov^T| <= 1e-8 s`` (an elementwise relative test fails on entries near 1e-22 that
    differ only by rounding), positive semi-definite when the smallest eigenvalue of the
    symmetric part is ``>= -1e-8 s``. The message names the test that failed.
    """
    cov = np.asarray(m.cov, dtype=float)
    problem = None
    if not np.all(np.isfinite(cov)):
        problem = "has non-finite entries"
    elif cov.size:
        scale = float(np.max(np.abs(cov)))
        asym = float(np.max(np.abs(cov - cov.T)))
        if asym > 1e-8 * scale:
            problem = (
                f"is not symmetric (largest |cov - cov^T| = {asym:.3g}, more than 1e-8 x the largest entry {scale:.3g})"
            )
        else:
            eig_min = float(np.linalg.eigvalsh((cov + cov.T) / 2.0).min())
            if eig_min < -1e-8 * scale:
                problem = (
                    f"is not positive semi-definite (smallest eigenvalue {eig_min:.3g}, below "
                    f"-1e-8 x the largest entry {scale:.3g})"
                )
    if problem is not None:
        raise ModelError(
            f"crop {m.crop}: the {m.family} coefficient covariance {problem}, so its Monte "
            "Carlo draws are meaningless (a failed fit). "
            f"Fix: re-run `cropn2o fit`, or pin the other family in fit.pin.{m.crop}"
        )


def emission_draws(
    m: CropModel, X: pd.DataFrame, params: np.ndarray, n_mult: np.ndarray, background: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-hectare emissions of rows X under each draw.

    Parameters
    ----------
    m
        The crop's model.
    X
        Activity rows of that crop.
    params
        (n_draws, k) parameter draws.
    n_mult
        (n_draws, n_rows) multiplicative N-rate errors.
    background
        ``"separate"``: the first array is fertilizer-induced E(N) - E(0); ``"included"``: E(N).

    Returns
    -------
    emission, background
        Two (n_draws, n_rows) arrays in kg N2O-N/ha per season.

    Notes
    -----
    For the exponential families, log E is linear in N with slope b, so
    E(N m) = E(N) exp(b N (m - 1)); for Tier 1, E(N m) = m E(N). This applies the N error
    without rebuilding the design matrix for every draw. A model average
    (:class:`~pipeline.methods.models.AveragedModel`) evaluates each draw's own form at N m.
    """
    e0 = m.background(X, params)
    if isinstance(m, AveragedModel):  # every form evaluated at its own N x multiplier
        e = m.mean_emission(X, params, n_mult=n_mult)
        return (e - e0 if background == "separate" else e), e0
    e_nominal = m.mean_emission(X, params)
    j = m.n_coef_index()
    if j is None:
        e = e_nominal * n_mult
    else:
        n = X["n_rate_kg_ha"].to_numpy(dtype=float)
        e = e_nominal * np.exp(params[:, [j]] * n[None, :] * (n_mult - 1.0))
    return (e - e0 if background == "separate" else e), e0


def indirect_per_ha(X: pd.DataFrame, edition: str) -> np.ndarray:
    """Indirect N2O-N (kg/ha) from volatilisation and leaching of applied synthetic N.

    Notes
    -----
    N2O-N = N x FracGASF x EF4 + N x FracLEACH x EF5; in the 2019 Refinement leaching applies
    only where the climate is wet or the land irrigated (here: irrigated_fraction > 0 counts
    for its irrigated share).
    """
    p = INDIRECT[edition]
    n = X["n_rate_kg_ha"].to_numpy(dtype=float)
    leach_share = np.ones(len(X))
    if edition == "2019":
        wet = (X["climate"].astype(str) == "wet").to_numpy()
        leach_share = np.where(wet, 1.0, X["irrigated_fraction"].to_numpy(dtype=float))
    return n * p["frac_gasf"] * p["ef4"] + n * p["frac_leach"] * p["ef5"] * leach_share


def expected_emissions(activity: pd.DataFrame, model: InventoryModel, background: str = "separate") -> np.ndarray:
    """Point estimate, kg N2O-N per activity row (area x E per ha at the central parameters).

    Used for counterfactual runs (N rate, area or irrigation held) by the trend stage.
    """
    per_ha = model.mean_emission(activity)
    if background == "separate":
        X0 = activity.assign(n_rate_kg_ha=0.0)
        per_ha = per_ha - model.mean_emission(X0)
    return activity["area_ha"].to_numpy(dtype=float) * per_ha


def _summarise(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and 2.5/50/97.5 % quantiles over draws (axis 0)."""
    q = np.quantile(values, QUANTILES, axis=0)
    return {"mean": values.mean(axis=0), "p2_5": q[0], "median": q[1], "p97_5": q[2]}


@dataclass(frozen=True)
class _Block:
    """Rows of one year and one crop, sorted by province then county (a contiguous slice)."""

    year: int
    crop_index: int
    rows: slice
    prov_index: np.ndarray


def _task(
    X: pd.DataFrame,
    block: _Block,
    m: CropModel,
    params: np.ndarray,
    n_mult_pc: np.ndarray,
    a_mult_pc: np.ndarray,
    background: str,
    edition: str,
    indirect: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One (year, crop, block of rows) task.

    Returns per-row summaries (``mean``, ``p2_5``, ``median``, ``p97_5``, ``background_mean``
    over draws; ``central`` and ``background_central``, the plug-in point estimate at the
    nominal activity data), the province indices present and the per-draw province sums, shape
    (n_draws, n_present). ``n_mult_pc`` and ``a_mult_pc`` are the (n_draws, n_provinces)
    activity errors of this crop.
    """
    pi = block.prov_index
    n_mult = n_mult_pc[:, pi]
    a_mult = a_mult_pc[:, pi]
    area = X["area_ha"].to_numpy(dtype=float)
    e_ha, e0_ha = emission_draws(m, X, params, n_mult, background)
    total = e_ha * area[None, :] * a_mult
    bg = e0_ha * area[None, :] * a_mult
    if indirect:
        total = total + indirect_per_ha(X, edition)[None, :] * n_mult * area[None, :] * a_mult
    # Rows are sorted by province, so each province is one contiguous run of columns.
    starts = np.flatnonzero(np.r_[True, pi[1:] != pi[:-1]])
    prov_sums = np.add.reduceat(total, starts, axis=1)
    stats = _summarise(total)
    stats["background_mean"] = bg.mean(axis=0)
    e_c, e0_c = m.mean_emission(X), m.background(X)  # plug-in: the estimates, no draws
    central = (e_c - e0_c if background == "separate" else e_c) * area
    if indirect:
        central = central + indirect_per_ha(X, edition) * area
    stats["central"] = central
    stats["background_central"] = e0_c * area
    return stats, pi[starts], prov_sums


def _blocks(
    activity: pd.DataFrame, crops: tuple[str, ...], provinces: np.ndarray, n_draws: int, max_cells: int
) -> list[_Block]:
    """Tasks of one year, one crop and at most ``max_cells // n_draws`` rows (memory flat in draws).

    ``activity`` must be sorted by year, crop, province and county.
    """
    rows_per_task = max(1, max_cells // n_draws)
    year = activity["year"].to_numpy()
    crop = activity["crop"].to_numpy()
    prov_index = np.searchsorted(provinces, activity["province_code"].to_numpy())
    crop_index = {c: i for i, c in enumerate(crops)}
    edges = np.flatnonzero(np.r_[True, (year[1:] != year[:-1]) | (crop[1:] != crop[:-1]), True])
    blocks = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        for start in range(lo, hi, rows_per_task):
            stop = min(start + rows_per_task, hi)
            blocks.append(_Block(int(year[lo]), crop_index[crop[lo]], slice(start, stop), prov_index[start:stop]))
    return blocks


def estimate(
    activity: pd.DataFrame, model: InventoryModel, cfg: EstimateOptions, edition: str = "2019"
) -> dict[str, pd.DataFrame]:
    """Monte Carlo inventory of ``activity`` under ``model``.

    Parameters
    ----------
    activity
        :data:`pipeline.contract.ACTIVITY` rows.
    model
        Fitted or Tier 1 :class:`~pipeline.models.InventoryModel`.
    cfg
        Draws, seed, activity errors, background and indirect settings.
    edition
        IPCC edition for the indirect-emission parameters.

    Returns
    -------
    dict
        ``county`` (one row per county x crop x year), ``province`` and ``national`` (per
        crop and ``"all"``), ``national_draws`` (draw x year x crop, national sums, with the
        ``form`` each draw took for model-average crops), ``province_draws`` (draw x year x
        province, all-crop sums). Emission columns are kg N2O-N per year:
        ``n2o_n_kg_central`` is the plug-in central estimate, the ``mean``, ``median`` and
        quantiles are over the draws (:data:`COLUMN_DESCRIPTIONS`); the national table's
        ``forms_drawn`` gives the share of draws per form.

    Notes
    -----
    Tasks run one BLAS thread each: the parallelism is Dask's, and a multi-threaded BLAS
    call on the thin (draws x k) @ (k x rows) products is ~30x slower than a single thread.
    """
    import dask
    from threadpoolctl import threadpool_limits

    activity = activity.sort_values(["year", "crop", "province_code", "county_code"]).reset_index(drop=True)
    crops = tuple(sorted(activity["crop"].unique()))
    provinces = np.sort(activity["province_code"].unique())
    draws = make_draws(model, provinces, crops, cfg)
    blocks = _blocks(activity, crops, provinces, cfg.draws, cfg.max_cells_per_task)
    # Inputs are graph constants of their own (each block's rows; each crop's draws, shared by
    # its blocks), so a distributed client scatters them to the workers instead of sending
    # them inside the task graph (pipeline.parallel).
    per_crop = {
        c: tuple(
            dask.delayed(a, pure=False)
            for a in (
                draws.params[c],
                np.ascontiguousarray(draws.n_mult[:, :, i]),
                np.ascontiguousarray(draws.area_mult[:, :, i]),
            )
        )
        for i, c in enumerate(crops)
    }
    tasks = []
    for b in blocks:
        crop = crops[b.crop_index]
        params_d, n_mult_d, a_mult_d = per_crop[crop]
        tasks.append(
            dask.delayed(_task)(
                dask.delayed(activity.iloc[b.rows], pure=False),
                b,
                model.for_crop(crop),
                params_d,
                n_mult_d,
                a_mult_d,
                cfg.background,
                edition,
                cfg.indirect,
            )
        )
    with threadpool_limits(limits=1, user_api="blas"):
        results = dask.compute(*tasks)

    stat_names = ("central", "mean", "p2_5", "median", "p97_5")
    cols = {k: np.empty(len(activity)) for k in (*stat_names, "background_mean", "background_central")}
    years = sorted(int(y) for y in activity["year"].unique())
    by_year = {y: np.zeros((cfg.draws, len(provinces), len(crops))) for y in years}
    for b, (stats, present, prov_sums) in zip(blocks, results):
        for k, v in stats.items():
            cols[k][b.rows] = v
        by_year[b.year][:, present, b.crop_index] += prov_sums
    county = activity[
        ["county_code", "province_code", "year", "crop", "area_ha", "n_rate_kg_ha", "water_input_mm"]
    ].copy()
    for k in stat_names:
        county[f"n2o_n_kg_{k}"] = cols[k]
    county["background_n2o_n_kg_mean"] = cols["background_mean"]
    county["background_n2o_n_kg_central"] = cols["background_central"]
    county = county.sort_values(["county_code", "crop", "year"]).reset_index(drop=True)

    # Per-draw sums -> quantiles of province and national totals. Their means are additive and
    # come from the county table (_attach_activity), so the three tables agree to rounding.
    means_area = activity.assign(n_applied_kg=activity["area_ha"] * activity["n_rate_kg_ha"])
    prov_parts, nat_parts, draw_rows, prov_draw_rows = [], [], [], []
    for y in years:
        s = by_year[y]  # (draws, provinces, crops)
        for ci, crop in [*enumerate(crops), (None, "all")]:
            per_prov = s[:, :, ci] if ci is not None else s.sum(axis=2)
            nat = per_prov.sum(axis=1)
            if ci is None:  # every draw of every province's all-crop total: intervals of any region
                prov_draw_rows.append(
                    pd.DataFrame(
                        {
                            "draw": np.repeat(np.arange(per_prov.shape[0]), per_prov.shape[1]),
                            "year": y,
                            "province_code": np.tile(provinces.astype(int), per_prov.shape[0]),
                            "n2o_n_kg": per_prov.ravel(),
                        }
                    )
                )
            prov_parts.append(
                pd.DataFrame(
                    {"province_code": provinces.astype(int), "year": y, "crop": crop, **_quantile_columns(per_prov)}
                )
            )
            nat_parts.append(
                pd.DataFrame(
                    {
                        "year": [y],
                        "crop": [crop],
                        **_quantile_columns(nat[:, None]),
                        "forms_drawn": _forms_drawn(draws, crop),
                    }
                )
            )
            draw_rows.append(
                pd.DataFrame(
                    {
                        "draw": np.arange(len(nat)),
                        "year": y,
                        "crop": crop,
                        "n2o_n_kg": nat,
                        "form": _form_of_draw(draws, crop),
                    }
                )
            )
    province = _attach_activity(pd.concat(prov_parts, ignore_index=True), means_area, ["province_code"], county)
    national = _attach_activity(pd.concat(nat_parts, ignore_index=True), means_area, [], county)
    return {
        "county": county,
        "province": province,
        "national": national,
        "national_draws": pd.concat(draw_rows, ignore_index=True),
        "province_draws": pd.concat(prov_draw_rows, ignore_index=True),
    }


def _form_of_draw(draws: Draws, crop: str) -> np.ndarray:
    """Form of each draw: the family of a model-average crop, ``"crop:form; ..."`` for the
    all-crop total, ``""`` for single-family models."""
    if crop != "all":
        f = draws.forms.get(crop)
        return f.astype(str) if f is not None else np.full(draws.n_mult.shape[0], "", dtype=object)
    if not draws.forms:
        return np.full(draws.n_mult.shape[0], "", dtype=object)
    parts = [np.char.add(f"{c}:", draws.forms[c].astype(str)) for c in sorted(draws.forms)]
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "; "), p)
    return out.astype(object)


def _forms_drawn(draws: Draws, crop: str) -> str:
    """Share of Monte Carlo draws per form, e.g. ``"linear 0.31, saturating 0.69"`` (per crop;
    ``"crop: ...; crop: ..."`` for the total; ``""`` without a model average)."""

    def share(f: np.ndarray) -> str:
        names, counts = np.unique(f.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return ", ".join(f"{names[i]} {counts[i] / f.size:.3f}" for i in order)

    if crop != "all":
        f = draws.forms.get(crop)
        return share(f) if f is not None else ""
    return "; ".join(f"{c}: {share(draws.forms[c])}" for c in sorted(draws.forms))


def _quantile_columns(values: np.ndarray) -> dict[str, np.ndarray]:
    """2.5/50/97.5 % quantiles over draws (axis 0) as output columns."""
    stats = _summarise(values)
    return {f"n2o_n_kg_{k}": stats[k] for k in ("median", "p2_5", "p97_5")}


def _attach_activity(
    table: pd.DataFrame, activity: pd.DataFrame, keys: list[str], county: pd.DataFrame
) -> pd.DataFrame:
    """Add area, applied N and the additive means (summed from the county table)."""

    def sums(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
        per_crop = frame.groupby([*keys, "year", "crop"])[cols].sum().reset_index()
        total = frame.groupby([*keys, "year"])[cols].sum().reset_index().assign(crop="all")
        return pd.concat([per_crop, total], ignore_index=True)

    act = sums(activity, ["area_ha", "n_applied_kg"])
    means = sums(
        county, ["n2o_n_kg_central", "n2o_n_kg_mean", "background_n2o_n_kg_central", "background_n2o_n_kg_mean"]
    )
    out = table.merge(act, on=[*keys, "year", "crop"], how="left")
    return out.merge(means, on=[*keys, "year", "crop"], how="left")


def add_derived(table: pd.DataFrame, gwp: str) -> pd.DataFrame:
    """N2O mass and CO2-equivalent of the central estimate and of the mean over draws, with the
    GWP set named; units column."""
    out = table.copy()
    for stat in ("central", "mean"):
        if f"n2o_n_kg_{stat}" in out.columns:
            out[f"n2o_kg_{stat}"] = units.n2o_n_to_n2o(out[f"n2o_n_kg_{stat}"].to_numpy())
            out[f"co2e_kg_{stat}"] = units.n2o_n_to_co2e(out[f"n2o_n_kg_{stat}"].to_numpy(), gwp)
    out["gwp"] = f"GWP100 {gwp}"
    return out


COLUMN_ORDER = [
    "area_ha",
    "n_applied_kg",
    "n2o_n_kg_central",
    "n2o_n_kg_mean",
    "n2o_n_kg_median",
    "n2o_n_kg_p2_5",
    "n2o_n_kg_p97_5",
    "background_n2o_n_kg_central",
    "background_n2o_n_kg_mean",
    "n2o_kg_central",
    "co2e_kg_central",
    "n2o_kg_mean",
    "co2e_kg_mean",
    "gwp",
    "forms_drawn",
]

#: What each emission column is (for table metadata and docs/estimate.md): the central estimate
#: is the plug-in, the interval and the mean come from the Monte Carlo draws.
COLUMN_DESCRIPTIONS = {
    "n2o_n_kg_central": "central estimate: plug-in (parameter estimates, retransformed to the mean, model "
    "average = weighted sum of the forms' plug-ins) at the nominal activity data; unbiased "
    "for the expected emission; kg N2O-N/yr",
    "n2o_n_kg_mean": "mean over Monte Carlo draws (runs above the central estimate by the Jensen gap of "
    "exp(x'b) over parameter draws); kg N2O-N/yr",
    "n2o_n_kg_median": "median over Monte Carlo draws; kg N2O-N/yr",
    "n2o_n_kg_p2_5": "2.5 % quantile over Monte Carlo draws (form, parameters, activity errors); kg N2O-N/yr",
    "n2o_n_kg_p97_5": "97.5 % quantile over Monte Carlo draws (form, parameters, activity errors); kg N2O-N/yr",
    "background_n2o_n_kg_central": "plug-in emission at N = 0 (background); kg N2O-N/yr",
    "background_n2o_n_kg_mean": "mean over draws of the emission at N = 0; kg N2O-N/yr",
    "forms_drawn": "share of Monte Carlo draws per N-response form (model average); empty for one family",
}


def order_table(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    crop_order = {c: i for i, c in enumerate(["all", "rice", "wheat", "maize", "vegetables", "other_upland"])}
    t = table.assign(_c=table["crop"].map(crop_order).fillna(99))
    t = t.sort_values([*keys, "year", "_c", "crop"]).drop(columns="_c")
    return t[[*keys, "year", "crop", *[c for c in COLUMN_ORDER if c in t.columns]]].reset_index(drop=True)
