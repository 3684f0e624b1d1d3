#!/usr/bin/env Rscript
# Reference numbers from R for the Python breakpoint methods (pipeline/methods/davies.py,
# pipeline/methods/kink_interval.py), recorded in segmented_reference_output.txt and copied into
# tests/test_davies.py as constants (CI has no R).
#
# Usage (from the repository root):
#   Rscript benchmarks/r/segmented_reference.R [DATA_DIR] > benchmarks/r/segmented_reference_output.txt
# DATA_DIR defaults to $CROPN2O_SHARED_DATA, else ../shared/data relative to the repository.
# Needs the Debian packages r-base-core, r-cran-segmented, r-cran-strucchange.
#
# Output: a header of versions, then one CSV block "series,key,value" (values with 17 significant
# digits) between the lines BEGIN_CSV and END_CSV.
#
# Series:
#   faostat  FAOSTAT synthetic-fertilizer N2O, geo 351 "China" (aggregate), kt N2O, 1990-2014
#   edgar    EDGAR v4.3.2 China, IPCC 1996 sector 4D1 (direct soil emissions), Gg N2O, 1990-2012
#   synth    synthetic continuous broken line with a known kink at 2004.5 and a deterministic
#            "noise" 6 sin(1.3 i^1.5), i = 1..25, that Python reproduces exactly:
#            y = 400 + 10 (t - 1990) - 7 (t - 2004.5)_+ + 6 sin(1.3 i^1.5), t = 1990..2014

suppressMessages({
  library(segmented)
  library(strucchange)
})

args <- commandArgs(trailingOnly = TRUE)
file_arg <- sub("^--file=", "", grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE))
script_dir <- if (length(file_arg)) dirname(normalizePath(file_arg)) else getwd()
repo <- normalizePath(file.path(script_dir, "..", ".."), mustWork = FALSE)
data_dir <- if (length(args) >= 1) args[1] else {
  env <- Sys.getenv("CROPN2O_SHARED_DATA", "")
  if (nzchar(env)) env else file.path(repo, "..", "shared", "data")
}
if (!dir.exists(data_dir)) stop("data folder not found: ", data_dir, " (pass it or set CROPN2O_SHARED_DATA)")

read_faostat <- function() {
  f <- file.path(data_dir, "faostat_china_extracts",
                 "ddf_unfao_faostat_gt_synthetic_fertilizers_emissions_n2o_china.csv")
  d <- read.csv(f)
  d <- d[d$geo == 351 & d$year >= 1990 & d$year <= 2014, ]
  d <- d[order(d$year), ]
  list(t = as.numeric(d$year), y = as.numeric(d$gt_synthetic_fertilizers_emissions_n2o))
}
read_edgar <- function() {
  f <- file.path(data_dir, "edgar_v432", "edgar_v432_N2O_CHN_by_IPCC1996_1970_2012_Gg.csv")
  d <- read.csv(f, check.names = FALSE)
  r <- d[d$IPCC == "4D1", ]
  yrs <- 1990:2012
  list(t = as.numeric(yrs), y = as.numeric(unlist(r[1, as.character(yrs)])))
}
make_synth <- function() {
  t <- as.numeric(1990:2014)
  i <- seq_along(t)
  list(t = t, y = 400 + 10 * (t - 1990) - 7 * pmax(t - 2004.5, 0) + 6 * sin(1.3 * i^1.5))
}

rows <- list()
put <- function(series, key, value) {
  v <- if (is.null(value) || length(value) == 0 || is.na(value)) "NA" else sprintf("%.17g", value)
  rows[[length(rows) + 1]] <<- paste(series, key, v, sep = ",")
}

analyse <- function(name, s) {
  t <- s$t; y <- s$y; n <- length(y)
  put(name, "n", n); put(name, "first_year", t[1]); put(name, "last_year", t[n])
  for (i in seq_len(n)) put(name, sprintf("y_%d", t[i]), y[i])
  o0 <- lm(y ~ t)
  put(name, "lm_rss", sum(resid(o0)^2))

  # --- Davies' test, lm route (daviesLM: t statistic, Davies 2002 bound) ------------------------
  for (k in c(10, 25)) for (alt in c("two.sided", "less", "greater")) {
    d <- davies.test(o0, seg.Z = ~t, k = k, alternative = alt)
    key <- sprintf("davies_lm_k%d_%s", k, alt)
    put(name, paste0(key, "_p"), d$p.value)
    put(name, paste0(key, "_best"), d$statistic)
    put(name, paste0(key, "_npoints"), d$parameter)
    if (alt == "two.sided") for (j in seq_len(nrow(d$process))) {
      put(name, sprintf("%s_grid_%02d", key, j), d$process[j, 1])
      put(name, sprintf("%s_stat_%02d", key, j), d$process[j, 2])
    }
  }
  # --- Davies' test, glm route (daviesGLM, Gaussian family: normal reference, Davies 1987) ------
  g0 <- glm(y ~ t, family = gaussian)
  for (type in c("lrt", "wald")) for (alt in c("two.sided", "less", "greater")) {
    d <- davies.test(g0, seg.Z = ~t, k = 10, alternative = alt, type = type)
    key <- sprintf("davies_glm_%s_k10_%s", type, alt)
    put(name, paste0(key, "_p"), d$p.value)
    put(name, paste0(key, "_best"), d$statistic)
    if (alt == "two.sided") for (j in seq_len(nrow(d$process))) put(name, sprintf("%s_stat_%02d", key, j), d$process[j, 2])
  }
  # --- pseudo-score test (Muggeo 2016), recorded only ------------------------------------------
  ps <- pscore.test(o0, seg.Z = ~t)
  put(name, "pscore_p", ps$p.value)

  # --- segmented fit from psi = 2003 (seg.control's default seed 12345 makes it reproducible) ---
  o <- segmented(o0, seg.Z = ~t, psi = 2003)
  put(name, "seg_psi", o$psi[1, "Est."])
  put(name, "seg_psi_se", o$psi[1, "St.Err"])
  put(name, "seg_rss", sum(resid(o)^2))
  put(name, "seg_df_residual", o$df.residual)
  for (m in c("delta", "score", "gradient")) {
    ci <- tryCatch(confint(o, method = m, digits = 15), error = function(e) matrix(NA, 1, 3))
    put(name, sprintf("confint_%s_low", m), ci[1, 2]); put(name, sprintf("confint_%s_high", m), ci[1, 3])
  }
  sl <- slope(o, digits = 15)$t
  for (j in 1:2) {
    put(name, sprintf("slope%d", j), sl[j, 1]); put(name, sprintf("slope%d_se", j), sl[j, 2])
    put(name, sprintf("slope%d_low", j), sl[j, 4]); put(name, sprintf("slope%d_high", j), sl[j, 5])
  }
  # Muggeo's linearised SE of psi at a FIXED psi near a data year (lm on U = (t - psi)_+ and
  # V = -I(t > psi), SE = sqrt(Var(gamma)) / |beta|, what segmented reports at convergence):
  # shows the jump of the Wald SE when psi crosses a data year.
  yr <- round(o$psi[1, "Est."])
  for (h in c(-1e-7, 0, 1e-7)) {
    p <- yr + h
    U <- pmax(t - p, 0); V <- -(t > p)
    f <- lm(y ~ t + U + V)
    se <- sqrt(vcov(f)["V", "V"]) / abs(coef(f)["U"])
    put(name, sprintf("wald_se_at_%s", format(h, scientific = TRUE)), se)
  }
  put(name, "wald_se_year", yr)

  # --- exact profile-likelihood F interval for psi, by brute force (cross-check only) ----------
  lo <- sort(t)[2]; hi <- sort(t)[n - 1]
  prss <- function(p) sum(lm.fit(cbind(1, t, pmax(t - p, 0)), y)$residuals^2)
  grid <- seq(lo, hi, by = 0.001)
  r <- vapply(grid, prss, 0)
  rmin <- min(r); pbest <- grid[which.min(r)]
  opt <- optimize(prss, c(max(lo, pbest - 0.002), min(hi, pbest + 0.002)), tol = 1e-10)
  rmin <- min(rmin, opt$objective)
  thr <- rmin * (1 + qf(0.95, 1, n - 4) / (n - 4))
  inside <- grid[r <= thr]
  f <- function(p) prss(p) - thr
  low <- if (min(inside) <= lo) lo else uniroot(f, c(min(inside) - 0.001, min(inside)), tol = 1e-10)$root
  high <- if (max(inside) >= hi) hi else uniroot(f, c(max(inside), max(inside) + 0.001), tol = 1e-10)$root
  put(name, "profile_rss_min", rmin)
  put(name, "profile_psi_grid001", pbest)
  put(name, "profile_F95_low", low); put(name, "profile_F95_high", high)

  # --- strucchange: y ~ 1 + t (trend) and y ~ 1 (mean), h = 0.15, BIC --------------------------
  tt <- seq_len(n)
  for (spec in c("trend", "mean")) {
    fml <- if (spec == "trend") y ~ 1 + tt else y ~ 1
    bp <- breakpoints(fml, h = 0.15)
    bb <- breakpoints(bp)$breakpoints
    nb <- if (all(is.na(bb))) 0 else length(bb)
    put(name, sprintf("strucchange_%s_h", spec), floor(0.15 * n))
    put(name, sprintf("strucchange_%s_nbreaks_bic", spec), nb)
    if (nb > 0) {
      ci <- tryCatch(suppressWarnings(confint(bp, breaks = nb)$confint), error = function(e) matrix(NA, nb, 3))
      for (j in seq_len(nb)) {
        put(name, sprintf("strucchange_%s_break%d_year", spec, j), t[bb[j]])
        put(name, sprintf("strucchange_%s_break%d_ci_low", spec, j), if (is.na(ci[j, 1])) NA else t[1] - 1 + ci[j, 1])
        put(name, sprintf("strucchange_%s_break%d_ci_high", spec, j), if (is.na(ci[j, 3])) NA else t[1] - 1 + ci[j, 3])
      }
    }
    sm <- summary(bp)$RSS
    for (m in 0:2) {
      put(name, sprintf("strucchange_%s_rss_m%d", spec, m), sm["RSS", as.character(m)])
      put(name, sprintf("strucchange_%s_bic_m%d", spec, m), sm["BIC", as.character(m)])
    }
    fs <- Fstats(fml, from = 0.15)
    put(name, sprintf("strucchange_%s_supF", spec), sctest(fs, type = "supF")$statistic)
    put(name, sprintf("strucchange_%s_supF_p", spec), sctest(fs, type = "supF")$p.value)
  }
}

cat("# benchmarks/r/segmented_reference.R\n")
cat("# ", R.version.string, "\n", sep = "")
cat("# segmented ", as.character(packageVersion("segmented")), ", strucchange ",
    as.character(packageVersion("strucchange")), "\n", sep = "")
cat("# data_dir: ", basename(normalizePath(data_dir)), " (as given: see script header)\n", sep = "")
analyse("faostat", read_faostat())
analyse("edgar", read_edgar())
analyse("synth", make_synth())
cat("BEGIN_CSV\nseries,key,value\n")
cat(unlist(rows), sep = "\n")
cat("\nEND_CSV\n")
