"""The sweep on devices: ``device`` and ``precision`` are settings (recorded in sweep.json, results.csv,
timings.csv and runs.csv; an older sweep.json without them still resumes), the local backends spread the
model units over the GPUs in turn, and Ray asks for a (fractional) GPU per model unit.

No GPU is needed: the placement is checked on device names, and Ray through a stand-in module.
"""

from __future__ import annotations

import json
import sys
import types
from concurrent.futures import Future
from pathlib import Path

import pandas as pd
import pytest
import torch

from agents.cli import main as splitseq_main
from agents.pipeline import SweepConfig, Unit, finetune_config, pretrain_config, report, run_sweep
from agents.pipeline import backends as be
from agents.pipeline.sweep import check_sweep_file

torch.set_num_threads(1)
HAS_CUDA = torch.cuda.is_available()


def unit(kind: str, name: str = "") -> Unit:
    return Unit(name or kind, kind, f"{kind}.out", size="tiny", seed=0)


# -------------------------------------------------------------------------------------------- settings
def test_device_and_precision_are_sweep_settings_passed_to_every_trainer():
    default = SweepConfig.from_preset("full")
    assert (default.device, default.precision) == ("auto", "fp32")
    s = SweepConfig.from_preset("quick", device="cpu", precision="bf16")
    for cfg in (pretrain_config(s, "tiny", 0), finetune_config(s, "tiny", 0, "ngood4")):
        assert (cfg.device, cfg.precision) == ("cpu", "bf16")
    with pytest.raises(ValueError, match=r"unknown device 'gpu'; expected auto, cpu, cuda"):
        SweepConfig.from_preset("quick", device="gpu")
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16'; got 'fp16'"):
        SweepConfig.from_preset("quick", precision="fp16")


def test_an_older_sweep_json_without_them_resumes_and_a_changed_precision_is_refused(tmp_path):
    cfg = SweepConfig.from_preset("quick", n_histories=512)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "precision")}
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    assert SweepConfig.from_dict(old) == cfg  # the CPU in fp32: what "auto" is without a GPU
    check_sweep_file(tmp_path, cfg)  # no error: it resumes
    with pytest.raises(ValueError, match=r"other settings \(precision: 'fp32' -> 'bf16'\)"):
        check_sweep_file(tmp_path, SweepConfig.from_preset("quick", n_histories=512, precision="bf16"))


@pytest.fixture(scope="module")
def bf16_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bf16")
    cfg = SweepConfig.from_preset(
        "quick", tasks=["ngood4"], steps_scale=0.01, n_histories=256, device="cpu", precision="bf16"
    )
    summary = run_sweep(out, cfg, workers=1, progress=False)
    assert not summary.failed
    return out


def test_a_sweep_records_where_and_how_each_model_trained(bf16_sweep):
    results = report.read_csv(bf16_sweep / "results.csv")
    models = results[results["kind"] != "reference"]
    refs = results[results["kind"] == "reference"]
    assert set(models["train_device"]) == {"cpu"} and set(models["train_precision"]) == {"bf16"}
    assert set(refs["train_device"]) == {""} and set(refs["train_precision"]) == {""}
    timings = pd.read_csv(bf16_sweep / "timings.csv")
    assert set(timings["device"]) == {"cpu"} and set(timings["precision"]) == {"bf16"}
    runs = pd.read_csv(bf16_sweep / "runs.csv")
    assert list(runs["device"]) == ["cpu"] and list(runs["precision"]) == ["bf16"]
    assert json.loads((bf16_sweep / "sweep.json").read_text())["precision"] == "bf16"


def test_results_of_checkpoints_from_before_devices_say_cpu_fp32(bf16_sweep, tmp_path):
    from agents.pipeline.records import training_columns

    ckpt = torch.load(bf16_sweep / "models/tiny-s0/pretrained.pt", weights_only=True)
    del ckpt["meta"]["device"], ckpt["meta"]["pretrain"]["precision"]
    (tmp_path / "old").mkdir()
    torch.save(ckpt, tmp_path / "old" / "p.pt")
    cols = training_columns(tmp_path, pd.Series(["old/p.pt", ""]))
    assert (cols["train_device"], cols["train_precision"]) == (["cpu", ""], ["fp32", ""])
    assert cols["train_steps"][0] == ckpt["meta"]["pretrain"]["steps"] and cols["train_steps"][1] is pd.NA


# ------------------------------------------------------------------------------------------- placement
def test_model_units_take_the_gpus_in_turn_and_the_least_busy_first():
    placer = be.DevicePlacer(["cuda:0", "cuda:1", "cuda:2"])
    taken = [
        placer.take(unit(k, f"{k}{i}")) for i, k in enumerate(["pretrain", "finetune", "measure", "pretrain"])
    ]
    assert taken == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    placer.release("cuda:1")
    assert placer.take(unit("finetune")) == "cuda:1"  # the idle one
    placer.release("cuda:2")
    placer.release("cuda:0")
    assert placer.take(unit("measure")) == "cuda:2"
    for kind in ("histories", "reference", "report"):  # numpy and files: the CPU
        assert placer.take(unit(kind)) is None


def test_local_devices_are_every_gpu_for_auto_and_cuda(monkeypatch):
    assert be.local_devices("cpu") == ["cpu"]
    monkeypatch.setattr(be, "cuda_count", lambda: 2)
    assert be.local_devices("auto") == be.local_devices("cuda") == ["cuda:0", "cuda:1"]
    monkeypatch.setattr(be, "cuda_count", lambda: 0)
    if not HAS_CUDA:
        assert be.local_devices("auto") in (["cpu"], ["mps"])
        with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not available"):
            be.local_devices("cuda")


class _DoneExecutor:
    """Stands in for the process pool: runs nothing, records what it was given."""

    def __init__(self):
        self.calls: list[tuple] = []

    def submit(self, fn, *args):
        self.calls.append(args)
        fut: Future = Future()
        fut.set_result({"device": args[-1]})
        return fut


def test_the_pool_and_inline_backends_hand_each_unit_its_device(monkeypatch):
    pool = be.PoolBackend(2, ["cuda:0", "cuda:1"])
    pool.pool.shutdown()
    pool.pool = _DoneExecutor()
    futs = [pool.submit("root", unit("pretrain", f"p{i}"), {}) for i in range(3)]
    assert [c[-1] for c in pool.pool.calls] == ["cuda:0", "cuda:1", "cuda:0"]
    for f in futs:
        pool.result(f)
    assert pool.placer.busy == {"cuda:0": 0, "cuda:1": 0} and pool.placement == "cuda:0,cuda:1"
    seen = []
    monkeypatch.setattr(be, "execute", lambda root, u, sweep, device: seen.append((u.kind, device)) or {})
    inline = be.InlineBackend(["cuda:1"])
    for kind in ("histories", "pretrain", "measure"):
        inline.submit("root", unit(kind), {})
    assert seen == [("histories", None), ("pretrain", "cuda:1"), ("measure", "cuda:1")]


# ------------------------------------------------------------------------------------------------- Ray
class _FakeRay(types.ModuleType):
    """Enough of ``ray`` to see what the backend asks of it."""

    def __init__(self, gpus: float):
        super().__init__("ray")
        self.gpus, self.submitted, self.shut = gpus, [], False

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        pass

    def cluster_resources(self):
        return {"CPU": 4.0, **({"GPU": self.gpus} if self.gpus else {})}

    def shutdown(self):
        self.shut = True

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **opts):
                class Task:
                    def remote(self, *args):
                        fake.submitted.append((opts, args))
                        return len(fake.submitted)

                return Task()

        return Remote()


@pytest.mark.parametrize(("share", "expected"), [(0.25, 0.25), (None, 1.0)])
def test_ray_asks_for_a_gpu_share_per_model_unit(monkeypatch, share, expected):
    fake = _FakeRay(gpus=2)
    monkeypatch.setitem(sys.modules, "ray", fake)
    ray_be = be.RayBackend(None, 1, None, "auto", share)
    ray_be.submit("root", unit("pretrain"), {})
    ray_be.submit("root", unit("histories"), {})
    (gpu_opts, gpu_args), (cpu_opts, cpu_args) = fake.submitted
    assert gpu_opts["num_gpus"] == expected and gpu_args[-1] == "cuda"  # the GPU Ray gives it
    assert "num_gpus" not in cpu_opts and cpu_args[-1] is None
    assert ray_be.placement == f"ray: {expected:g} GPU per unit"


def test_ray_without_gpus_or_with_an_index_is_refused(monkeypatch):
    fake = _FakeRay(gpus=0)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(ValueError, match="the Ray cluster has no GPUs"):
        be.RayBackend(None, 1, None, "cuda", None)
    assert fake.shut  # the instance it started is shut down again
    cpu = be.RayBackend(None, 1, None, "auto", None)  # auto without GPUs: the CPU
    cpu.submit("root", unit("finetune"), {})
    assert "num_gpus" not in fake.submitted[-1][0]
    with pytest.raises(ValueError, match="Ray chooses each unit's GPU; use --device cuda or auto"):
        be.RayBackend(None, 1, None, "cuda:1", None)
    with pytest.raises(ValueError, match="--gpus-per-unit 0.5 with device 'cpu'"):
        be.ray_gpu_share("cpu", 0.5, 4)


def test_gpus_per_unit_is_a_ray_option_in_0_1(tmp_path, capsys):
    cfg = SweepConfig.from_preset("quick", n_histories=512)
    with pytest.raises(ValueError, match="--gpus-per-unit is for --backend ray"):
        run_sweep(tmp_path / "a", cfg, gpus_per_unit=0.5, progress=False)
    with pytest.raises(ValueError, match=r"gpus_per_unit must be a number in \(0, 1\], got 2"):
        run_sweep(tmp_path / "b", cfg, gpus_per_unit=2, progress=False)
    out = str(tmp_path / "c")
    for argv, message in (
        (["--gpus-per-unit", "0"], "argument --gpus-per-unit: expected a number in (0, 1], got 0"),
        (["--device", "gpu"], "argument --device: unknown device 'gpu'"),
    ):
        with pytest.raises(SystemExit) as e:
            splitseq_main(["reproduce", "--out", out, *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert splitseq_main(["reproduce", "--out", out, "--merge", "x", "y", "--device", "cpu"]) == 2
    assert "drop --device" in capsys.readouterr().err
