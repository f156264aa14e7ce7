"""`house-price tune`: a study in a real database that survives a kill, shares work between processes, and whose
best trial is a config that trains."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT

# Tiny trials: the search space is the learning rate alone, everything else passed on as train options.
SPACE = "model.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
FIXED = [
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=10",
    "--data.batches_per_call=1",
    "--model.hidden_sizes=[16]",
    "--model.ensemble_size=2",
]


def tune_command(folder: Path, study: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "house_price",
        "tune",
        "--config",
        "california",
        "--trials",
        "4",
        "--space",
        str(folder / "space.yaml"),
        "--storage",
        f"sqlite:///{folder / 'study.db'}",
        "--study",
        study,
        *FIXED,
    ]


def trials(folder: Path, study: str, states: tuple[str, ...] = ("COMPLETE", "PRUNED")) -> list[int]:
    """The numbers of the study's trials in those states (default: finished), from its database."""
    if not (folder / "study.db").exists():
        return []
    with sqlite3.connect(folder / "study.db", timeout=60) as database:
        try:
            rows = database.execute(
                "select trials.number from trials join studies using (study_id) where studies.study_name = ? and trials.state in "
                f"({', '.join('?' * len(states))}) order by trials.number",
                (study, *states),
            ).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
    return [number for (number,) in rows]


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


@pytest.mark.slow
def test_a_killed_study_resumes_and_two_processes_share_one(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    process = subprocess.Popen(
        tune_command(tmp_path, "resumed"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 300
    while len(trials(tmp_path, "resumed")) < 2:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "two trials never finished"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = trials(tmp_path, "resumed")
    assert 2 <= len(before) < 4
    again = run(tune_command(tmp_path, "resumed"), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = trials(tmp_path, "resumed")
    assert len(after) == 4 and set(before) <= set(after), (before, after)
    assert "Best: trial" in again.stdout
    if (
        " running" in again.stdout
    ):  # the killed trial, unless its heartbeat went stale during the rerun: named, with its fate
        assert "abandoned by one that was killed" in again.stdout and "tries its values again" in again.stdout, (
            again.stdout
        )
    refused = run(
        [*tune_command(tmp_path, "resumed"), "--model.hidden_sizes=[8]"], tmp_path
    )  # another recipe, same study
    assert (
        refused.returncode == 2
        and "was run with other options (config.model.hidden_sizes: [16] then, [8] now)" in refused.stderr
    ), refused.stderr
    assert trials(tmp_path, "resumed") == after, "no trial measured on the other recipe"

    # Two processes on one new study at once: no collision, and the study stops at exactly the trials asked for.
    command = tune_command(tmp_path, "shared")
    processes = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-2000:] for _, err in outputs]
    shared = trials(tmp_path, "shared")
    assert len(shared) == 4 and len(set(shared)) == len(shared), (
        shared
    )  # finished trials (was 4 or 5: each could start one more)

    best = tmp_path / "runs" / "tune" / "shared" / "best.yaml"
    assert (tmp_path / "runs" / "tune" / "shared" / "trials.csv").exists() and (
        tmp_path / "runs" / "tune" / "shared" / "trials.png"
    ).exists()
    trained = run(
        [sys.executable, "-m", "house_price", "train", "--config", str(best), "--trainer.enable_progress_bar=false"],
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Test metrics of" in trained.stdout


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_with_one_line_and_exit_130(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    # A child of a background job inherits SIGINT = ignored; a terminal's Ctrl-C reaches a default handler.
    process = subprocess.Popen(
        tune_command(tmp_path, "interrupted"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not trials(tmp_path, "interrupted", states=("RUNNING",)):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no trial ever started"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Interrupted: study 'interrupted' keeps its finished trials" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    # Failed, so a rerun measures it again (the signal lands as Optuna starts the trial: see InterruptGate).
    assert trials(tmp_path, "interrupted") == [] and trials(tmp_path, "interrupted", states=("FAIL",)) == [0]


def test_ctrl_c_is_held_through_optunas_own_work_and_raised_in_training(tmp_path, monkeypatch):
    import optuna
    from optuna.storages._heartbeat import HeartbeatThread

    from house_price.commands.tune import storage
    from house_price.training.tuning import InterruptGate

    start = HeartbeatThread.start

    def start_then_ctrl_c(self):
        start(self)
        signal.raise_signal(signal.SIGINT)  # as Optuna starts the trial's heartbeat thread: unsafe to interrupt

    monkeypatch.setattr(HeartbeatThread, "start", start_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a pytest worker may differ)
    try:
        study = optuna.create_study(study_name="held", storage=storage(f"sqlite:///{tmp_path / 'study.db'}"))
        gate, trained = InterruptGate(), []

        def objective(trial):
            with gate.opened():
                trained.append(trial.number)
            return 1.0

        with gate.installed(), pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=3, callbacks=[gate.stop_study])
        # Raised where training would start: the trial failed (a rerun measures it again) and its heartbeat stopped.
        assert trained == [] and [trial.state.name for trial in study.trials] == ["FAIL"]
        assert not [thread for thread in threading.enumerate() if "_record_heartbeat" in thread.name]

        monkeypatch.setattr(HeartbeatThread, "start", start)
        gate = InterruptGate()

        def objective_then_ctrl_c(trial):
            # held through a database write inside training, raised after it
            with gate.opened(), pytest.raises(KeyboardInterrupt), gate.opened(False):
                signal.raise_signal(signal.SIGINT)
                trained.append(trial.number)
            signal.raise_signal(signal.SIGINT)  # after training: the trial is told as usual, and no other starts
            return 1.0

        with gate.installed():
            study.optimize(objective_then_ctrl_c, n_trials=3, callbacks=[gate.stop_study])
        assert gate.held and trained == [1] and [trial.state.name for trial in study.trials] == ["FAIL", "COMPLETE"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the gate's handler ends with the study
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_study_of_the_same_name_in_another_database_does_not_share_its_report_folder(tmp_path):
    # Two storages, one study name: the second wrote its best.yaml, trials.csv and trial folders over the first's.
    (tmp_path / "space.yaml").write_text(SPACE)
    report = tmp_path / "runs" / "tune" / "shared"
    report.mkdir(parents=True)
    (report / ".storage").write_text("0123456789abcdef\n")  # the fingerprint of another database's URL
    (report / "best.yaml").write_text("the other study's best\n")
    result = run(tune_command(tmp_path, "shared"), tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(lines) == 1
        and "belongs to a study named 'shared' in another database" in lines[0]
        and "another --study name" in lines[0]
    )
    assert (report / "best.yaml").read_text() == "the other study's best\n" and not trials(tmp_path, "shared")


@pytest.mark.parametrize("configs", [["california"], ["california", "comparables"]])
def test_each_network_is_tuned_over_its_own_options_by_default(configs):
    # The MLP's space asked the comparables network for an ensemble of 16 members, and its first trial failed.
    import optuna
    import torch

    from house_price.commands.train import bundled_config
    from house_price.commands.tune import bundled_space
    from house_price.datamodules import HousingDataModule
    from house_price.models.pricing import PriceModel
    from house_price.training.search_space import load_space, merged_config, suggest

    config = merged_config([bundled_config(name) for name in configs], {})
    space = load_space(bundled_space(config))
    assert bundled_space(config).name == (
        "tune_space_comparables.yaml" if "comparables" in configs else "tune_space.yaml"
    )
    preprocessing = HousingDataModule().preprocessing
    for end, choice in (("low", 0), ("high", -1)):  # each end of every range builds the network the configs describe
        params = {}
        for name, entry in space.items():
            if entry["type"] == "layers":
                params |= {f"{name}.width": entry["width"][end], f"{name}.depth": entry["depth"][end]}
            else:
                params[name] = entry["choices"][choice] if entry["type"] == "categorical" else entry[end]
        values = suggest(optuna.trial.FixedTrial(params), space)
        options = config.get("model", {}) | {
            name.removeprefix("model."): value for name, value in values.items() if name.startswith("model.")
        }
        with torch.device("meta"):
            model = PriceModel(preprocessing=preprocessing, **PriceModel.options(options))
        assert (type(model.network).__name__ == "ComparablesNetwork") == ("comparables" in configs)
