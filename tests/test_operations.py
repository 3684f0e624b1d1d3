"""Operations (issue #14): make's view of staleness, the build lock, crash hygiene, provenance,
progress and logs, and stage outputs on a cluster of worker processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml

from pipeline import io, parallel
from pipeline.cli import LOCK_ENV, LOCK_EXIT_CODE, build_lock, lock_path, main
from pipeline.config import DaskConfig
from pipeline.errors import LockHeldError
from pipeline.parallel import Bar, dask_context, progress, scatter_large_constants, task_label
from pipeline.stages.context import StageRun, provenance_attrs, run_manifest_document
from pipeline.stages.registry import STAGES, manifest_relpath
from pipeline.stamps import stale_stages, write_stamps
from tests.conftest import REPO, reproducible_bytes

VENV_BIN = Path(sys.executable).parent
MAKE = shutil.which("make")


def _hashes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): reproducible_bytes(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def _own(cfg, tmp_path: Path, **extra):
    """The demo slice's config with its own processed folder (other tests share the fixture's)."""
    ingest = cfg.ingest.model_copy(update={"first_year": cfg.demo.first_year, "last_year": cfg.demo.last_year})
    fit = cfg.fit.model_copy(update={"model": "single_family"})  # fast and robust on a slice this small
    return cfg.model_copy(update={"processed_dir": str(tmp_path / "processed"), "ingest": ingest, "fit": fit, **extra})


def _config_file(cfg, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = cfg.model_dump(mode="json")
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# make: `make -q all` after `make all`, `make -n` after one config change
# ---------------------------------------------------------------------------------------------
FAKE_CLI = textwrap.dedent('''
    """Stands in for cropn2o in a copy of the project: `stamp` is the real one, a stage only
    writes its target and notes that it ran (the Makefile's logic is under test, not the stages)."""
    import json, sys
    from pathlib import Path

    args = sys.argv[1:]
    targets = json.loads(Path(__file__).with_name("targets.json").read_text())
    cmd = [a for a in args if a in targets or a == "stamp"][-1]
    if cmd == "stamp":
        from pipeline.config import load_config
        from pipeline.stamps import write_stamps

        write_stamps(load_config(args[args.index("--config") + 1]))
        sys.exit(0)
    processed = Path("processed")
    processed.mkdir(exist_ok=True)
    with open(processed / "ran.txt", "a") as f:
        f.write(cmd + "\\n")
    target = processed / targets[cmd]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("{}")
''')


def _project_copy(dest: Path, inputs_under: str = "inputs") -> Path:
    """A copy of the Makefile, stages.mk, package sources and a config (file times kept)."""
    for name in ("Makefile", "stages.mk", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, dest / name)
    for src in (REPO / "pipeline").rglob("*.py"):
        target = dest / src.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    doc = yaml.safe_load((REPO / "config" / "default.yaml").read_text(encoding="utf-8"))
    for spec in doc["inputs"].values():
        if isinstance(spec, dict):
            spec["path"] = spec["path"].replace("data_raw/demo", inputs_under)
    doc["processed_dir"] = "processed"
    (dest / "config").mkdir()
    (dest / "config" / "ops.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def _make(proj: Path, *args: str, cli: str | None = None) -> subprocess.CompletedProcess:
    # INSTALLED names an existing file and PYTHON=/bin/false: nothing can (re)install into the venv
    marker = proj / ".installed-marker"
    if not marker.exists():
        marker.touch()
    cmd = [
        MAKE,
        "-C",
        str(proj),
        *args,
        "CONFIG=config/ops.yaml",
        f"VENV={VENV_BIN.parent}",
        f"INSTALLED={marker}",
        "PYTHON=/bin/false",
    ]
    if cli:
        cmd.append(f"CLI={cli}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "CROPN2O_PROGRESS": "0"})


def _downstream(name: str) -> set[str]:
    out = {name}
    changed = True
    while changed:
        changed = False
        for st in STAGES.values():
            if st.name not in out and out & set(st.upstream):
                out.add(st.name)
                changed = True
    return out


@pytest.mark.skipif(MAKE is None, reason="GNU make not installed")
def test_make_q_true_after_make_all_and_n_lists_only_dependent_stages(tmp_path: Path) -> None:
    proj = _project_copy(tmp_path)
    fake = tmp_path / "fake_cli.py"
    fake.write_text(FAKE_CLI, encoding="utf-8")
    targets = {n: manifest_relpath(st) for n, st in STAGES.items() if st.target is None}
    (tmp_path / "targets.json").write_text(json.dumps({**targets, "run-manifest": "run_manifest.json"}))
    cli = f"{sys.executable} {fake} --config config/ops.yaml"
    in_makefile = [
        n for n in STAGES if f"$(CLI) {n}\n" in (REPO / "stages.mk").read_text(encoding="utf-8") and n != "demo-data"
    ]

    first = _make(proj, "all", cli=cli)
    assert first.returncode == 0, first.stderr
    ran = (proj / "processed" / "ran.txt").read_text().split()
    assert ran == [*in_makefile, "run-manifest"]  # registry order, each once

    q = _make(proj, "-q", "all", cli=cli)
    assert q.returncode == 0, q.stdout + q.stderr  # the stamps' phony prerequisite made this 1
    n = _make(proj, "-n", "all", cli=cli)
    assert n.returncode == 0 and "fake_cli.py" not in n.stdout, n.stdout

    cfg_file = proj / "config" / "ops.yaml"
    doc = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
    doc["estimate"]["draws"] = 123
    time.sleep(0.01)
    cfg_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert _make(proj, "-q", "all", cli=cli).returncode == 1
    n = _make(proj, "-n", "all", cli=cli)
    listed = [
        line.split()[-1] for line in n.stdout.splitlines() if "fake_cli.py" in line and "run-manifest" not in line
    ]
    assert listed == [s for s in in_makefile if s in _downstream("estimate")]
    assert "ingest" not in listed and "fit" not in listed
    again = (proj / "processed" / "ran.txt").read_text().split()
    assert again == ran  # -q and -n ran nothing


@pytest.mark.slow
@pytest.mark.skipif(MAKE is None, reason="GNU make not installed")
def test_real_make_all_then_make_q_is_true(tmp_path: Path, demo_slice) -> None:
    """The same with the real stages on a tiny slice (slow: every stage once)."""
    proj = _project_copy(tmp_path)
    cfg = demo_slice.model_copy(update={"processed_dir": "processed"})
    doc = cfg.model_dump(mode="json")
    doc["estimate"]["draws"] = 50
    doc["grid"]["grids"] = [{"name": "0p1deg", "resolution_deg": 0.1}]
    doc["ingest"].update(first_year=cfg.demo.first_year, last_year=cfg.demo.last_year)
    doc["trend"].update(n_sim=200, min_segment_years=2, max_breaks=1)
    (proj / "config" / "ops.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    r = _make(proj, "all")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _make(proj, "-q", "all").returncode == 0
    run = json.loads((proj / "processed" / "run_manifest.json").read_text())
    assert all(v["completed"] for k, v in run["stages"].items() if k in ("ingest", "fit", "estimate", "grid", "trend"))


# ---------------------------------------------------------------------------------------------
# Crash hygiene: SIGKILL during a file write
# ---------------------------------------------------------------------------------------------
KILLED_RUN = textwrap.dedent('''
    """Run a stage and SIGKILL the process in the middle of writing its second output file."""
    import os, signal, sys
    from pipeline import io
    from pipeline.cli import main

    original = io.write_with
    count = 0

    def write_and_die(target, writer):
        global count
        count += 1
        if count < 2:
            return original(target, writer)
        with io.atomic_path(target) as tmp:
            writer(tmp)  # the temporary file is complete on disk, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)

    io.write_with = write_and_die
    sys.exit(main(sys.argv[1:]))
''')


def test_sigkill_during_a_write_leaves_nothing_after_the_rerun(tmp_path: Path, demo_slice) -> None:
    cfg_file = _config_file(_own(demo_slice, tmp_path), tmp_path / "cfg.yaml")
    processed = tmp_path / "processed"
    assert main(["--config", str(cfg_file), "-q", "ingest"]) == 0
    reference = _hashes(processed / "ingest")

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN, encoding="utf-8")
    r = subprocess.run(
        [sys.executable, str(script), "--config", str(cfg_file), "-q", "ingest"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CROPN2O_PROGRESS": "0"},
    )
    assert r.returncode == -signal.SIGKILL
    assert _temp_files(processed), "the killed run should have left its temporary file"
    assert not (processed / "ingest" / "manifest.json").exists()  # visibly unfinished

    assert main(["--config", str(cfg_file), "-q", "ingest"]) == 0
    assert _temp_files(processed) == []
    assert _hashes(processed / "ingest") == reference


def test_stage_start_removes_only_temp_files_of_its_own_folders(tmp_path: Path, demo_slice) -> None:
    cfg = _own(demo_slice, tmp_path)
    mine = cfg.processed / "estimate_tier1" / ".county.parquet.abc123.tmp"
    other = cfg.processed / "grid" / ".x.nc.def456.tmp"
    kept = cfg.processed / "estimate" / "notes.tmp"  # not a temporary file of atomic_path
    for p in (mine, other, kept):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("partial")
    StageRun(cfg, "estimate", folders=["estimate", "estimate_tier1"])
    assert not mine.exists() and other.exists() and kept.exists()


# ---------------------------------------------------------------------------------------------
# The build lock
# ---------------------------------------------------------------------------------------------
HELD_RUN = textwrap.dedent('''
    """A real stage run that waits, before its first file write, until {release} exists."""
    import sys, time
    from pathlib import Path
    from pipeline import io
    from pipeline.cli import main

    original = io.write_with
    release = Path({release!r})

    def held(target, writer):
        release.with_name("holding").touch()
        while not release.exists():
            time.sleep(0.05)
        return original(target, writer)

    io.write_with = held
    sys.exit(main(sys.argv[1:]))
''')


def test_two_runs_at_once_one_runs_the_other_exits_with_the_lock_code(tmp_path: Path, demo_slice) -> None:
    cfg = _own(demo_slice, tmp_path)
    cfg_file = _config_file(cfg, tmp_path / "cfg.yaml")
    env = {**os.environ, "CROPN2O_PROGRESS": "0"}
    exe = [str(VENV_BIN / "cropn2o"), "--config", str(cfg_file)]
    # the first run is the real ingest, held before its first write until the second has tried
    release = tmp_path / "release"
    script = tmp_path / "held.py"
    script.write_text(HELD_RUN.format(release=str(release)), encoding="utf-8")
    first = subprocess.Popen(
        [sys.executable, str(script), "--config", str(cfg_file), "ingest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "holding").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never started writing"
            time.sleep(0.05)
        t0 = time.monotonic()
        second = subprocess.run([*exe, "fit"], capture_output=True, text=True, env=env, timeout=120)
        waited = time.monotonic() - t0
    finally:
        release.touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == LOCK_EXIT_CODE
    assert "another run holds the lock" in second.stderr and f"pid {first.pid}" in second.stderr
    assert not (cfg.processed / "fit").exists()  # the second run did nothing
    assert waited < 30  # at once: it did not wait for the first (start-up only)


def test_lock_in_process_exit_code_log_line_and_inheritance(tmp_path: Path, demo_slice, caplog, monkeypatch) -> None:
    cfg = _own(demo_slice, tmp_path)
    cfg_file = _config_file(cfg, tmp_path / "cfg.yaml")
    code = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    with build_lock(cfg, "test"):
        assert lock_path(cfg).read_text().startswith(f"pid {os.getpid()} ")
        r = subprocess.run(
            [sys.executable, "-c", code, "--config", str(cfg_file), "run-manifest"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == LOCK_EXIT_CODE and r.stderr.count("another run holds the lock") == 2  # log + error
        assert "ERROR pipeline: " in r.stderr and r.stderr[:4].isdigit()  # a dated log line
        # a stage started by the holder (cron) runs under the holder's lock
        r = subprocess.run(
            [sys.executable, "-c", code, "--config", str(cfg_file), "-q", "run-manifest"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, LOCK_ENV: f"{lock_path(cfg).resolve()}:{os.getpid()}"},
        )
        assert r.returncode == 0, r.stderr
    with build_lock(cfg, "again"):  # released
        pass
    with build_lock(cfg, "outer"), pytest.raises(LockHeldError):
        with build_lock(cfg, "inner"):
            pass


# ---------------------------------------------------------------------------------------------
# cron: only what is stale, a dated log, the failed stage named
# ---------------------------------------------------------------------------------------------
def test_cron_plans_only_stale_stages_and_names_a_failed_stage(tmp_path: Path, demo_slice, capsys) -> None:
    cfg = _own(demo_slice, tmp_path)
    cfg_file = _config_file(cfg, tmp_path / "cfg.yaml")
    write_stamps(cfg)
    assert stale_stages(cfg)[0] == "ingest" and "demo-data" not in stale_stages(cfg)
    assert main(["--config", str(cfg_file), "cron", "--dry-run"]) == 0
    logs = sorted((cfg.processed / "logs").glob("cron-*.log"))
    assert len(logs) == 1 and "stale: ingest, fit" in logs[0].read_text()
    # an upstream that cannot be read: the first stage fails and cron names it
    bad = _own(demo_slice, tmp_path).model_dump(mode="json")
    bad["inputs"]["observations"]["path"] = str(tmp_path / "missing.csv")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad), encoding="utf-8")
    code = main(["--config", str(bad_file), "cron"])
    assert code == 3  # the stage's own exit code (an input error)
    assert "cron: stage ingest failed" in capsys.readouterr().err
    text = sorted((cfg.processed / "logs").glob("cron-*.log"))[-1].read_text()
    assert "missing.csv" in text and "later stages not run: fit" in text


def test_stale_stages_follow_stamps_and_manifests(tmp_path: Path, demo_slice) -> None:
    cfg = _own(demo_slice, tmp_path)
    write_stamps(cfg)
    # manifests dated ahead, in registry order: code edited meanwhile (by anyone) cannot make them stale
    now = time.time()
    for i, name in enumerate(n for n in STAGES if STAGES[n].target is None):
        t = cfg.processed / STAGES[name].folder / "manifest.json"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text("{}")
        os.utime(t, (now + 1000 + i, now + 1000 + i))
    assert stale_stages(cfg) == []
    changed = cfg.model_copy(update={"estimate": cfg.estimate.model_copy(update={"draws": 77})})
    assert [p.name for p in write_stamps(changed)] == ["estimate.json"]
    os.utime(cfg.processed / ".stamps" / "estimate.json", (now + 2000, now + 2000))
    assert set(stale_stages(changed)) == _downstream("estimate")
    (cfg.processed / "fit" / "manifest.json").unlink()
    assert set(stale_stages(changed)) == _downstream("fit")


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------
def test_provenance_attrs_and_run_manifest(tmp_path: Path, demo_slice) -> None:
    cfg = _own(demo_slice, tmp_path)
    run = StageRun(cfg, "ingest")
    run.record_inputs([cfg.path(cfg.inputs.observations.path)])
    attrs = run.provenance()
    assert all(isinstance(v, str) for v in attrs.values())
    assert json.loads(attrs["cropn2o_seeds"])["estimate.seed"] == cfg.estimate.seed
    assert list(json.loads(attrs["cropn2o_input_sha256"]).values()) == [
        io.file_sha256(cfg.path(cfg.inputs.observations.path))
    ]
    assert "numpy" in json.loads(attrs["cropn2o_package_versions"])
    assert attrs == provenance_attrs(cfg, STAGES["ingest"], run.inputs)  # deterministic
    done = run.finish([])
    manifest = json.loads(done[-1].read_text())
    assert manifest["timings"]["peak_rss_mb"] > 10
    doc = run_manifest_document(cfg)
    assert doc["stages"]["ingest"]["completed"] and doc["stages"]["ingest"]["peak_rss_mb"] > 10
    assert doc["stages"]["fit"] == {"completed": False}
    assert doc["seeds"]["demo.seed"] == cfg.demo.seed and "observations" in doc["inputs"]


# ---------------------------------------------------------------------------------------------
# CLI: flags anywhere, --version, help, dated logs, warnings once
# ---------------------------------------------------------------------------------------------
def test_flags_before_or_after_the_command_and_version(tmp_path: Path, capsys) -> None:
    cfg_args = ["--config", str(REPO / "config" / "default.yaml")]
    assert main([*cfg_args, "stamp", "--set", f"processed_dir={tmp_path / 'a'}", "-q"]) == 0
    assert main(["-v", "--set", f"processed_dir={tmp_path / 'b'}", *cfg_args, "stamp"]) == 0
    assert (tmp_path / "a" / ".stamps").is_dir() and (tmp_path / "b" / ".stamps").is_dir()
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("cropn2o ")


@pytest.mark.parametrize("command", [*STAGES, "cron", "stamp", "run-manifest", "breaks"])
def test_every_subcommand_help_lists_its_options(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for opt in ("--config", "--set", "-q", "-v"):
        assert opt in out
    if command == "cron":
        assert "--dry-run" in out and "--keep-logs" in out


def test_library_warnings_are_logged_once_with_context(tmp_path: Path, caplog) -> None:
    from pipeline.cli import warnings_to_log

    with warnings_to_log("estimate"), warnings.catch_warnings():
        warnings.simplefilter("always")
        for _ in range(3):
            warnings.warn("Mean of empty slice", RuntimeWarning, stacklevel=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "py.warnings"]
    assert (
        len(lines) == 1 and lines[0].startswith("estimate: RuntimeWarning from ") and "Mean of empty slice" in lines[0]
    )


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_bar_draws_on_a_terminal_and_is_silent_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("CROPN2O_PROGRESS", raising=False)
    monkeypatch.setattr(parallel, "REFRESH_S", 0.0)
    for tty in (True, False):
        s = _Tty(tty)
        bar = Bar("grid years", total=3, stream=s)
        for _ in range(3):
            bar.update()
        bar.close()
        assert ("grid years: [" in s.text and "3/3 100%" in s.text) if tty else s.text == ""
    monkeypatch.setenv("CROPN2O_PROGRESS", "0")
    assert Bar("x", 1, stream=_Tty(True)).enabled is False
    assert list(progress(range(4), "files")) == [0, 1, 2, 3]
    monkeypatch.setattr(parallel, "REFRESH_S", 10.0)  # a step shorter than the refresh leaves no line
    monkeypatch.setenv("CROPN2O_PROGRESS", "1")
    s = _Tty(True)
    bar = Bar("quick", total=2, stream=s)
    bar.update(2)
    bar.close()
    assert s.text == ""


def test_tasks_inside_a_progress_loop_draw_no_second_bar(monkeypatch, capfd) -> None:
    monkeypatch.setenv("CROPN2O_PROGRESS", "1")
    monkeypatch.setattr(parallel, "REFRESH_S", 0.0)
    with dask_context(DaskConfig()):
        for year in progress([1990, 1991], "grid years"):
            dask.compute(dask.delayed(int)(year))
    err = capfd.readouterr().err
    assert "grid years: [" in err and "2/2 100%" in err and "int tasks" not in err


def test_local_scheduler_progress_counts_every_task(monkeypatch, capfd) -> None:
    monkeypatch.setenv("CROPN2O_PROGRESS", "1")
    monkeypatch.setattr(parallel, "REFRESH_S", 0.0)

    def _cv_fold(i: int) -> int:
        return i

    with dask_context(DaskConfig()):
        assert dask.compute(*[dask.delayed(_cv_fold)(i) for i in range(7)]) == tuple(range(7))
    err = capfd.readouterr().err
    assert "cross-validation folds: [" in err and "7/7 100%" in err
    assert task_label(["_task-0a1b2c3d4e5f", "_task-1a1b2c3d4e5f"]) == "Monte Carlo blocks"


# ---------------------------------------------------------------------------------------------
# Distributed: scatter instead of large graphs; worker processes give the same bytes
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def process_cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=40
    ) as cluster:
        yield cluster


def test_large_constants_are_scattered_no_large_graph_warning(process_cluster, monkeypatch, capfd) -> None:
    monkeypatch.setenv("CROPN2O_PROGRESS", "1")
    monkeypatch.setattr(parallel, "REFRESH_S", 0.0)
    big = np.arange(4_000_000, dtype=float)  # 32 MB: over distributed's 10 MB graph warning
    shared = dask.delayed(big, pure=False)
    tasks = [dask.delayed(np.sum)(shared) + i for i in range(4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dask_context(DaskConfig(scheduler=process_cluster.scheduler_address)) as client:
            out = dask.compute(*tasks)
            graph, sent = scatter_large_constants(client, dict(shared.__dask_graph__()))
            assert sent >= big.nbytes and not any(hasattr(v, "value") for v in graph.values())
    assert out == tuple(float(big.sum()) + i for i in range(4))
    assert not [w for w in caught if "large graph" in str(w.message)]
    assert "4/4 100%" in capfd.readouterr().err  # a bar fed by the futures


def test_estimate_and_grid_on_worker_processes_match_threads(tmp_path: Path, demo_slice, process_cluster) -> None:
    """The estimate and grid stages on a LocalCluster of worker processes (127.0.0.1) write the
    same bytes as on the threaded scheduler, without a large-graph warning."""
    small = {
        "estimate": demo_slice.estimate.model_copy(update={"draws": 60}),
        "grid": demo_slice.grid.model_copy(update={"grids": demo_slice.grid.grids[:1]}),
    }
    threads = _own(demo_slice, tmp_path / "threads", **small)
    cfg_file = _config_file(threads, tmp_path / "threads" / "cfg.yaml")
    for stage in ("ingest", "fit", "estimate", "grid"):
        assert main(["--config", str(cfg_file), "-q", stage]) == 0
    cluster_dir = tmp_path / "cluster" / "processed"
    shutil.copytree(threads.processed / "ingest", cluster_dir / "ingest")
    shutil.copytree(threads.processed / "fit", cluster_dir / "fit")
    on_cluster = _own(
        demo_slice, tmp_path / "cluster", **small, dask=DaskConfig(scheduler=process_cluster.scheduler_address)
    )
    cluster_file = _config_file(on_cluster, tmp_path / "cluster" / "cfg.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for stage in ("estimate", "grid"):
            assert main(["--config", str(cluster_file), "-q", stage]) == 0
    assert not [w for w in caught if "large graph" in str(w.message)]
    for folder in ("estimate", "estimate_tier1"):
        assert _hashes(cluster_dir / folder) == _hashes(threads.processed / folder), folder
    on, off = _hashes(cluster_dir / "grid"), _hashes(threads.processed / "grid")
    assert any(k.endswith(".tif") for k in on) and "mass_check.csv" in on
    assert on == off  # NetCDF, COGs, mass and zonal checks: the same bytes
