"""Every config composes and instantiates (Hydra compose API, tiny sizes, no subprocess)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ccdf.operators import Operator
from tests.helpers import CONF, applies, compose_cfg

# reconstruction tasks; task=theory (the theory report, mode=theory) is tested in tests/test_theory_report.py
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml") if p.stem != "theory")
SAMPLERS = sorted(p.stem for p in (CONF / "sampler").glob("*.yaml"))
INITS = ["pinv", "zero", "bicubic", "masked_fill", "wiener", "gray"]


def test_all_tasks_present():
    assert TASKS == [
        "colorize",
        "deblur_gauss",
        "deblur_motion",
        "inpaint",
        "mri",
        "mri_multicoil",
        "sr16",
        "sr4",
        "sr8",
    ]


MATRIX = [c for c in itertools.product(TASKS, SAMPLERS, INITS) if applies(*c)]


def covering(combos: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A few combinations in which every task, sampler and initializer of ``combos`` appears at least once
    (greedy: the combination with the most values not yet seen, the first one on ties)."""
    seen: set[tuple[int, str]] = set()
    everything = {(i, v) for c in combos for i, v in enumerate(c)}
    chosen = []
    while seen != everything:
        best = max(combos, key=lambda c: len({(i, v) for i, v in enumerate(c)} - seen))
        chosen.append(best)
        seen |= {(i, v) for i, v in enumerate(best)}
    return chosen


REPRESENTATIVE = covering(MATRIX)


def test_representative_subset_covers_every_task_sampler_and_initializer():
    assert {c[0] for c in REPRESENTATIVE} == set(TASKS) and {c[1] for c in REPRESENTATIVE} == set(SAMPLERS)
    assert {c[2] for c in REPRESENTATIVE} == set(INITS) and len(REPRESENTATIVE) <= len(SAMPLERS) + 2
    combos = [("a", "s", "i"), ("b", "s", "i"), ("a", "t", "j")]  # greedy, first on ties: not always the fewest
    assert covering(combos) == [("a", "s", "i"), ("a", "t", "j"), ("b", "s", "i")]


# make test: the representative subset; make test-e2e: the rest of the matrix (together: every combination)
@pytest.mark.parametrize(
    "task,sampler,init", [c if c in REPRESENTATIVE else pytest.param(*c, marks=pytest.mark.e2e) for c in MATRIX]
)
def test_compose_and_instantiate(task, sampler, init):
    cfg = compose_cfg(
        [
            f"task={task}",
            f"sampler={sampler}",
            f"initializer={init}",
            "debug=smoke",
            "dataset.size=32",
            "sampler.num_steps=10",
        ]
    )
    HydraConfig.instance().set_config(cfg)  # the run dir interpolation (task choice) resolves
    assert f"/{task}/" in cfg.hydra.run.dir
    for key in cfg:  # every interpolation resolves (what the loggers record)
        if key != "hydra" and OmegaConf.is_config(cfg[key]):
            OmegaConf.to_container(cfg[key], resolve=True)
    data = instantiate(cfg.dataset.data)
    op = instantiate(cfg.operator)
    assert isinstance(op, Operator)
    initializer = instantiate(cfg.initializer)
    batch = {k: v[None] if torch.is_tensor(v) else [v] for k, v in data[0].items()}  # as the data loader collates
    # the batch's operator, as the evaluation loop builds it (per-image motion kernels, the coil maps of the data)
    op = op.for_batch(batch, [torch.Generator().manual_seed(0)])
    x0 = batch["x0"]
    y = op(x0)
    x_init = initializer(y, op)
    assert x_init.shape == x0.shape
    schedule = instantiate(cfg.model.schedule)
    denoiser = instantiate(cfg.model.denoiser, schedule=schedule)
    sampler = instantiate(cfg.sampler)
    x = sampler(denoiser, schedule, op, y, x_init, generator=torch.Generator().manual_seed(0))
    assert x.shape == x0.shape and bool(torch.isfinite(x.abs()).all())


def test_task_presets_choose_their_groups():
    cfg = compose_cfg(["task=mri"])
    assert cfg.hydra.runtime.choices["model"] == "gaussian_ve" and cfg.sampler.corrector == "langevin"
    cfg = compose_cfg(["task=sr8"])
    assert cfg.operator.factor == 8 and cfg.hydra.runtime.choices["initializer"] == "bicubic"
    # command-line choices win over the task's
    cfg = compose_cfg(["task=sr8", "operator=superres_box", "operator.factor=8", "sampler.t0=0.1"])
    assert cfg.operator.kernel == "box" and cfg.sampler.t0 == 0.1


@pytest.mark.parametrize("dataset", ["ffhq256", "afhq_dog256", "fastmri_knee", "mri_folder", "folder"])
def test_user_datasets_require_a_root(dataset):
    cfg = compose_cfg(["task=inpaint", f"dataset={dataset}"])
    with pytest.raises(Exception, match="root"):
        instantiate(cfg.dataset.data)


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
def test_model_configs_compose(model):
    from ccdf.app import missing_values

    cfg = compose_cfg(["task=sr4", f"model={model}"])
    HydraConfig.instance().set_config(cfg)
    assert missing_values(cfg) in ([], ["model.ckpt"])
    OmegaConf.to_container(cfg.training, resolve=True)
    schedule = instantiate(cfg.model.schedule)
    assert schedule.kind in ("vp", "ve")
    if model.startswith("iddpm"):  # the model's sampler_defaults, through the sampler's interpolations
        assert cfg.sampler.variance == "learned" and cfg.sampler.x0_clip == 1.0
    cfg = compose_cfg(["task=sr4", f"model={model}", "sampler.variance=beta"])
    HydraConfig.instance().set_config(cfg)
    assert cfg.sampler.variance == "beta"  # the command line wins


def test_training_and_cluster_configs_compose():
    cfg = compose_cfg(
        [
            "mode=train",
            "task=inpaint",
            "model=unet_small",
            "trainer=ddp",
            "trainer.devices=8",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
        ]
    )
    HydraConfig.instance().set_config(cfg)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 8 and cfg.trainer.use_distributed_sampler is False
    assert cfg.hydra.launcher.tasks_per_node == 8 and cfg.hydra.launcher.gpus_per_node == 8
    assert "submitit" in cfg.hydra.launcher._target_
    assert cfg.training.loss == "vp_eps" and cfg.trainer.max_steps == cfg.training.max_steps


def test_respacing_string_from_the_config():
    """``model.schedule.respacing`` (ddimN or section counts) is a config value; a step count that disagrees
    with it is an error naming both keys, raised by ``validate`` before anything is built."""
    from ccdf.app import validate

    base = ["task=sr4", "model.schedule.spacing=iddpm", "model.schedule.respacing=ddim50"]
    cfg = compose_cfg([*base, "sampler.num_steps=50"])
    HydraConfig.instance().set_config(cfg)
    validate(cfg)
    schedule = instantiate(cfg.model.schedule)
    assert schedule.to_index(schedule.timesteps(50)[:-1]).flip(0).tolist() == list(range(0, 1000, 20))
    cfg = compose_cfg([*base, "sampler.num_steps=100"])
    with pytest.raises(ValueError, match=r"model.schedule.respacing='ddim50' keeps 50 timesteps, but "
                                         r"sampler.num_steps=100: set sampler.num_steps=50"):  # fmt: skip
        validate(cfg)
    cfg = compose_cfg(["task=sr4", "model.schedule.respacing=ddim50", "sampler.num_steps=50"])
    with pytest.raises(ValueError, match=r"model.schedule.respacing='ddim50': .*needs spacing='iddpm'"):
        validate(cfg)
    cfg = compose_cfg(["task=sr4", "model.schedule.spacing=iddpm", "model.schedule.respacing=ddim37"])
    with pytest.raises(ValueError, match=r"model.schedule.respacing='ddim37': .*integer stride"):
        validate(cfg)
