"""What ``run.py`` does, one module per mode: :mod:`~ccdf.pipelines.reconstruct`, :mod:`~ccdf.pipelines.train`
and :mod:`~ccdf.pipelines.theory`.

Each pipeline module has the same two functions: ``settings_from(cfg)`` checks the composed config and turns
it into a frozen dataclass of plain typed values (the only place that reads the ``DictConfig``; every error
names its config key and is raised before anything is built), and ``run(settings, run_dir, written, guard)``
does the work. :mod:`ccdf.app` dispatches on ``mode`` and owns the run folder (what a failed or interrupted
run removes); :mod:`~ccdf.pipelines.config` holds the config-reading helpers they share.

One primary config (``conf/config.yaml``) serves all three modes, chosen by ``mode=`` (``task=theory`` sets it):
training and reconstruction compose the same groups (task, dataset, model), so a second primary config
(lightning-hydra-template's train.yaml / eval.yaml) would repeat the defaults list, and ``mode`` stays a plain
override that Hydra records in ``.hydra/overrides.yaml`` and can sweep.
"""

MODES = ("reconstruct", "train", "theory")
