"""Per-seed bundles: a finished sweep packed for git (weights without resume state, a sha256 manifest), and
merged back, through a copy that keeps no modification times, into a finished sweep whose report equals the
one merged from the sweep directories themselves.

Two quick sweeps on a heavily reduced budget (seeds 0 and 1, module fixtures) serve every test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import agents
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.cli import main as splitseq_main
from agents.finetune import finetune
from agents.pipeline import (
    BundleError,
    SweepConfig,
    make_bundle,
    merge_sweeps,
    plan,
    run_sweep,
    units_to_run,
    verify_bundle,
)
from agents.pipeline.bundle import BUNDLE_FILE, FINISHED_STATE_KEYS, unit_files
from agents.pipeline.layout import checkpoint_path
from agents.pipeline.measure import measure_model
from agents.pipeline.records import save_csv
from agents.pipeline.units import finetune_config

torch.set_num_threads(1)

SCALE = 0.02
N_HIST = 512


def config(seed: int) -> SweepConfig:
    return SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, seeds=(seed,))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> list[Path]:
    roots = []
    for seed in (0, 1):
        root = tmp_path_factory.mktemp(f"sweep{seed}")
        assert not run_sweep(root, config(seed), workers=1, progress=False).failed
        roots.append(root)
    return roots


@pytest.fixture(scope="module")
def bundles(sweeps, tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("bundles")
    for seed, root in enumerate(sweeps):
        make_bundle(root, out / f"seed-{seed}")
    return [out / "seed-0", out / "seed-1"]


def clone(src: Path, dst: Path) -> Path:
    """Copy a bundle as ``git clone`` would: bytes only, no modification times; the files are written in
    reverse order and then dated newest-first, so every file looks older than the ones made from it."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for rel in reversed(files):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dst / rel)
    t = 1_700_000_000 * 10**9
    for i, rel in enumerate(files):
        os.utime(dst / rel, ns=(t - i * 10**9, t - i * 10**9))
    return dst


def sweep_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def bundle_main(argv: list[str]) -> int:
    return splitseq_main(["bundle", *argv])


def reproduce_main(argv: list[str]) -> int:
    return splitseq_main(["reproduce", *argv])


# ------------------------------------------------------------------------------------------ the bundle
def test_a_bundle_holds_the_results_inputs_under_a_manifest_that_verifies(sweeps, bundles):
    root, bundle = sweeps[0], bundles[0]
    manifest = verify_bundle(bundle)
    units = [u for u in plan(config(0)) if u.kind != "report"]
    want = {"sweep.json", "histories.npy.gz", "runs.csv", "timings.csv"}
    want |= {u.output for u in units if u.kind != "histories"}
    want |= {f"timings/{u.name.replace(':', '_')}.json" for u in units}
    want |= {f"{u.output}.history.csv" for u in units if u.kind in ("pretrain", "finetune")}
    assert set(manifest["files"]) == want and sweep_files(bundle) == want | {BUNDLE_FILE}
    # no TensorBoard logs, figures, results table or report
    assert not {"results.csv", "report.md"} & sweep_files(bundle) and not (bundle / "tb").exists()
    for rel, entry in manifest["files"].items():
        data = (bundle / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
        if rel != "histories.npy.gz":  # every other file is the sweep's own, byte for byte
            assert data == (root / rel).read_bytes(), rel
    assert (
        gzip.decompress((bundle / "histories.npy.gz").read_bytes()) == (root / "histories.npy").read_bytes()
    )
    assert manifest["sweep"] == config(0).to_dict() and manifest["seeds"] == [0]
    assert manifest["total_bytes"] == sum(e["size"] for e in manifest["files"].values())
    assert manifest["weights_stripped"] == []  # the trainers' final checkpoints hold no resume state
    for rel in manifest["files"]:
        if rel.endswith(".pt"):
            state = load_checkpoint(bundle / rel)["train_state"]
            assert state["finished"] and set(state) <= set(FINISHED_STATE_KEYS), rel


def test_bundled_checkpoints_give_the_same_outputs_and_measures(sweeps, bundles, tmp_path):
    root, bundle = sweeps[0], bundles[0]
    h = np.load(root / "histories.npy")
    for ckpt in sorted(p.relative_to(bundle) for p in bundle.rglob("*.pt")):
        mine, theirs = agents.load(bundle / ckpt), agents.load(root / ckpt)
        np.testing.assert_array_equal(mine.action_probs(h), theirs.action_probs(h), err_msg=str(ckpt))
    # re-measuring a bundled model reproduces its measures row for row, from the bundle alone
    unpacked = tmp_path / "unpacked"
    merge_sweeps(unpacked, [bundle])
    for name, ckpt in (
        ("tiny-s0-ngood4", "models/tiny-s0/ngood4.pt"),
        ("tiny-s0-pretrained", "models/tiny-s0/pretrained.pt"),
    ):
        save_csv(measure_model(unpacked, ckpt, config(0)), tmp_path / f"{name}.csv")
        assert (tmp_path / f"{name}.csv").read_bytes() == (bundle / f"measures/{name}.csv").read_bytes()


def test_resume_state_in_a_finished_checkpoint_is_dropped(sweeps, tmp_path):
    root = tmp_path / "sweep"
    shutil.copytree(sweeps[0], root)
    pt = root / "models/tiny-s0/ngood2.pt"
    ckpt = load_checkpoint(pt)
    params = list(agents.load(pt).model.parameters())
    opt = torch.optim.Adam(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()  # an optimizer with state, as a resumable checkpoint holds
    mtime = pt.stat().st_mtime_ns
    save_checkpoint(
        pt, agents.load(pt).model, ckpt["kind"], ckpt["meta"], {**ckpt["train_state"], "optimizer": opt}
    )
    os.utime(pt, ns=(mtime, mtime))  # as if the trainer had written it: the sweep stays finished
    manifest = make_bundle(root, tmp_path / "bundle")
    rel = "models/tiny-s0/ngood2.pt"
    assert manifest["weights_stripped"] == [rel]
    assert manifest["files"][rel]["size"] < pt.stat().st_size
    slim, full = load_checkpoint(tmp_path / "bundle" / rel), load_checkpoint(pt)
    assert "optimizer" not in slim["train_state"] and slim["meta"] == full["meta"]
    assert all(torch.equal(slim["model"][k], v) for k, v in full["model"].items())
    h = np.load(root / "histories.npy")
    np.testing.assert_array_equal(
        agents.load(tmp_path / "bundle" / rel).action_probs(h), agents.load(pt).action_probs(h)
    )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"X"), "does not match its sha256"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "bytes, bundle.json says"),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_a_damaged_bundle_is_refused_naming_the_file(bundles, tmp_path, capsys, damage, expected):
    bundle = tmp_path / "b"
    shutil.copytree(bundles[1], bundle)
    rel = "measures/tiny-s1-ngood4.csv"
    damage(bundle / rel)
    with pytest.raises(BundleError, match=expected) as err:
        verify_bundle(bundle)
    assert rel in str(err.value)
    assert bundle_main(["--verify", str(bundle)]) == 2
    assert reproduce_main(["--merge", str(bundles[0]), str(bundle), "--out", str(tmp_path / "m")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(rel in line and expected in line for line in lines)
    assert not (tmp_path / "m" / "results.csv").exists()


def test_a_bundle_missing_a_unit_or_with_an_edited_manifest_is_refused(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles[0], bundle)
    manifest = json.loads((bundle / BUNDLE_FILE).read_text())
    files = dict(manifest["files"])
    del files["measures/tiny-s0-ngood6.csv"]
    (bundle / BUNDLE_FILE).write_text(json.dumps({**manifest, "files": files}))
    with pytest.raises(BundleError, match="incomplete bundle: it lacks measures/tiny-s0-ngood6.csv"):
        verify_bundle(bundle)
    other = {**manifest, "sweep": {**manifest["sweep"], "n_histories": 256}}
    (bundle / BUNDLE_FILE).write_text(json.dumps(other))
    with pytest.raises(BundleError, match="sweep.json and bundle.json hold different settings"):
        verify_bundle(bundle)


# ------------------------------------------------------------------------------------------------ merge
@pytest.fixture(scope="module")
def merged(sweeps, bundles, tmp_path_factory) -> dict[str, Path]:
    """The two seeds merged through the command line from the sweeps, from cloned bundles, and from both."""
    tmp = tmp_path_factory.mktemp("merged")
    clones = [clone(b, tmp / f"clone{i}") for i, b in enumerate(bundles)]
    assert bundle_main(["--verify", *map(str, clones)]) == 0  # times do not matter, checksums do
    out = {}
    for name, sources in (("sweeps", sweeps), ("bundles", clones), ("mixed", [sweeps[0], clones[1]])):
        out[name] = tmp / name
        assert reproduce_main(["--merge", *map(str, sources), "--out", str(out[name]), "--no-progress"]) == 0
        runs = pd.read_csv(out[name] / "runs.csv")
        assert set(runs["source"].dropna()) == {str(Path(s).resolve()) for s in sources}
    return out


def test_merging_cloned_bundles_equals_merging_the_sweeps(merged):
    want = (merged["sweeps"] / "results.csv").read_bytes()
    for name in ("bundles", "mixed"):
        out = merged[name]
        assert pd.read_csv(out / "runs.csv")["units_run"].iloc[-1] == 1  # only the report ran
        cfg = SweepConfig.from_dict(json.loads((out / "sweep.json").read_text()))
        assert cfg == SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, seeds=(0, 1))
        assert units_to_run(out, plan(cfg)) == []  # a finished sweep, report included
        assert (out / "results.csv").read_bytes() == want, name
        assert (out / "report.md").is_file() and len(list((out / "figures").glob("*.png"))) >= 10


def test_a_merged_sweep_bundles_whole_and_one_bundle_unpacks(merged, tmp_path):
    both = merged["bundles"]
    manifest = make_bundle(both, tmp_path / "bundle")  # any number of seeds: bundled together
    assert manifest["seeds"] == [0, 1]
    out = tmp_path / "unpacked"
    assert (
        reproduce_main(["--merge", str(clone(tmp_path / "bundle", tmp_path / "c")), "--out", str(out)]) == 0
    )
    assert (out / "results.csv").read_bytes() == (both / "results.csv").read_bytes()


# ------------------------------------------------------------------------------------------------ refusals
def test_unfinished_sweeps_and_occupied_directories_are_refused(sweeps, bundles, tmp_path, capsys):
    root = tmp_path / "sweep"
    shutil.copytree(sweeps[0], root)
    (root / "measures/tiny-s0-ngood4.csv").unlink()
    with pytest.raises(BundleError, match=r"is not finished: 1 units left \(first: measure:tiny-s0-ngood4\)"):
        make_bundle(root, tmp_path / "b")
    shutil.copy2(sweeps[0] / "measures/tiny-s0-ngood4.csv", root / "measures/tiny-s0-ngood4.csv")
    pre = root / "models/tiny-s0/pretrained.pt"
    later = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()) + 10**9
    os.utime(pre, ns=(later, later))  # retrained: everything made from it is stale
    with pytest.raises(BundleError, match="is not finished: 7 units left"):
        make_bundle(root, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    # --out: something else, a bundle of another sweep, the bundle itself; an earlier bundle of the same
    # sweep is replaced
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"already holds files \(notes.txt, ...\) and is not a bundle"):
        make_bundle(sweeps[0], busy)
    with pytest.raises(BundleError, match="holds a bundle of another sweep"):
        make_bundle(sweeps[0], bundles[1])
    with pytest.raises(BundleError, match="is a bundle already"):
        make_bundle(bundles[0], tmp_path / "b")
    again = tmp_path / "again"
    shutil.copytree(bundles[0], again)
    assert make_bundle(sweeps[0], again)["files"] == verify_bundle(bundles[0])["files"]
    # the command line: one line, exit code 2
    assert bundle_main([str(sweeps[0]), "--out", str(busy)]) == 2
    assert bundle_main([str(sweeps[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("splitseq bundle: error: ") for line in err)
    assert "not a bundle" in err[0] and "--out BUNDLE_DIR" in err[1]


def test_merging_bundles_keeps_the_sweep_checks(sweeps, bundles, tmp_path, capsys):
    def merge(*dirs: Path) -> str:
        assert reproduce_main(["--merge", *map(str, dirs), "--out", str(tmp_path / "m")]) == 2
        return capsys.readouterr().err

    assert "seed 0 is in both" in merge(bundles[0], sweeps[0])
    assert "at least two" in merge(sweeps[0])  # one sweep directory merges with nothing
    changed = tmp_path / "changed"
    shutil.copytree(bundles[1], changed)
    manifest = json.loads((changed / BUNDLE_FILE).read_text())
    manifest["sweep"]["n_histories"] = 256
    (changed / BUNDLE_FILE).write_text(json.dumps(manifest))
    assert "n_histories: 512 vs 256" in merge(bundles[0], changed)
    other = tmp_path / "other"  # seed 1 measured on other histories
    shutil.copytree(bundles[1], other)
    manifest = json.loads((other / BUNDLE_FILE).read_text())
    data = gzip.decompress((other / "histories.npy.gz").read_bytes())
    fake = gzip.compress(data[:-1] + bytes([data[-1] ^ 1]), mtime=0)
    (other / "histories.npy.gz").write_bytes(fake)
    manifest["files"]["histories.npy.gz"] = {"size": len(fake), "sha256": hashlib.sha256(fake).hexdigest()}
    manifest["histories_sha256"] = hashlib.sha256(data[:-1] + bytes([data[-1] ^ 1])).hexdigest()
    (other / BUNDLE_FILE).write_text(json.dumps(manifest))
    assert "histories.npy differs" in merge(bundles[0], other)
    assert not (tmp_path / "m" / "results.csv").exists()


# ------------------------------------------------------------------------------------------ partial bundles
def test_a_partial_bundle_carries_a_stopped_sweep_to_another_machine(sweeps, tmp_path, capsys):
    """A seed that outlives its machine: stopped half way through a finetuning, bundled with --partial,
    cloned (no file times) and unpacked elsewhere, the rerun sweep resumes that finetuning from its
    checkpoint and ends with the uninterrupted sweep's weights and measures, bit for bit, and the unit's
    timing record counts both sessions."""
    cfg, done = config(0), sweeps[0]
    root = tmp_path / "sweep"
    shutil.copytree(done, root)
    ft = next(u for u in plan(cfg) if u.kind == "finetune")
    after = [u for u in plan(cfg) if ft.name in u.deps and u.kind != "report"]
    for u in [ft, *after]:
        for rel in unit_files(u):
            (root / rel).unlink()
    fcfg = finetune_config(cfg, ft.size, ft.seed, ft.task)
    pre = root / checkpoint_path(ft.size, ft.seed)
    finetune(pre, fcfg, root / ft.output, progress=False, stop_after=fcfg.steps // 2)
    with pytest.raises(BundleError, match="--partial"):
        make_bundle(root, tmp_path / "b")
    assert bundle_main([str(root), "--partial", "--out", str(tmp_path / "b")]) == 0
    assert "a partial bundle (2 units left, 1 in progress)" in capsys.readouterr().out
    manifest = verify_bundle(tmp_path / "b", complete=False)
    assert not manifest["complete"] and manifest["units_left"] == [ft.name] + [u.name for u in after]
    assert manifest["in_progress"] == [ft.output]
    state = load_checkpoint(tmp_path / "b" / ft.output)["train_state"]  # whole: optimizer state and all
    assert state["step"] == fcfg.steps // 2 and not state.get("finished")
    assert set(state) - set(FINISHED_STATE_KEYS) and state["elapsed"] > 0 and state["cpu"] > 0
    # neither merged nor verified as finished
    with pytest.raises(BundleError, match=r"partial bundle of an unfinished sweep \(2 units left"):
        verify_bundle(tmp_path / "b")
    assert reproduce_main(["--merge", str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 2
    assert "partial bundle" in capsys.readouterr().err
    # the next machine: a clone, unpacked; only the stopped finetuning and its measure are left
    clone(tmp_path / "b", tmp_path / "c")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert bundle_main(["--unpack", str(tmp_path / "c"), "--out", str(busy)]) == 2
    assert "is not empty" in capsys.readouterr().err
    out = tmp_path / "next"
    assert bundle_main(["--unpack", str(tmp_path / "c"), "--out", str(out)]) == 0
    assert f"--seeds 0 --out {out}" in capsys.readouterr().out
    units = [u for u in plan(cfg) if u.kind != "report"]
    assert [u.name for u in units_to_run(out, units)] == manifest["units_left"]
    assert not run_sweep(out, cfg, workers=1, progress=False).failed
    for u in units:
        if u.kind == "measure":
            assert (out / u.output).read_bytes() == (done / u.output).read_bytes(), u.name
    mine, theirs = load_checkpoint(out / ft.output)["model"], load_checkpoint(done / ft.output)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    timing = json.loads((out / unit_files(ft)[1]).read_text())
    assert timing["resumed_after_s"] == pytest.approx(state["elapsed"])
    assert timing["wall_s"] > timing["resumed_after_s"] and timing["cpu_s"] > state["cpu"]
    # finished now: it bundles as a complete bundle into the same directory
    assert make_bundle(out, tmp_path / "b")["complete"]
    verify_bundle(tmp_path / "b")


# ------------------------------------------------------------------------------------- sizes run apart
def test_sizes_run_apart_merge_into_the_sweep_of_both(sweeps, bundles, tmp_path, capsys):
    """A seed's sizes run as separate sweeps (the small sizes while large's budgets are still being set)
    merge into the sweep that runs them together: the same results, byte for byte."""
    both = SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, sizes=("tiny", "small"))
    small = SweepConfig.from_preset("quick", steps_scale=SCALE, n_histories=N_HIST, sizes=("small",))
    together, apart = tmp_path / "together", tmp_path / "small"
    assert not run_sweep(together, both, workers=1, progress=False).failed
    assert not run_sweep(apart, small, workers=1, progress=False).failed
    make_bundle(apart, tmp_path / "small-bundle")
    assert (
        reproduce_main(
            ["--merge", str(bundles[0]), str(tmp_path / "small-bundle"), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    merged = SweepConfig.from_dict(json.loads((tmp_path / "m" / "sweep.json").read_text()))
    assert merged == both
    assert (tmp_path / "m" / "results.csv").read_bytes() == (together / "results.csv").read_bytes()
    capsys.readouterr()

    def refused(*dirs: Path) -> str:
        assert reproduce_main(["--merge", *map(str, dirs), "--out", str(tmp_path / "r")]) == 2
        return capsys.readouterr().err

    # tiny for seeds 0 and 1, small for seed 0 only: small seed 1 is missing
    assert "do not fill the grid of sizes ['tiny', 'small'] x seeds [0, 1]: none has small seed 1" in refused(
        *sweeps, apart
    )
    assert "tiny seed 0 is in both" in refused(together, sweeps[0])
    other = tmp_path / "other"  # small at other budgets
    shutil.copytree(tmp_path / "small-bundle", other)
    manifest = json.loads((other / BUNDLE_FILE).read_text())
    manifest["sweep"]["finetune_steps"]["small"]["ngood2"] = 999
    (other / BUNDLE_FILE).write_text(json.dumps(manifest))
    assert "finetunes small for" in refused(together, other)
