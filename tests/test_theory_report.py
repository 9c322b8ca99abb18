"""The theory report: ``python run.py task=theory`` (mode=theory) writes the five figures, theory.json
with every reference value of THEORY.md reproduced, and report.md, in under a minute on a CPU."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ccdf.theory import frechet_distance
from ccdf.theory.report import FIGURES, _frechet_centred, _psd_sqrt, write_report
from tests.helpers import ROOT, compose_cfg, run_app


@pytest.mark.e2e  # python run.py
def test_theory_command_writes_figures_json_and_report(tmp_path):
    run_dir = tmp_path / "theory"
    tic = time.perf_counter()
    proc = run_app("task=theory", f"hydra.run.dir={run_dir}")
    wall = time.perf_counter() - tic
    for name in FIGURES:
        data = (run_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000, (name, len(data))
    result = json.loads((run_dir / "theory.json").read_text())
    ref = result["reference"]
    failed = [c for c in ref["checks"] if not c["pass"]]
    assert ref["all_pass"] and not failed and ref["num_checks"] >= 150, failed
    assert {d["quantity"] for d in ref["deviations"]} == {
        "Theorem 2 proof threshold eps0/n (mu = 0.5, tau = 0.25)",
        "box eps0/n_u = 0.03: DDIM E*",
    }
    # the project's sampler (no last-step noise) vs THEORY's recursion: beta_1 n_u lower at N' = N
    assert ref["readings"]["eigen"]["V_difference_beta1_times_n_u"] == pytest.approx(1e-4 * 192, rel=1e-6)
    box = result["problems"]["box"]
    row = box["tables"]["ddpm"]["iso"]["rows"][2]  # eps0/n_u = 0.1
    assert row["eps0_per_unknown"] == 0.1 and row["t0_opt"] == 0.045
    # the measured contraction (theory.contraction's defaults): demo prior and Gaussian prior, every 10th level
    con = result["contraction"]
    assert con["level"] == [91, 81, 71, 61, 51, 41, 31, 21, 11, 1] and set(con["measured"]) == {
        "demo_prior",
        "gaussian",
    }
    exact = np.asarray(con["gaussian_exact_step_norm"])[:, None]
    assert np.all(np.asarray(con["measured"]["gaussian"]["full"]) <= exact * (1 + 1e-5))  # float32
    assert (run_dir / "contraction_measured.png").read_bytes()[:4] == b"\x89PNG"
    report = (run_dir / "report.md").read_text()
    assert all(f"({name})" in report for name in FIGURES) and "Reproduction of THEORY.md" in report
    assert "## Measured contraction" in report and "(contraction_measured.png)" in report
    assert "185 of 185" in report or f"{ref['num_pass']} of {ref['num_checks']}" in report
    assert "theory report:" in proc.stdout + proc.stderr
    print(f"python run.py task=theory: {wall:.1f} s wall, {result['seconds']:.1f} s in write_report")


@pytest.mark.e2e  # python run.py
def test_theory_failure_leaves_nothing(tmp_path):
    run_dir = tmp_path / "out" / "theory"
    proc = run_app("task=theory", "theory.problems=[box,nope]", f"hydra.run.dir={run_dir}", ok=False)
    assert "problems must be a non-empty subset of ('box', 'eigen')" in proc.stdout + proc.stderr
    assert not run_dir.exists()


@pytest.mark.e2e  # the whole report with figures (make test-e2e)
def test_write_report_small_settings_and_figure_copies(tmp_path):
    out = write_report(
        tmp_path / "run", problems=("eigen",), eps0_per_unknown=(0.1, 1.0), shapes=("iso",), samplers=("ddpm",),
        num_steps=100, frechet_eps0=(0.3,), frechet_points=6, figures_to=tmp_path / "docs",
    )  # fmt: skip
    assert "skipped" in out["reference"] and set(out["problems"]) == {"eigen"}
    rows = out["problems"]["eigen"]["tables"]["ddpm"]["iso"]["rows"]
    assert [r["eps0_per_unknown"] for r in rows] == [0.1, 1.0] and rows[0]["t0_opt"] < rows[1]["t0_opt"]
    for name in FIGURES:
        assert (tmp_path / "run" / name).is_file() and (tmp_path / "docs" / f"theory_{name}").is_file()
    assert json.loads((tmp_path / "run" / "theory.json").read_text())["settings"]["num_steps"] == 100
    for kw, msg in [
        (dict(problems=("disk",)), "problems must be"),
        (dict(shapes=("left",)), "shapes must be"),
        (dict(samplers=("heun",)), "samplers must be"),
        (dict(eps0_per_unknown=(0.0,)), "eps0_per_unknown must be positive"),
        (dict(num_steps=5), "num_steps must be >= 10"),
    ]:
        with pytest.raises(ValueError, match=msg):
            write_report(tmp_path / "bad", **kw)
    assert not (tmp_path / "bad").exists()


def test_theory_task_composes():

    cfg = compose_cfg(["task=theory"])
    assert cfg.mode == "theory" and "/theory/" in cfg.hydra.run.dir
    cfg = compose_cfg(["mode=theory", "task=inpaint"])
    assert cfg.mode == "theory" and list(cfg.theory.problems) == ["box", "eigen"]


def test_frechet_with_a_reused_square_root():
    rng = np.random.default_rng(0)
    for n in (4, 30):
        a, b = rng.normal(size=(n, n)), rng.normal(size=(n, 2))
        target, cov = a @ a.T, b @ b.T  # a singular covariance too
        zero = np.zeros(n)
        np.testing.assert_allclose(
            _frechet_centred(_psd_sqrt(target), cov), frechet_distance(zero, cov, zero, target), rtol=1e-7
        )


@pytest.mark.e2e  # a fresh interpreter (make test-e2e)
def test_report_and_auto_import_without_frameworks():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import ccdf.theory.report, ccdf.theory.auto\n"
        "bad = [m for m in ('hydra', 'omegaconf', 'lightning') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_reference_file_states_one_tolerance_per_value():
    """ccdf/assets/theory/reference.json: each THEORY value's tolerance is half a unit of its last printed
    digit (t0* = 0: half a grid step; integers exactly), the rule the file states; unknown keys name the file."""
    from ccdf.theory.reference import REFERENCE_FILE, load_reference, reference

    ref = load_reference()
    assert len(ref["values"]) >= 150 and ref["num_steps"] == 1000
    for key, entry in ref["values"].items():
        theory = entry["theory"]
        if isinstance(theory, int):
            expected = 0
        elif float(theory) == 0:
            expected = 0.5 / ref["num_steps"]
        else:
            expected = 0.5 * 10.0 ** -len(theory.split(".")[1]) if "." in theory else 0.5
        assert entry["tolerance"] == pytest.approx(expected, rel=1e-9), key
        assert reference(key) == (float(theory), entry["tolerance"])
    assert set(ref["deviations"]).isdisjoint(ref["values"])
    with pytest.raises(KeyError, match="reference.json"):
        reference("no such value")
    assert REFERENCE_FILE.name == "reference.json"
