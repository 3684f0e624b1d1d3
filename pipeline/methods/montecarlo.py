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

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
import pandas as pd

from pipeline import units
from pipeline.errors import ModelError
from pipeline.methods.models import AveragedModel, CropModel, InventoryModel, Rows
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
    m: CropModel, X: Rows, params: np.ndarray, n_mult: np.ndarray, background: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-hectare emissions of rows X under each draw.

    Parameters
    ----------
    m
        The crop's model.
    X
        Activity rows of that crop, or those rows prepared by ``m`` (:meth:`CropModel.prepare`).
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
    The products are taken in place, in the order written above (same bits, two draws x rows
    temporaries fewer), so the first array returned is always a fresh one.
    """
    R = m.prepare(X)
    e0 = m.background(R, params)
    if isinstance(m, AveragedModel):  # every form evaluated at its own N x multiplier
        e = _writable(m.mean_emission(R, params, n_mult=n_mult))
    else:
        e = _writable(m.mean_emission(R, params))
        j = m.n_coef_index()
        if j is None:
            e *= n_mult
        else:
            n = R.n_rate_kg_ha
            g = params[:, [j]] * n[None, :]
            g *= n_mult - 1.0
            e *= np.exp(g, out=g)
            del g
    if background == "separate":
        e -= e0
    return e, e0


def _writable(a: np.ndarray) -> np.ndarray:
    """``a`` if it owns its (writable) data, else a copy: a model may return a view of its own."""
    return a if a.flags.owndata and a.flags.writeable else a.copy()


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


def _summarise(values: np.ndarray, overwrite: bool = False) -> dict[str, np.ndarray]:
    """Mean and 2.5/50/97.5 % quantiles over draws (axis 0).

    With ``overwrite`` the quantiles partition ``values`` in place instead of a copy (one
    draws x rows array less in a task; the same numbers: the order statistics are exact).
    """
    mean = values.mean(axis=0)
    q = np.quantile(values, QUANTILES, axis=0, overwrite_input=overwrite)
    return {"mean": mean, "p2_5": q[0], "median": q[1], "p97_5": q[2]}


@dataclass(frozen=True)
class _Block:
    """Rows of one crop, sorted by year, province and county (a contiguous slice of the sorted
    activity; it may span years)."""

    crop_index: int
    rows: slice


#: One task's rows: the rows themselves, or a zero-argument callable that reads them where the
#: task runs (:class:`TaskRows`).
RowsOrLoader: TypeAlias = "pd.DataFrame | Callable[[], pd.DataFrame]"


class TaskRows(Protocol):
    """Where the tasks of :func:`estimate` get their activity rows from.

    Called once per :func:`estimate` with the sorted activity and the row slice of every task;
    returns one zero-argument loader per slice that gives exactly those rows (same columns,
    dtypes and values; the index does not matter). The loaders go into the task graph, so they
    must be small and picklable: a file name and a row group, not the rows. On a
    ``dask.distributed`` cluster the stage passes a :class:`pipeline.parallel.ParquetTaskRows`
    (:func:`pipeline.parallel.task_rows_on_workers`), so workers read their own rows instead of
    receiving them from the client.
    """

    def __call__(self, activity: pd.DataFrame, blocks: Sequence[slice]) -> Sequence[Callable[[], pd.DataFrame]]: ...


def _task(
    rows: RowsOrLoader,
    block: _Block,
    m: CropModel,
    params: np.ndarray,
    n_mult_pc: np.ndarray,
    a_mult_pc: np.ndarray,
    provinces: np.ndarray,
    background: str,
    edition: str,
    indirect: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """One (crop, block of rows) task.

    Returns per-row summaries (``mean``, ``p2_5``, ``median``, ``p97_5``, ``background_mean``
    over draws; ``central`` and ``background_central``, the plug-in point estimate at the
    nominal activity data), the year and province index of every (year, province) run of the
    rows, and the per-draw sums of those runs, shape (n_draws, n_runs). ``rows`` are the
    block's activity rows or a loader of them; ``n_mult_pc`` and ``a_mult_pc`` are the
    (n_draws, n_provinces) activity errors of this crop and ``provinces`` the sorted codes they
    are indexed by. Besides its rows a task holds five draws x rows arrays of 8 bytes at its
    peak with a log-linear or Tier 1 model (seven before the products were taken in place); a
    model average's evaluation holds more (eight measured with five forms).
    ``max_cells_per_task`` bounds draws x rows, so this is bounded too.
    """
    X = rows if isinstance(rows, pd.DataFrame) else rows()
    if X.columns.dtype != object:
        # The models look columns up a few dozen times per task, holding the GIL: on an object
        # Index that takes half the time of pandas' arrow-backed "str" Index (same values).
        X = X.set_axis(pd.Index(list(X.columns), dtype=object), axis=1)
    pi = np.searchsorted(provinces, X["province_code"].to_numpy())
    n_mult = n_mult_pc[:, pi]
    area = X["area_ha"].to_numpy(dtype=float)
    R = m.prepare(X)  # the model's pandas work, once for its four evaluations below
    indirect_ha = indirect_per_ha(X, edition) if indirect else None
    e_ha, e0_ha = emission_draws(m, R, params, n_mult, background)
    a_mult = a_mult_pc[:, pi]  # taken after the model, whose evaluation is the task's peak
    # area x E x error, evaluated left to right in place: the same bits as the expression,
    # without its temporaries (e_ha is a fresh array of emission_draws)
    total = e_ha
    total *= area[None, :]
    total *= a_mult
    bg = _writable(e0_ha)
    bg *= area[None, :]
    bg *= a_mult
    del e0_ha
    if indirect_ha is not None:
        extra = indirect_ha[None, :] * n_mult
        extra *= area[None, :]
        extra *= a_mult
        total += extra
        del extra
    del n_mult, a_mult
    # Rows are sorted by year then province, so each (year, province) is one contiguous run of
    # columns.
    year = X["year"].to_numpy()
    starts = np.flatnonzero(np.r_[True, (pi[1:] != pi[:-1]) | (year[1:] != year[:-1])])
    run_sums = np.add.reduceat(total, starts, axis=1)
    stats = _summarise(total, overwrite=True)  # total is not read after this
    del total
    stats["background_mean"] = bg.mean(axis=0)
    del bg
    e_c, e0_c = m.mean_emission(R), m.background(R)  # plug-in: the estimates, no draws
    central = (e_c - e0_c if background == "separate" else e_c) * area
    if indirect_ha is not None:
        central = central + indirect_ha * area
    stats["central"] = central
    stats["background_central"] = e0_c * area
    return stats, year[starts].astype(np.int64), pi[starts], run_sums


def _blocks(activity: pd.DataFrame, crops: tuple[str, ...], n_draws: int, max_cells: int) -> list[_Block]:
    """Tasks of one crop and at most ``max_cells // n_draws`` rows (memory flat in draws).

    Each crop's rows (all its years) are cut into the fewest blocks that respect the cap, of
    equal sizes to within one row: tasks are as large as the memory bound allows, so their
    fixed costs (scheduling, reading a row group, the model's pandas work) are paid per
    ``max_cells`` draw-rows, whatever the number of units. The cut depends on the rows, the
    draws and the cap only, never on the workers, so the results do not either.
    ``activity`` must be sorted by crop, year, province and county.

    Notes
    -----
    One task per year x crop (the layout before) gave the 279 units of a two-province slice
    30 tasks of 279 rows, and 4x the units the same 30 tasks: time grew as units^0.8 because
    every task's fixed cost was paid 30 times at any size (docs/scaling.md).
    """
    rows_per_task = max(1, max_cells // n_draws)
    crop = activity["crop"].to_numpy()
    crop_index = {c: i for i, c in enumerate(crops)}
    edges = np.flatnonzero(np.r_[True, crop[1:] != crop[:-1], True])
    blocks = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = -(-(hi - lo) // rows_per_task)
        cuts = lo + ((hi - lo) * np.arange(n + 1)) // n
        blocks += [_Block(crop_index[crop[lo]], slice(int(a), int(b))) for a, b in zip(cuts[:-1], cuts[1:])]
    return blocks


def _task_graph(
    activity: pd.DataFrame,
    blocks: list[_Block],
    loaders: Sequence[RowsOrLoader] | None,
    model: InventoryModel,
    draws: Draws,
    crops: tuple[str, ...],
    provinces: np.ndarray,
    cfg: EstimateOptions,
    edition: str,
) -> list[Any]:
    """One ``Delayed`` per block (its :func:`_task`), all in one task graph.

    Inputs read by many tasks are graph constants of their own (each crop's model and draws,
    the province codes), so a distributed client sends each once to every worker instead of
    once per task (:mod:`pipeline.parallel`). Without ``loaders`` a block's rows are a constant
    too (an ``iloc`` slice: no copy), which a distributed client scatters to one worker.

    The graph is written directly (``dask._task_spec``, what ``dask.delayed`` builds): building
    it through ``dask.delayed`` calls cost 0.4 ms per task, 20x more.
    """
    from dask._task_spec import DataNode, Task, TaskRef
    from dask.delayed import Delayed

    token = uuid.uuid4().hex
    graph: dict[Any, Any] = {}

    def constant(name: str, value: Any) -> TaskRef:
        key = (f"{name}-{token}", len(graph))
        graph[key] = DataNode(key, value)
        return TaskRef(key)

    provinces_ref = constant("provinces", provinces)
    per_crop = {
        c: (
            constant("model", model.for_crop(c)),
            constant("params", draws.params[c]),
            constant("n_mult", np.ascontiguousarray(draws.n_mult[:, :, i])),
            constant("area_mult", np.ascontiguousarray(draws.area_mult[:, :, i])),
        )
        for i, c in enumerate(crops)
    }
    keys = []
    for i, b in enumerate(blocks):
        rows = constant("rows", activity.iloc[b.rows]) if loaders is None else loaders[i]
        key = (f"_task-{token}", i)  # "_task": the progress bar's "Monte Carlo blocks"
        graph[key] = Task(
            key, _task, rows, b, *per_crop[crops[b.crop_index]], provinces_ref, cfg.background, edition, cfg.indirect
        )
        keys.append(key)
    return [Delayed(k, graph) for k in keys]


@functools.cache
def _blas_controller() -> Any:
    """One threadpoolctl controller per process: building one scans every loaded library
    (milliseconds), which a per-call ``threadpool_limits`` would repeat on every estimate."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def estimate(
    activity: pd.DataFrame,
    model: InventoryModel,
    cfg: EstimateOptions,
    edition: str = "2019",
    task_rows: TaskRows | None = None,
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
    task_rows
        How tasks get their rows (:class:`TaskRows`). ``None`` (default): each task's rows are
        an in-memory slice of ``activity``, a constant of the task graph (on a
        ``dask.distributed`` client :mod:`pipeline.parallel` scatters them). A loader per
        task instead (the stage's Parquet row groups) keeps the rows out of the graph and off
        the client's connection: workers read them when the task runs.

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
    The results do not depend on ``task_rows`` or the scheduler (same bytes).
    """
    import dask

    activity = activity.sort_values(["crop", "year", "province_code", "county_code"]).reset_index(drop=True)
    crops = tuple(sorted(activity["crop"].unique()))
    provinces = np.sort(activity["province_code"].unique())
    draws = make_draws(model, provinces, crops, cfg)
    blocks = _blocks(activity, crops, cfg.draws, cfg.max_cells_per_task)
    loaders: Sequence[RowsOrLoader] | None = None
    if task_rows is not None:
        loaders = task_rows(activity, [b.rows for b in blocks])
        if len(loaders) != len(blocks):
            raise ValueError(f"task_rows returned {len(loaders)} loaders for {len(blocks)} blocks")
    tasks = _task_graph(activity, blocks, loaders, model, draws, crops, provinces, cfg, edition)
    with _blas_controller().limit(limits=1, user_api="blas"):
        results = dask.compute(*tasks)

    # each per-row summary of a task -> its county-table column (kg N2O-N)
    column_of = {
        **{k: f"n2o_n_kg_{k}" for k in ("central", "mean", "p2_5", "median", "p97_5")},
        "background_mean": "background_n2o_n_kg_mean",
        "background_central": "background_n2o_n_kg_central",
    }
    cols = {k: np.empty(len(activity)) for k in column_of}
    years = sorted(int(y) for y in activity["year"].unique())
    by_year = {y: np.zeros((cfg.draws, len(provinces), len(crops))) for y in years}
    for b, (stats, run_year, run_province, run_sums) in zip(blocks, results):
        for k, v in stats.items():
            cols[k][b.rows] = v
        for y in np.unique(run_year):
            sel = run_year == y
            by_year[int(y)][:, run_province[sel], b.crop_index] += run_sums[:, sel]
    del results
    # The county table, ordered by county, crop and year (one row per key: a permutation of the
    # activity's rows; crops in the order pandas sorts them), built in one piece.
    crop_codes, _ = pd.factorize(activity["crop"], sort=True)
    order = np.lexsort((activity["year"].to_numpy(), crop_codes, activity["county_code"].to_numpy()))
    keys = activity[["county_code", "province_code", "year", "crop", "area_ha", "n_rate_kg_ha", "water_input_mm"]]
    estimates = {column_of[k]: v[order] for k, v in cols.items()}
    keys = keys.take(order).reset_index(drop=True)
    county = pd.concat([keys, pd.DataFrame(estimates, index=keys.index)], axis=1)

    # Per-draw sums -> quantiles of province and national totals. Their means are additive:
    # sums of the county values (_TableSums, one groupby per table level, over the rows in the
    # activity's order), so the three tables agree to rounding.
    tables = _draw_tables(by_year, years, crops, provinces, draws)
    area = activity["area_ha"].to_numpy(dtype=float)
    values = pd.DataFrame(
        {
            "area_ha": area,
            "n_applied_kg": area * activity["n_rate_kg_ha"].to_numpy(dtype=float),
            **{column_of[k]: cols[k] for k in ("central", "mean", "background_central", "background_mean")},
        }
    )
    by_province, by_nation = _TableSums(years, crops, provinces)(activity, values)
    # (a concat: a quarter of the time of setting six columns of a frame)
    province, national = (
        pd.concat([t, pd.DataFrame(v, columns=values.columns, index=t.index)], axis=1)
        for t, v in ((tables["province"], by_province), (tables["national"], by_nation))
    )
    crop_dtype = activity["crop"].dtype
    if isinstance(crop_dtype, pd.StringDtype) and crop_dtype.na_value is pd.NA:
        # the dtype that joining on such a crop column (as read from Parquet) always gave these
        # tables: object, not "str" (written files keep their bytes)
        province["crop"] = province["crop"].astype(object)
        national["crop"] = national["crop"].astype(object)
    return {
        "county": county,
        "province": province,
        "national": national,
        "national_draws": tables["national_draws"],
        "province_draws": tables["province_draws"],
    }


def _draw_tables(
    by_year: dict[int, np.ndarray], years: list[int], crops: tuple[str, ...], provinces: np.ndarray, draws: Draws
) -> dict[str, pd.DataFrame]:
    """Quantile and per-draw tables of the per-draw province sums ``by_year[y]`` (draws x
    provinces x crops, kg N2O-N), per crop and for ``"all"`` crops, rows ordered by year, crop
    (``crops`` then ``"all"``) and province or draw.

    Each table is built once from whole arrays (one frame per year and crop cost more than the
    Monte Carlo itself on small inputs); the sums and quantiles are those of each year and crop.
    """
    labels = [*crops, "all"]
    n_y, n_l, n_p, n_d = len(years), len(labels), len(provinces), draws.n_mult.shape[0]
    prov_q = np.empty((n_y, n_l, len(QUANTILES), n_p))
    nat_q = np.empty((n_y, n_l, len(QUANTILES)))
    nat = np.empty((n_y, n_l, n_d))
    prov_all = np.empty((n_y, n_d, n_p))
    for yi, y in enumerate(years):
        s = by_year[y]  # (draws, provinces, crops)
        per_prov = [s[:, :, ci] for ci in range(len(crops))] + [s.sum(axis=2)]
        for li, p in enumerate(per_prov):
            nat[yi, li] = p.sum(axis=1)
        prov_all[yi] = per_prov[-1]  # every draw of every province's all-crop total
        # quantiles over draws (axis 0) of each crop's provinces, of each crop's national sum
        prov_q[yi] = np.quantile(np.stack(per_prov, axis=1), QUANTILES, axis=0).transpose(1, 0, 2)
        nat_q[yi] = np.quantile(nat[yi], QUANTILES, axis=1).T
    year_col = np.asarray(years, dtype=np.int64)
    label_col = np.asarray(labels, dtype=object)
    codes = provinces.astype(int)
    q_cols = {"n2o_n_kg_median": 1, "n2o_n_kg_p2_5": 0, "n2o_n_kg_p97_5": 2}  # order of QUANTILES
    province = pd.DataFrame(
        {
            "province_code": np.tile(codes, n_y * n_l),
            "year": np.repeat(year_col, n_l * n_p),
            "crop": np.tile(np.repeat(label_col, n_p), n_y),
            **{k: prov_q[:, :, i, :].ravel() for k, i in q_cols.items()},
        }
    )
    national = pd.DataFrame(
        {
            "year": np.repeat(year_col, n_l),
            "crop": np.tile(label_col, n_y),
            **{k: nat_q[:, :, i].ravel() for k, i in q_cols.items()},
            "forms_drawn": np.tile(np.asarray([_forms_drawn(draws, c) for c in labels], dtype=object), n_y),
        }
    )
    forms = np.concatenate([np.asarray(_form_of_draw(draws, c), dtype=object) for c in labels])
    national_draws = pd.DataFrame(
        {
            "draw": np.tile(np.arange(n_d), n_y * n_l),
            "year": np.repeat(year_col, n_l * n_d),
            "crop": np.tile(np.repeat(label_col, n_d), n_y),
            "n2o_n_kg": nat.ravel(),
            "form": np.tile(forms, n_y),
        }
    )
    province_draws = pd.DataFrame(
        {
            "draw": np.tile(np.repeat(np.arange(n_d), n_p), n_y),
            "year": np.repeat(year_col, n_d * n_p),
            "province_code": np.tile(codes, n_y * n_d),
            "n2o_n_kg": prov_all.ravel(),
        }
    )
    return {
        "province": province,
        "national": national,
        "national_draws": national_draws,
        "province_draws": province_draws,
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


class _TableSums:
    """Sums of activity or county-table columns per row of the province and national tables.

    The rows of those tables are year x (``crops``, then ``"all"``) x province (national: year
    x crop), as :func:`_draw_tables` orders them. Each sum is one ``groupby(label).sum()`` on an
    integer label per group, placed at its table row without a merge. The label orders the
    groups as the key columns would (province, year, crop, each as pandas sorts it): pandas
    sums a group in another order (pairwise, not compensated) when the labels happen to be
    sorted in the frame, so an order-preserving label keeps the sums those of a groupby on the
    key columns, to the bit. Rows without activity get NaN.
    """

    def __init__(self, years: list[int], crops: tuple[str, ...], provinces: np.ndarray) -> None:
        self.years, self.crops, self.provinces = np.asarray(years), np.asarray(crops, dtype=object), provinces

    def __call__(self, frame: pd.DataFrame, values: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(province-table rows, columns) and (national-table rows, columns) sums of ``values``,
        whose rows are those of ``frame`` (which has ``year``, ``crop`` and ``province_code``)."""
        n_y, n_p = len(self.years), len(self.provinces)
        n_c = len(self.crops)
        n_l = n_c + 1  # the crops and "all"
        yi = np.searchsorted(self.years, frame["year"].to_numpy())
        pi = np.searchsorted(self.provinces, frame["province_code"].to_numpy())
        # crops in the order pandas sorts the column (a categorical's own order), and where
        # each of them sits in the tables (``crops``)
        ci, uniques = pd.factorize(frame["crop"], sort=True)
        n_u = len(uniques)
        at = np.searchsorted(self.crops, np.asarray(uniques, dtype=object))
        province = np.full((n_y * n_l * n_p, values.shape[1]), np.nan)
        national = np.full((n_y * n_l, values.shape[1]), np.nan)
        levels = [  # (table, label in key order, table row of a label)
            (
                province,
                (pi * n_y + yi) * n_u + ci,
                lambda g: ((g // n_u % n_y) * n_l + at[g % n_u]) * n_p + g // (n_u * n_y),
            ),
            (province, pi * n_y + yi, lambda g: ((g % n_y) * n_l + n_c) * n_p + g // n_y),
            (national, yi * n_u + ci, lambda g: (g // n_u) * n_l + at[g % n_u]),
            (national, yi, lambda g: g * n_l + n_c),
        ]
        for out, label, row in levels:
            s = values.groupby(label).sum()
            out[row(s.index.to_numpy())] = s.to_numpy()
        return province, national


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
