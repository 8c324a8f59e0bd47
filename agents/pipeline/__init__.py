"""The post's experiment as a resumable sweep: train, measure, ``results.csv``, figures and ``report.md``.

::

    splitseq reproduce --preset quick --out runs/quick              # tiny, one seed, three tasks: minutes
    splitseq reproduce --preset full --out runs/full --workers 2    # 4 sizes x 5 seeds x 3 tasks

From Python::

    from agents.pipeline import SweepConfig, run_sweep
    run_sweep("runs/quick", SweepConfig.from_preset("quick"), workers=2)

The sweep is a graph of units (:mod:`~agents.pipeline.plan`), each writing one file of the sweep directory
(:mod:`~agents.pipeline.layout`). Modules, from the bottom up: ``layout`` → ``config`` → ``plan`` →
``records`` → ``measure`` / ``figures`` / ``cost`` → ``report`` → ``units`` → ``backends`` → ``sweep`` → ``bundle`` →
``merge``;
each imports only modules below it.
"""

from agents.pipeline.bundle import BundleError, make_bundle, verify_bundle
from agents.pipeline.config import SIZE_ORDER, SWEEP_PRESETS, Preset, SweepConfig
from agents.pipeline.layout import checkpoint_path, load_histories
from agents.pipeline.merge import merge_sweeps
from agents.pipeline.plan import Unit, plan, units_to_run
from agents.pipeline.records import RESULT_COLUMNS, read_csv
from agents.pipeline.sweep import SweepError, SweepSummary, default_workers, run_sweep
from agents.pipeline.units import finetune_config, pretrain_config

__all__ = [
    "BundleError",
    "RESULT_COLUMNS",
    "SIZE_ORDER",
    "SWEEP_PRESETS",
    "Preset",
    "SweepConfig",
    "SweepError",
    "SweepSummary",
    "Unit",
    "checkpoint_path",
    "default_workers",
    "finetune_config",
    "load_histories",
    "make_bundle",
    "merge_sweeps",
    "plan",
    "pretrain_config",
    "read_csv",
    "run_sweep",
    "units_to_run",
    "verify_bundle",
]
