"""``splitseq reproduce``: the sweep's outputs are well formed, reproducible from the checkpoints, resumable
after a kill, independent of the pool, and a finished sweep does no work.

One quick sweep on a heavily reduced step budget (module fixture) serves most tests; the kill test runs the
same sweep in a subprocess with a 2-worker pool, kills it with SIGKILL at a random moment and resumes it, and
the interrupt test stops it with SIGTERM and Ctrl-C (within seconds, workers included) and resumes it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import agents
import measures
from agents.cli import main as splitseq_main
from agents.pipeline import (
    RESULT_COLUMNS,
    SweepConfig,
    Unit,
    figures,
    finetune_config,
    plan,
    pretrain_config,
    report,
    run_sweep,
    units_to_run,
)
from agents.pipeline.measure import N_BOOTSTRAP, reference_policies
from agents.pipeline.sweep import SweepLock
from seqenv.sequence import natural_histories

torch.set_num_threads(1)


def reproduce_main(argv: list[str]) -> int:
    return splitseq_main(["reproduce", *argv])


REPO = Path(__file__).resolve().parents[2]
#: the reduced budget: every trainer step count times this (tiny: a few dozen steps)
SCALE = 0.02
N_HIST = 512
ARGS = ["--preset", "quick", "--steps-scale", str(SCALE), "--n-histories", str(N_HIST)]
NUMERIC = ["success", "baseline_success", "op", "op_theory", "imp", "imp_min", "self_op", "self_imp"]


def quick_config() -> SweepConfig:
    return SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick")
    summary = run_sweep(out, quick_config(), workers=1, progress=False)
    assert not summary.failed
    return out


@pytest.fixture(scope="module")
def results(sweep_dir) -> pd.DataFrame:
    return report.read_csv(sweep_dir / "results.csv")


def _snapshot(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


# ------------------------------------------------------------------------------------------------ schema
def test_results_have_one_row_per_model_and_eval_task(results):
    cfg = quick_config()
    assert list(results.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    refs = ["uniform", "natural"] + [f"oracle-{t}" for t in cfg.tasks]
    trained = [f"tiny-s0-{t}" for t in ("pretrained", *cfg.tasks)]
    assert sorted(results["model"].unique()) == sorted(refs + trained)
    assert len(results) == len(refs + trained) * len(cfg.tasks)
    assert not results.duplicated(["model", "eval_task"]).any()
    for _, g in results.groupby("model"):
        assert sorted(g["eval_task"]) == sorted(cfg.tasks)
    kinds = results.drop_duplicates("model").set_index("model")["kind"]
    assert set(kinds[refs]) == {"reference"} and kinds["tiny-s0-pretrained"] == "pretrained"
    assert all(kinds[f"tiny-s0-{t}"] == "finetuned" for t in cfg.tasks)


def test_result_values_are_in_range(results):
    for col in ("success", "baseline_success", "p"):
        assert results[col].between(0, 1).all(), col
    assert np.isfinite(results[["op", "op_theory", "imp", "imp_min"]].to_numpy(float)).all()
    # KLs: non-negative up to float rounding (Imp_min of a policy with s = s' can come out as -6e-17)
    assert (results["imp_min"] >= -1e-12).all() and (results["op_theory"] >= -1e-12).all()
    # Imp >= Imp_min is a theorem (post, appendix B): only float rounding may break it
    assert (results["imp"] >= results["imp_min"] - 1e-9).all()
    # Op is at most the entropy of 8 outcomes; every interval brackets its estimate (where BCa would miss it at
    # a few hundred histories, measures falls back to the jackknife interval: issue 17)
    assert (results["op"].abs() <= np.log(8) + 1e-9).all()
    for col in ("success", "op", "imp"):
        assert (results[f"{col}_lo"] <= results[col] + 1e-12).all(), col
        assert (results[col] <= results[f"{col}_hi"] + 1e-12).all(), col
    # Op and Imp do not depend on the evaluation task; success, Op_theory and Imp_min do
    for _, g in results.groupby("model"):
        assert g["op"].nunique() == 1 and g["imp"].nunique() == 1
    p = {"ngood2": 0.25, "ngood4": 0.5, "ngood6": 0.75}
    assert (results["p"] == results["eval_task"].map(p)).all()


def test_outputs_are_as_readable_as_a_plain_write(sweep_dir):
    # atomic writes used to keep their temporary file's mode 0600: a shared sweep was unreadable to the team
    mask = os.umask(0)
    os.umask(mask)
    want = 0o666 & ~mask
    outputs = ["results.csv", "report.md", "histories.npy", "sweep.json", "timings.csv", "runs.csv"]
    outputs += [str(p.relative_to(sweep_dir)) for p in sweep_dir.rglob("*.pt")]
    modes = {rel: oct((sweep_dir / rel).stat().st_mode & 0o777) for rel in outputs}
    assert set(modes.values()) == {oct(want)}, modes


def test_models_carry_checkpoints_and_references_do_not(sweep_dir, results):
    refs = results[results["kind"] == "reference"]
    assert (refs["checkpoint"] == "").all() and refs["seed"].isna().all() and refs["self_op"].isna().all()
    trained = results[results["kind"] != "reference"]
    assert (
        (trained["params"] == 17980).all()
        and (trained["seed"] == 0).all()
        and (trained["size"] == "tiny").all()
    )
    for ckpt, g in trained.groupby("checkpoint"):
        assert not Path(ckpt).is_absolute()
        policy = agents.load(sweep_dir / ckpt)
        assert policy.meta["size"] == "tiny"
        train_task = g["train_task"].iloc[0]
        assert (
            policy.meta.get("task", "") == train_task if train_task else policy.meta["kind"] == "pretrained"
        )
        # the steps actually run, as the sweep's (scaled) configs asked
        cfg = quick_config()
        run = finetune_config(cfg, "tiny", 0, train_task) if train_task else pretrain_config(cfg, "tiny", 0)
        want = run.steps
        assert (g["train_steps"] == want).all(), ckpt
    assert refs["train_steps"].isna().all()
    assert np.isfinite(
        trained[["self_op", "self_imp", "nt_loss", "acc_even", "acc_odd"]].to_numpy(float)
    ).all()


def test_every_model_is_measured_on_the_same_seeded_histories(sweep_dir, results):
    cfg = quick_config()
    h = np.load(sweep_dir / "histories.npy")
    np.testing.assert_array_equal(h, natural_histories(N_HIST, seed=cfg.eval_seed))
    assert (results["n_histories"] == N_HIST).all()


def test_measures_reproduces_every_row_from_the_saved_checkpoints(sweep_dir, results):
    cfg = quick_config()
    h = np.load(sweep_dir / "histories.npy")
    refs = reference_policies(cfg)
    for model, g in results.groupby("model"):
        ckpt = g["checkpoint"].iloc[0]
        policy = agents.load(sweep_dir / ckpt) if ckpt else refs[model]
        again = measures.cross_objective(
            policy, cfg.tasks, histories=h, seed=cfg.eval_seed, ci=True, n_bootstrap=N_BOOTSTRAP
        )
        mine = g.set_index("eval_task").loc[list(again.index)]
        for col in ("success", "baseline_success", "op", "op_theory", "imp", "imp_min", "op_lo", "op_hi"):
            np.testing.assert_array_equal(
                mine[col].to_numpy(float), again[col].to_numpy(float), err_msg=f"{model} {col}"
            )
        ident = measures.identify_objective(
            policy, cfg.tasks, histories=h, seed=cfg.eval_seed, n_bootstrap=N_BOOTSTRAP
        )
        assert (mine["identified_task"] == ident.task).all()
        if ckpt:
            se = measures.self_evaluate(policy, cfg.tasks[0], histories=h, seed=cfg.eval_seed, n_bootstrap=0)
            assert mine["self_op"].iloc[0] == se.op_self and mine["self_imp"].iloc[0] == se.imp_self
            assert mine["op"].iloc[0] == pytest.approx(se.op, abs=1e-12)  # same Op from both entry points


# ------------------------------------------------------------------------------------- figures and report
def test_figures_are_decodable_non_trivial_pngs(sweep_dir):
    import matplotlib.image as mpimg

    for name in figures.FIGURES:
        path = sweep_dir / "figures" / name
        assert path.stat().st_size > 15_000, name
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 400, (name, img.shape)
        assert img[..., :3].std() > 0.05, f"{name} is (almost) blank"


def test_report_embeds_every_figure_and_the_headline_numbers(sweep_dir, results):
    text = (sweep_dir / "report.md").read_text()
    for name in figures.FIGURES:
        assert f"(figures/{name})" in text
    ident = report.headline_identification(results)
    assert ident["n"] == 3 and ident["confusion"].to_numpy().sum() == 3
    assert f"({ident['correct']}/{ident['n']}; chance 33%)" in text
    bound = report.headline_imp_bound(results)
    assert bound["models_ok"] == bound["models"] == 9  # 5 reference policies, 1 pretrained, 3 finetuned
    assert f"**{bound['models_ok']}/{bound['models']} models**" in text
    floor = report.headline_natural_floor(results)
    nat = results[results["model"] == "natural"]["op"].iloc[0]
    assert floor["natural_op"] == nat and f"**{nat:.3f} nats**" in text
    frac = report.headline_success_fraction(results)
    assert len(frac) == 3 and (frac["n"] == 1).all()
    # the fraction of the way from uniform to oracle, recomputed by hand for one task
    row = results[(results["model"] == "tiny-s0-ngood4") & (results["eval_task"] == "ngood4")].iloc[0]
    lo = results[(results["model"] == "uniform") & (results["eval_task"] == "ngood4")]["success"].iloc[0]
    hi = results[(results["model"] == "oracle-ngood4") & (results["eval_task"] == "ngood4")]["success"].iloc[
        0
    ]
    assert frac.set_index("train_task").loc["ngood4", "mean"] == pytest.approx(
        (row["success"] - lo) / (hi - lo)
    )


def test_results_say_how_far_each_finetuning_still_rose(sweep_dir, results):
    """``train_rise``: the held-out success's rise over the last quarter of each finetuning (in fractions of
    the way to the oracle), recomputed by hand from the trainer's history; only finetuned models have one."""
    fine = results[results["kind"] == "finetuned"].drop_duplicates("model")
    assert (
        fine["train_rise"].notna().all()
        and results[results["kind"] != "finetuned"]["train_rise"].isna().all()
    )
    for row in fine.itertuples():
        h = pd.read_csv(sweep_dir / (row.checkpoint + ".history.csv"))
        steps, frac = list(h["step"]), list(h["frac_of_oracle"])
        x = 0.75 * steps[-1]  # the value there, on the straight line between the evaluations around it
        i = max(j for j in range(len(steps)) if steps[j] <= x)
        w = (x - steps[i]) / (steps[i + 1] - steps[i])
        assert row.train_rise == pytest.approx(frac[-1] - ((1 - w) * frac[i] + w * frac[i + 1]), abs=1e-12)
    text = (sweep_dir / "report.md").read_text()
    assert f"held-out success rose by a median {fine['train_rise'].median():.3f}" in text


def test_timings_record_every_unit(sweep_dir):
    t = pd.read_csv(sweep_dir / "timings.csv")
    assert list(t["unit"]) == [u.name for u in plan(quick_config())]
    assert (t["wall_s"] > 0).all() and (t["threads"] == 1).all()
    # CPU time of the unit's process: positive, and the invocation's runs.csv row holds the units' sum
    assert (t["cpu_s"] > 0).all()
    runs = pd.read_csv(sweep_dir / "runs.csv")
    assert runs["cpu_s"].iloc[0] == pytest.approx(t["cpu_s"].sum(), abs=0.01 * len(t))


# ------------------------------------------------------------------------------------------------ resume
def test_rerunning_a_finished_sweep_does_no_work(sweep_dir):
    before = _snapshot(sweep_dir)
    runs = pd.read_csv(sweep_dir / "runs.csv")
    summary = run_sweep(sweep_dir, quick_config(), workers=1, progress=False)
    assert summary.ran == [] and len(summary.skipped) == len(plan(quick_config()))
    assert _snapshot(sweep_dir) == before  # not a single file rewritten (not even runs.csv)
    assert len(pd.read_csv(sweep_dir / "runs.csv")) == len(runs)


def test_a_newer_input_makes_its_dependants_stale(sweep_dir, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(sweep_dir, root)
    units = plan(quick_config())
    assert units_to_run(root, units) == []
    pre = root / "models/tiny-s0/pretrained.pt"
    later = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()) + 10**9  # newer than anything
    os.utime(pre, ns=(later, later))
    stale = {u.name for u in units_to_run(root, units)}
    assert stale == {
        "finetune:tiny-s0-ngood2",
        "finetune:tiny-s0-ngood4",
        "finetune:tiny-s0-ngood6",
        "measure:tiny-s0-pretrained",
        "measure:tiny-s0-ngood2",
        "measure:tiny-s0-ngood4",
        "measure:tiny-s0-ngood6",
        "report",
    }
    (root / "measures/reference.csv").unlink()
    assert {u.name for u in units_to_run(root, units)} == stale | {"measure:reference"}


def test_sweeps_of_other_seeds_merge_into_one_finished_sweep(sweep_dir, tmp_path):
    # seed 1 run apart (as on another machine), then merged with the seed-0 sweep through the CLI
    other = tmp_path / "seed1"
    run_sweep(
        other,
        SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, seeds=(1,)),
        workers=1,
        progress=False,
    )
    out = tmp_path / "merged"
    assert reproduce_main(["--merge", str(sweep_dir), str(other), "--out", str(out), "--no-progress"]) == 0
    merged_cfg = SweepConfig.from_dict(json.loads((out / "sweep.json").read_text()))
    assert merged_cfg == SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, seeds=(0, 1))
    merged = report.read_csv(out / "results.csv")

    def refs(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["kind"] == "reference"].reset_index(drop=True)

    for src, seed in ((sweep_dir, 0), (other, 1)):
        mine = report.read_csv(src / "results.csv")
        rows = merged[merged["seed"] == seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            rows, mine[mine["seed"] == seed].reset_index(drop=True), check_exact=True
        )
        pd.testing.assert_frame_equal(refs(merged), refs(mine), check_exact=True)
        for ckpt in mine["checkpoint"][mine["checkpoint"] != ""]:
            assert (out / ckpt).read_bytes() == (src / ckpt).read_bytes()
    # a finished sweep of both seeds: only the report was built, and a rerun has nothing to do
    timings = pd.read_csv(out / "timings.csv")
    assert timings["wall_s"].notna().all() and set(timings["unit"]) == {u.name for u in plan(merged_cfg)}
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["source"].dropna()) == {str(sweep_dir.resolve()), str(other.resolve())}
    assert runs["units_run"].iloc[-1] == 1  # the merged report
    assert run_sweep(out, merged_cfg, workers=1, progress=False).ran == []
    assert "seeds 0, 1" in (out / "report.md").read_text()


def test_merging_refuses_sweeps_that_do_not_fit_together(sweep_dir, tmp_path, capsys):
    def merge(*dirs: Path, extra: tuple[str, ...] = ()) -> str:
        assert reproduce_main(["--merge", *map(str, dirs), "--out", str(tmp_path / "m"), *extra]) == 2
        return capsys.readouterr().err

    assert "seed 0 is in both" in merge(sweep_dir, sweep_dir)
    changed = tmp_path / "changed"
    shutil.copytree(sweep_dir, changed)
    cfg = json.loads((changed / "sweep.json").read_text())
    (changed / "sweep.json").write_text(json.dumps({**cfg, "seeds": [1], "n_histories": 256}))
    assert "n_histories: 512 vs 256" in merge(sweep_dir, changed)
    (changed / "sweep.json").write_text(json.dumps({**cfg, "seeds": [1]}))
    assert "is not finished" in merge(sweep_dir, changed)  # its files are seed 0's: seed 1 has no models
    assert "drop --seeds" in merge(sweep_dir, changed, extra=("--seeds", "3"))
    assert "ran the 'quick' preset" in merge(sweep_dir, changed, extra=("--preset", "full"))
    assert "at least two" in merge(sweep_dir)
    assert not (tmp_path / "m" / "results.csv").exists()


def test_a_sweep_killed_at_a_random_moment_resumes_to_the_same_results(sweep_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "agents",
        "reproduce",
        *ARGS,
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # the installed package, from any directory
    runs = pd.read_csv(sweep_dir / "timings.csv")
    busy = float(runs["wall_s"].sum())  # the uninterrupted sweep's work, in seconds
    delay = random.uniform(1.0, 2.0 + 0.6 * busy)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.6)  # pool workers notice their parent is gone and exit (they poll every 0.2 s)
    # whatever the kill interrupted, every file left behind is whole
    for path in out.rglob("*"):
        if (
            not path.is_file()
            or path.name.endswith(".tmp")
            or path.name.endswith(".tmp.png")
            or path.name == ".lock"
        ):
            continue
        if path.suffix == ".pt":
            agents.checkpoint.load_checkpoint(path)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"resume after a kill at {delay:.1f} s failed:\n{done.stderr[-3000:]}"
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    a = pd.read_csv(sweep_dir / "results.csv")
    b = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(
        a.drop(columns="checkpoint"),
        b.drop(columns="checkpoint"),
        check_exact=True,
        obj=f"results after a kill at {delay:.1f} s",
    )


def _alive_in_session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``: the sweep and every worker it started."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, session = (d / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(session) == sid and state != "Z":
            pids.append(int(d.name))
    return pids


def _terminal_sigint() -> None:
    """In the child: Ctrl-C acts as in a terminal even when pytest itself runs in the background (a shell
    starts background jobs, and so their children, with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _assert_whole(out: Path) -> None:
    """Every file a stopped sweep left behind (temporaries and the lock aside) reads back whole."""
    for path in out.rglob("*"):
        if not path.is_file() or ".tmp" in path.name or path.name == ".lock":
            continue
        if path.suffix == ".pt":
            agents.checkpoint.load_checkpoint(path)
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".npy":
            np.load(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_an_interrupted_sweep_stops_in_seconds_and_resumes_to_the_same_results(sweep_dir, tmp_path, backend):
    # SIGTERM, then Ctrl-C (SIGINT to the whole process group, as a terminal sends it), each at a random
    # moment of a 2-worker sweep: the sweep and its workers are gone within 10 s, stderr is one line saying
    # how to resume, every file left is whole, and resuming gives the uninterrupted sweep's results. (A pool
    # once waited in ProcessPoolExecutor.shutdown for its running units: over 10 minutes.)
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is not installed (pip install 'splitseq[ray]')")
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "agents", "reproduce", *ARGS, "--out", str(out), "--workers", "2"]
    cmd += ["--backend", backend, "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    busy = float(pd.read_csv(sweep_dir / "timings.csv")["wall_s"].sum())
    for sig in (signal.SIGTERM, signal.SIGINT):
        delay = random.uniform(1.0, 2.0 + 0.3 * busy)
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_terminal_sigint,
        )
        time.sleep(delay)
        t0 = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(
                f"{signal.Signals(sig).name} at {delay:.1f} s: the sweep was still running 30 s later"
            )
        stopped = time.monotonic() - t0
        while _alive_in_session(proc.pid) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        gone = time.monotonic() - t0
        assert not _alive_in_session(proc.pid), f"processes left after {signal.Signals(sig).name}"
        if proc.returncode == 0:  # it finished before the signal came
            break
        what = "terminated" if sig == signal.SIGTERM else "interrupted"
        assert proc.returncode == 128 + sig and "Traceback" not in err, err
        assert (
            err.strip().splitlines()[-1].startswith(f"splitseq reproduce: {what}; rerun the same command")
        ), err
        assert stopped < 10 and gone < 10, (delay, stopped, gone)
        _assert_whole(out)
    done = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    pd.testing.assert_frame_equal(
        pd.read_csv(sweep_dir / "results.csv").drop(columns="checkpoint"),
        pd.read_csv(out / "results.csv").drop(columns="checkpoint"),
        check_exact=True,
    )


# --------------------------------------------------------------------------------------------------- ray
def test_ray_backend_runs_the_same_units(sweep_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'splitseq[ray]')")
    root = tmp_path / "ray"
    shutil.copytree(sweep_dir, root)
    # drop one finetuned model and its measurement: Ray must retrain and remeasure it
    for rel in ("models/tiny-s0/ngood2.pt", "measures/tiny-s0-ngood2.csv"):
        (root / rel).unlink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(root, quick_config(), workers=2, backend="ray", progress=False)
    finally:
        ray.shutdown()
    assert set(summary.ran) == {"finetune:tiny-s0-ngood2", "measure:tiny-s0-ngood2", "report"}
    rec = json.loads((root / "timings/finetune_tiny-s0-ngood2.json").read_text())
    assert rec["pid"] != os.getpid()  # it ran in a Ray worker
    pd.testing.assert_frame_equal(
        pd.read_csv(sweep_dir / "results.csv"), pd.read_csv(root / "results.csv"), check_exact=True
    )


# -------------------------------------------------------------------------------------------- bad input
def test_bad_settings_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of 'quick', 'full'; got 'huge'"):
        SweepConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown size 'giant'"):
        SweepConfig.from_preset("quick", sizes=["giant"])
    with pytest.raises(ValueError, match="unknown task 'ngood3'"):
        SweepConfig.from_preset("quick", tasks=["ngood3"])
    with pytest.raises(ValueError, match="steps_scale must be a finite number > 0, got 0.0"):
        SweepConfig.from_preset("quick", steps_scale=0.0)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        run_sweep(tmp_path / "a", quick_config(), workers=0)
    with pytest.raises(ValueError, match="backend must be one of 'local', 'ray'; got 'slurm'"):
        run_sweep(tmp_path / "a", quick_config(), backend="slurm")


def test_the_finetuning_method_is_a_sweep_setting():
    post, rf = SweepConfig.from_preset("full"), SweepConfig.from_preset("full", method="reinforce")
    assert post.method == "positive"  # the post's method unless asked otherwise
    assert finetune_config(post, "large", 0, "ngood4").method == "positive"
    cfg = finetune_config(rf, "large", 0, "ngood4")
    assert (cfg.method, cfg.batch_size, cfg.steps) == ("reinforce", 2048, 250)
    # a sweep.json written before the method was a setting reads as the post's method
    old = {k: v for k, v in post.to_dict().items() if k != "method"}
    assert SweepConfig.from_dict(old) == post
    with pytest.raises(ValueError, match="method must be one of 'positive', 'reinforce'; got 'ppo'"):
        SweepConfig.from_preset("quick", method="ppo")


def test_a_directory_of_another_sweep_is_refused(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    other = SweepConfig.from_preset("quick", steps_scale=0.5, n_histories=N_HIST)
    (root / "sweep.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(ValueError, match=r"other settings \(steps_scale: 0.5 -> 0.02\)"):
        run_sweep(root, quick_config(), progress=False)


def test_two_sweeps_never_share_a_directory(tmp_path):
    lock = SweepLock(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="in use by another reproduce run"):
            run_sweep(tmp_path, quick_config(), progress=False)
    finally:
        lock.release()


def test_plan_orders_every_unit_after_its_inputs():
    units = plan(SweepConfig.from_preset("full"))
    seen: set[str] = set()
    for u in units:
        assert isinstance(u, Unit) and set(u.deps) <= seen, u.name
        seen.add(u.name)
    kinds = pd.Series([u.kind for u in units]).value_counts()
    assert (
        kinds["pretrain"] == 20
        and kinds["finetune"] == 60
        and kinds["measure"] == 80
        and kinds["reference"] == 1
    )
    assert len({u.output for u in units}) == len(units)


# --------------------------------------------------------------------------------------------------- CLI
def test_the_command_runs_from_any_directory_without_path_tricks(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for cmd in (["splitseq", "reproduce", "--help"], [sys.executable, "-m", "agents", "reproduce", "--help"]):
        out = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert out.returncode == 0 and "--preset" in out.stdout and "--backend" in out.stdout, out.stderr
    # no module of the installed packages edits the import path
    for pkg in ("seqenv", "measures", "agents"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            assert "sys.path" not in text and "PYTHONPATH" not in text, path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sizes", "giant"], "unknown size 'giant'"),
        (["--tasks", "ngood3"], "unknown task 'ngood3'"),
        (["--seeds", "0", "0"], "seeds repeats a value"),
    ],
)
def test_bad_sweep_settings_are_one_line(argv, expected, tmp_path, capsys):
    assert reproduce_main(["--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err


def test_results_say_which_policies_are_optimizers(results):
    by_model = results.drop_duplicates("model").set_index("model")["is_optimizer"].astype(bool)
    assert not by_model["uniform"] and not by_model["natural"] and not by_model["tiny-s0-pretrained"]
    assert all(by_model[f"oracle-{t}"] for t in quick_config().tasks)
    ident = report.headline_identification(results)
    assert ident["recorded"] and ident["false_optimizers"] == []
    assert ident["confusion"].to_numpy().sum() == 3 and "not an optimizer" in ident["confusion"].columns
    # the rule's floor is the natural policy's Op on the same histories
    natural = results[results["model"] == "natural"]
    assert np.allclose(results["natural_op"], natural["op"].iloc[0], rtol=0, atol=1e-12)


def test_self_evaluation_splits_the_world_error_by_context(results):
    trained = results[results["kind"] != "reference"]
    for col in ("self_acc_natural", "self_acc_counterfactual", "split_natural_share"):
        assert trained[col].between(0, 1).all(), col
    assert (trained["self_kl_natural"] >= 0).all() and (trained["self_kl_counterfactual"] >= 0).all()
    # models trained on natural sequences only know the world after the sequence's own odd token
    assert (trained["self_acc_natural"] > trained["self_acc_counterfactual"]).all()
