"""The analysis tools against exact references: numpy.roots, closed forms, finite differences."""

from __future__ import annotations

import json
import runpy

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, plain_datamodule, run_script

from house_price.analysis.ascent import gradient_ascent, gradient_descent
from house_price.analysis.derivatives import derivatives
from house_price.analysis.peaks import INTERVAL, peaks
from house_price.analysis.roots import critical_points, global_extrema, level_crossings, zeros
from house_price.analysis.sensitivity import price_ascent, price_gradients, sensitivity_table, step_effects
from house_price.datamodules import HousingDataModule
from house_price.errors import exit_cleanly_on_error
from house_price.models import HousePriceRegressor

A, B = INTERVAL
COEFFICIENTS = [1.0, -0.7, -2.0, 1.0, 1.0]


def real_roots_in_interval(coefficients: list[float]) -> np.ndarray:
    roots = np.roots(coefficients)
    real = roots[np.abs(roots.imag) < 1e-9].real
    return np.sort(real[(real >= A) & (real <= B)])


def test_derivatives_match_the_polynomial():
    x = torch.linspace(A, B, 101, dtype=torch.float64)
    _value, first, second = derivatives(peaks, x)
    np.testing.assert_allclose(first.numpy(), np.polyval(np.polyder(COEFFICIENTS), x.numpy()), atol=1e-12)
    np.testing.assert_allclose(second.numpy(), np.polyval(np.polyder(COEFFICIENTS, 2), x.numpy()), atol=1e-12)


def test_critical_points_are_exact_classified_and_unique():
    points = critical_points(peaks, A, B)
    expected = real_roots_in_interval(np.polyder(COEFFICIENTS))
    assert len(points) == len(expected) == 3
    np.testing.assert_allclose([p.x for p in points], expected, atol=1e-10, rtol=0)
    assert [p.kind for p in points] == ["minimum", "maximum", "minimum"]
    assert points[1].x == pytest.approx(0.234, abs=1e-3)


def test_global_maximum_is_at_the_endpoint():
    low, high = global_extrema(peaks, A, B)
    assert high.x == B and high.f == pytest.approx(np.polyval(COEFFICIENTS, B), abs=1e-12)
    assert high.f > critical_points(peaks, A, B)[1].f
    assert low.x == pytest.approx(real_roots_in_interval(np.polyder(COEFFICIENTS))[0], abs=1e-10)


@pytest.mark.parametrize("level", [0.0, 0.5])
def test_level_crossings_are_exact(level):
    shifted = [*COEFFICIENTS[:-1], COEFFICIENTS[-1] - level]
    found = level_crossings(peaks, level, A, B)
    np.testing.assert_allclose(found, real_roots_in_interval(shifted), atol=1e-10, rtol=0)
    assert len(found) == (2 if level == 0 else 4)


def test_double_roots_are_found_once():
    assert zeros(lambda x: (x - 1) ** 2 * (x + 1), -2, 2) == pytest.approx([-1.0, 1.0], abs=1e-10)
    touch = zeros(lambda x: (x - 1 / 3) ** 2, -2, 2)
    assert len(touch) == 1 and touch[0] == pytest.approx(1 / 3, abs=1e-10)
    # The local maximum of peaks touches the level f = f(x*) tangentially.
    top = critical_points(peaks, A, B)[1]
    assert any(abs(x - top.x) < 1e-7 for x in level_crossings(peaks, top.f, A, B))


@pytest.mark.parametrize("half_width", [1e3, 1e6])
def test_wide_intervals_give_exactly_the_roots_of_numpy(half_width):
    """The same zeros, crossings and critical points as numpy.roots, with nothing spurious: on [-1e6, 1e6] a
    uniform grid step is 500, wider than the whole region where peaks' roots lie."""

    def real_roots(coefficients: list[float]) -> np.ndarray:
        roots = np.roots(coefficients)
        return np.sort(roots[np.abs(roots.imag) < 1e-9].real)

    for level in (0.0, 0.5):
        shifted = [*COEFFICIENTS[:-1], COEFFICIENTS[-1] - level]
        np.testing.assert_allclose(
            level_crossings(peaks, level, -half_width, half_width), real_roots(shifted), atol=1e-10, rtol=0
        )
    points = critical_points(peaks, -half_width, half_width)  # the inflection points -0.43 and 0.78 are not among them
    np.testing.assert_allclose([p.x for p in points], real_roots(np.polyder(COEFFICIENTS)), atol=1e-10, rtol=0)
    assert [p.kind for p in points] == ["minimum", "maximum", "minimum"]


def test_two_zeros_inside_one_grid_step_are_both_found():
    pair = zeros(lambda x: (x - 0.5) * (x - 0.500001) * (x + 3), -1e6, 1e6)
    assert pair == pytest.approx([-3.0, 0.5, 0.500001], abs=1e-12)


def test_no_crossing_is_an_empty_list():
    assert level_crossings(peaks, 5.0, A, B) == []


def test_ascent_from_the_lesson_start_converges_to_the_local_maximum():
    run = gradient_ascent(peaks, 0.5, 0.1)
    assert run.converged and run.reason == "converged"
    assert float(run.x[-1, 0]) == pytest.approx(critical_points(peaks, A, B)[1].x, abs=1e-9)
    assert run.x.shape == (run.steps + 1, 1) and bool((run.f[1:] >= run.f[:-1] - 1e-15).all())


def test_ascent_reports_divergence_step_limit_and_non_finite():
    assert gradient_ascent(peaks, 0.5, 2.0).reason == "diverged"
    assert gradient_ascent(peaks, 0.5, 0.001, max_steps=5).reason == "step_limit"
    assert gradient_descent(torch.log, 0.5, 1.0, max_steps=50).reason == "non_finite"  # steps to x = -1.5


def test_multidimensional_quadratic_maximum():
    center = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    run = gradient_ascent(lambda v: -((v - center) ** 2).sum(), [0.0, 0.0, 0.0], 0.1)
    assert run.converged and torch.allclose(run.x[-1], center, atol=1e-9)
    descent = gradient_descent(lambda v: ((v - center) ** 2).sum(), torch.zeros(3), 0.1)
    assert descent.converged and torch.allclose(descent.x[-1], center, atol=1e-9)
    boxed = gradient_ascent(lambda v: -((v - center) ** 2).sum(), torch.zeros(3), 0.1, lower=-1.0, upper=2.0)
    assert boxed.converged and boxed.x[-1].tolist() == pytest.approx([1.0, -1.0, 2.0], abs=1e-9)


def test_peaks_script_json_and_plots(tmp_path):
    result = run_script("peaks.py", "--json", "--output", str(tmp_path / "plots"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"critical_points", "global_min", "global_max", "zeros", "level_crossings", "ascent"} <= report.keys()
    assert report["global_max"]["x"] == B and len(report["level_crossings"]["0.5"]) == 4
    assert report["ascent"]["converged"] and report["ascent"]["x0"] == 0.5 and report["ascent"]["step"] == 0.1
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"peaks.png", "ascent.png"}


@pytest.fixture(scope="module")
def small_model(housing_csv):
    # Smooth everywhere (standard scaling, no embeddings with ReLU kinks, SiLU), so finite differences are a fair check.
    datamodule = HousingDataModule(
        path=str(housing_csv), target="median_house_value", scaling="standard", location_price=False
    )
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing,
        hidden_sizes=[32, 32],
        activation="silu",
        dropout=0.0,
        numeric_embedding="none",
        ensemble_size=2,
    )
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0
    )
    trainer.fit(model, datamodule=datamodule)
    return model.eval(), datamodule.splits["test"].head(20)


def test_sensitivity_matches_finite_differences(small_model):
    model, frame = small_model
    gradients = price_gradients(model, frame)
    model64 = model.double()
    for feature in ["median_income", "latitude", "total_rooms"]:
        h = 1e-4 * frame[feature].abs().mean()
        up, down = frame.copy(), frame.copy()
        up[feature] += h
        down[feature] -= h
        prices_up = model64.predict_price(
            *(t.double() if t.is_floating_point() else t for t in model64.preprocessor.transform(up))
        )
        prices_down = model64.predict_price(
            *(t.double() if t.is_floating_point() else t for t in model64.preprocessor.transform(down))
        )
        numeric = ((prices_up - prices_down) / (2 * h)).detach().numpy()
        np.testing.assert_allclose(gradients[feature].to_numpy(), numeric, rtol=2e-3, atol=1e-3 * np.abs(numeric).max())
    model.float()


def test_step_effects_are_real_price_changes_and_match_the_gradient_when_small(small_model):
    model, frame = small_model
    features = model.preprocessor.numeric
    one = step_effects(model, frame, pd.Series(1.0, index=features))
    moved = frame.assign(housing_median_age=frame["housing_median_age"] + 1)
    expected = (model.predict(moved) - model.predict(frame)).to_numpy()
    np.testing.assert_allclose(
        one["housing_median_age"].to_numpy(), expected, atol=1e-4 * frame["median_house_value"].std()
    )
    # A smooth model: as the step shrinks, step / h becomes the gradient.
    h = 1e-5 * frame[features].std()
    np.testing.assert_allclose(
        (step_effects(model, frame, h) / h).to_numpy(),
        price_gradients(model, frame).to_numpy(),
        rtol=1e-3,
        atol=1e-6 * frame["median_house_value"].std(),
    )
    table = sensitivity_table(model, frame)
    assert {"gradient_per_unit", "plus_one_unit", "gradient_times_std", "plus_one_std"} <= set(table.columns)


def test_step_effects_see_the_jumps_that_tied_values_leave_in_the_quantile_scaling():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"quality": rng.integers(1, 11, 3000).astype(float), "area": rng.uniform(50, 200, 3000)})
    frame["price"] = 1000.0 * frame["quality"] + 10.0 * frame["area"]
    datamodule = plain_datamodule(frame, target="price")  # quantile scaling: ties make a staircase
    torch.manual_seed(0)  # an untrained network: unseeded, about one in twenty draws nearly cancels the step (flaky)
    model = HousePriceRegressor(
        preprocessing=datamodule.preprocessing, numeric_embedding="none", ensemble_size=1, dropout=0.0
    )
    head = frame.head(50)
    gradient = price_gradients(model, head)["quality"].mean()
    step = step_effects(model, head, pd.Series(1.0, index=["quality", "area"]))["quality"]
    assert np.allclose(
        step, (model.predict(head.assign(quality=head["quality"] + 1)) - model.predict(head)).to_numpy(), atol=1e-2
    )
    assert abs(step.mean()) > 10 * abs(gradient)  # the gradient sits on a flat tread of the staircase


def test_price_ascent_raises_the_price_within_the_training_range(small_model):
    model, frame = small_model
    steps, _run = price_ascent(model, frame.head(1), step=0.05, max_steps=50)
    price = steps["median_house_value_prediction"]
    assert price.iloc[-1] > price.iloc[0]
    state = model.preprocessor.state
    features = steps[model.preprocessor.numeric]
    assert (features >= np.array(state.minimum) - 1e-9).all().all() and (
        features <= np.array(state.maximum) + 1e-9
    ).all().all()


@pytest.mark.slow
def test_sensitivity_script(housing_run, tmp_path):
    result = run_script(
        "sensitivity.py", str(housing_run / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "s"), cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "median_income" in result.stdout and "Gradient ascent from row 0" in result.stdout
    assert (tmp_path / "s" / "sensitivity.png").exists() and (tmp_path / "s" / "price_ascent.csv").exists()


def test_peaks_refuses_non_finite_input_and_writes_strict_json(tmp_path, capsys):
    peaks_main = runpy.run_path(str(ROOT / "scripts" / "peaks.py"))["main"]  # in-process: refusals need no subprocess
    for arguments in (
        ["--levels", "inf"],
        ["--levels", "0.5", "nan"],
        ["--start", "nan"],
        ["--step", "nan"],
        ["--interval", "0", "inf"],
        ["--interval", "-inf", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            exit_cleanly_on_error(
                lambda arguments=arguments: peaks_main([*arguments, "--output", str(tmp_path / "plots")])
            )
        error = capsys.readouterr().err
        assert exit_.value.code == 2 and "is not a finite number" in error, (arguments, error)
    assert not (tmp_path / "plots").exists()
    diverging = run_script(
        "peaks.py",
        "--json",
        "--start",
        "1.5",
        "--step",
        "100",
        "--max-steps",
        "50",
        "--output",
        str(tmp_path / "p"),
        cwd=tmp_path,
    )
    assert diverging.returncode == 0, diverging.stderr[-2000:]

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} is not JSON")

    report = json.loads(diverging.stdout, parse_constant=refuse)
    assert report["ascent"]["converged"] is False
