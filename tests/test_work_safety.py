"""Interrupted, changed or hostile: work is never lost and output never misleads (each case through the real scripts)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    HOUSING_CSV,
    ROOT,
    TRAIN,
    assert_clean_failure,
    plain_datamodule,
    priced_frame,
    run_script,
    train_command,
    wait_for,
)

from house_price.errors import HousePriceError
from house_price.models import HousePriceRegressor
from house_price.training.checkpointing import AtomicCheckpointIO, EpochCheckpoint


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("whole")
    result = subprocess.run(train_command(save_dir), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return save_dir / "california" / "version_0"


def assert_same_run(run: Path, expected: Path) -> None:
    a = torch.load(expected / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert json.loads((run / "test_metrics.json").read_text()) == json.loads(
        (expected / "test_metrics.json").read_text()
    )
    assert set(range(3)) <= set(pd.read_csv(run / "metrics.csv")["epoch"].dropna().unique()), (
        "earlier epochs' rows are kept"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_interrupt_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted, sig, code):
    run = tmp_path / "california" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    # A child of a background job inherits SIGINT = ignored; a terminal's Ctrl-C reaches a default handler.
    process = subprocess.Popen(
        train_command(tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(last, process)  # epoch 0 is done
    time.sleep(0.3)  # inside epoch 1
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, "a scheduler must see the interrupt as a failure: " + stderr[-2000:]
    assert not (run / "test_metrics.json").exists()
    assert torch.load(last, weights_only=True)["epoch"] < 2
    if sig != signal.SIGKILL:
        assert "--ckpt_path last" in stdout and "end of epoch" in stdout

    resumed = subprocess.run(
        train_command(tmp_path, "--ckpt_path", "last"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(run, uninterrupted)


@pytest.mark.slow
def test_evaluate_refuses_a_data_file_that_changed_since_training(tmp_path, housing_csv):
    data = tmp_path / "sales.csv"
    pd.read_csv(housing_csv).head(600).to_csv(data, index=False)
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--data.path={data}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (best,) = (tmp_path / "runs").rglob("best.ckpt")
    assert run_script("evaluate.py", str(best), "--output", str(tmp_path / "same"), cwd=tmp_path).returncode == 0
    with open(data, "a") as file:
        file.write(pd.read_csv(housing_csv).iloc[600:1100].to_csv(index=False, header=False))
    assert_clean_failure(
        run_script("evaluate.py", str(best), "--output", str(tmp_path / "changed"), cwd=tmp_path),
        "changed since training",
        "--data",
    )
    assert not (tmp_path / "changed").exists()
    on_purpose = run_script(
        "evaluate.py", str(best), "--data", str(data), "--output", str(tmp_path / "file"), cwd=tmp_path
    )
    assert on_purpose.returncode == 0 and json.loads((tmp_path / "file" / "metrics.json").read_text())["n"] == 1100


def test_predict_copies_kept_columns_byte_for_byte(housing_run, housing_csv, tmp_path):
    """Kept columns are copied as written, also the model's own features, which are still priced as numbers and
    categories."""
    from house_price.models import load_model

    frame = pd.read_csv(housing_csv).head(4)
    ids = ["0526301100", "000001", "", " 7 "]
    gapped = ["1001", "", "1003", "1004"]
    lines = tmp_path / "in.csv"
    body = frame.to_csv(index=False).splitlines()
    lines.write_text(
        "\n".join([f"parcel,order,{body[0]}"] + [f'"{i}",{g},{row}' for i, g, row in zip(ids, gapped, body[1:])]) + "\n"
    )
    checkpoint = housing_run / "checkpoints" / "best.ckpt"
    features = ["longitude", "ocean_proximity"]  # a number and a category of the model's
    result = run_script(
        "predict.py",
        str(checkpoint),
        "--input",
        str(lines),
        "--output",
        str(tmp_path / "out.csv"),
        "--keep-columns",
        "parcel",
        "order",
        *features,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert written["parcel"].tolist() == ids and written["order"].tolist() == gapped
    as_written = pd.read_csv(lines, dtype=str, keep_default_na=False)
    assert written[features].equals(as_written[features])
    expected = load_model(checkpoint).predict(frame)
    assert written[expected.name].astype(float).tolist() == pytest.approx(expected.tolist(), rel=1e-12, abs=0)


def test_unseen_categories_are_reported_and_whitespace_is_trimmed(housing_run, housing_csv, tmp_path):
    frame = pd.read_csv(housing_csv).iloc[[0] * 5]  # one house, five spellings of its category
    frame["ocean_proximity"] = ["NEAR BAY", "NEAR BAY ", "near bay", "MARS BASE", "MARS BASE"]
    frame.to_csv(tmp_path / "in.csv", index=False)
    checkpoint = str(housing_run / "checkpoints" / "best.ckpt")
    result = run_script(
        "predict.py",
        checkpoint,
        "--input",
        str(tmp_path / "in.csv"),
        "--output",
        str(tmp_path / "out.csv"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: column 'ocean_proximity'")]
    assert len(warning) == 1 and "3 rows" in warning[0] and "'near bay'" in warning[0] and "'MARS BASE'" in warning[0]
    prices = pd.read_csv(tmp_path / "out.csv")["median_house_value_prediction"]
    assert prices[0] == prices[1], "'NEAR BAY ' is 'NEAR BAY'"
    report = run_script(
        "evaluate.py", checkpoint, "--data", str(tmp_path / "in.csv"), "--output", str(tmp_path / "r"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-2000:]
    unseen = json.loads((tmp_path / "r" / "metrics.json").read_text())["unseen_categories"]
    assert unseen == {"ocean_proximity": {"rows": 3, "examples": ["near bay", "MARS BASE"]}}


def test_a_missing_category_gets_its_own_slot_when_training_had_missing_values():
    from house_price.datamodules.fitting import fit_statistics
    from house_price.datamodules.preprocessing import MISSING, UNKNOWN, Preprocessor

    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "size": rng.normal(size=200),
            "kind": rng.choice(["a", "b", None], 200),
            "flat": rng.choice(["x", "y"], 200),
            "price": rng.normal(size=200),
        }
    )
    preprocessor = Preprocessor(fit_statistics(train, "price"))
    codes = preprocessor.encode_categories(pd.DataFrame({"kind": [None, "zzz", " a"], "flat": [None, "zzz", "x"]}))
    assert codes[0, 0] == MISSING and codes[1, 0] == UNKNOWN and codes[2, 0] > MISSING
    assert codes[0, 1] == UNKNOWN and codes[1, 1] == UNKNOWN, "no missing values in training: missing is unknown"


def test_outputs_get_the_mode_a_plain_open_gives(housing_run, tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    files = [
        housing_run / "checkpoints" / "best.ckpt",
        housing_run / "checkpoints" / "last.ckpt",
        housing_run / "test_metrics.json",
        housing_run / "learning_curve.png",
    ]
    report = run_script(
        "evaluate.py", str(housing_run / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "r"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-2000:]
    files += sorted((tmp_path / "r").iterdir())
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


@pytest.mark.slow
def test_train_py_predict_and_test_write_nothing_misleading(housing_run, tmp_path):
    runs = tmp_path / "runs"
    best = str(housing_run / "checkpoints" / "best.ckpt")
    result = run_script(
        "train.py",
        "predict",
        "--config=configs/housing_csv.yaml",
        f"--ckpt_path={best}",
        f"--trainer.logger.init_args.save_dir={runs}",
        cwd=ROOT,
    )
    assert_clean_failure(result, "scripts/predict.py")
    tested = run_script(
        "train.py",
        "test",
        "--config=configs/housing_csv.yaml",
        f"--ckpt_path={best}",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={runs}",
        cwd=ROOT,
    )
    assert tested.returncode == 0 and "test/rmse" in tested.stdout, tested.stderr[-2000:]
    assert not runs.exists(), "no empty run folder"
    assert not (ROOT / "config.yaml").exists(), "nothing written into the working folder"


def read_only(folder: Path) -> list[str] | None:
    """A command prefix under which `folder` is read-only, even for root; None where this machine cannot do it."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        return None
    prefix = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$0" "$@"',
    ]
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True)
    return prefix if probe.returncode and not (folder / "probe").exists() else None


@pytest.mark.slow
def test_a_read_only_output_location_gives_one_line(housing_run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    prefix = read_only(locked)
    if prefix is None:
        pytest.skip("no way to make a read-only folder here (root without user namespaces)")
    best = str(housing_run / "checkpoints" / "best.ckpt")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = [
        [
            "train.py",
            "fit",
            "--config=configs/housing_csv.yaml",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={locked}",
        ],
        ["evaluate.py", best, "--output", str(locked / "report")],
        ["sensitivity.py", best, "--output", str(locked / "sensitivity")],
        ["predict.py", best, "--input", str(HOUSING_CSV), "--output", str(locked / "p.csv")],
    ]
    for command in commands:
        result = subprocess.run(
            [*prefix, sys.executable, str(ROOT / "scripts" / command[0]), *command[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert_clean_failure(result, "writ")
    assert list(locked.iterdir()) == []


@pytest.mark.slow
def test_edited_hyperparameters_are_refused_before_allocating(housing_run, tmp_path):
    original = torch.load(housing_run / "checkpoints" / "best.ckpt", weights_only=True)
    edits = {"hidden_sizes": [10**9], "ensemble_size": 10**7, "category_dim": 10**8, "embedding_dim": 10**8}
    for key, value in edits.items():
        checkpoint = {**original, "hyper_parameters": {**original["hyper_parameters"], key: value}}
        path = tmp_path / f"{key}.ckpt"
        torch.save(checkpoint, path)
        result = run_script(
            "predict.py",
            str(path),
            "--input",
            str(HOUSING_CSV),
            "--output",
            str(tmp_path / "out.csv"),
            cwd=tmp_path,
            timeout=60,
        )
        assert_clean_failure(result, "do not match its weights")
    assert not (tmp_path / "out.csv").exists()
    from house_price.models.checkpoint import model_from_checkpoint

    with pytest.raises(
        HousePriceError, match=r"do not describe a model \(PriceModel takes no unknown=\['hidden_size'\]\)"
    ):
        model_from_checkpoint({**original, "hyper_parameters": {**original["hyper_parameters"], "hidden_size": 64}})


def test_a_checkpoint_is_sized_before_torch_reads_it(housing_run, tmp_path, monkeypatch):
    # torch's safe unpickler is written in Python: an edited vocabulary of 10^7 categories took it most of a minute
    # to read before the sizes were refused. The file's outline, read by C pickle with tensors as shapes, comes first.
    from house_price.models import checkpoint as reader

    best = housing_run / "checkpoints" / "best.ckpt"
    loaded = torch.load(best, map_location="cpu", weights_only=True)
    outline = reader.shapes_only(best)
    assert outline["hyper_parameters"] == loaded["hyper_parameters"]
    assert {name: tuple(value.shape) for name, value in outline["state_dict"].items()} == {
        name: tuple(value.shape) for name, value in loaded["state_dict"].items()
    }
    assert all(value.is_meta for value in outline["state_dict"].values())  # no tensor's bytes were read

    loaded["hyper_parameters"]["preprocessing"]["vocabularies"][0] = [f"category {i}" for i in range(1_000)]
    torch.save(loaded, tmp_path / "edited.ckpt")
    monkeypatch.setattr(
        reader.torch, "load", lambda *args, **kwargs: pytest.fail("torch.load ran before the sizes were checked")
    )
    with pytest.raises(HousePriceError, match=r"do not match its weights .*'network.categories.0.weight': \(1002, "):
        reader.read_checkpoint(tmp_path / "edited.ckpt")


def test_train_refuses_a_code_carrying_checkpoint_to_resume(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"preprocessing": {}}, "payload": Payload()}, evil)
    result = run_script(
        "train.py", *TRAIN, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", f"--ckpt_path={evil}", cwd=ROOT
    )
    assert_clean_failure(result, "pickled objects or code")
    assert not (tmp_path / "pwned").exists()


def test_predict_streams_in_chunks_with_identical_output(housing_run, housing_csv, tmp_path, monkeypatch):
    """Never more than one chunk of the input in memory (peak RSS is too noisy to assert on with threaded allocators),
    and the same bytes whether the file is priced whole, in chunks, or by the script."""
    from house_price import prediction
    from house_price.models import load_model

    source = tmp_path / "houses.csv"
    pd.read_csv(housing_csv).head(10_000).to_csv(source, index=False)
    best = housing_run / "checkpoints" / "best.ckpt"
    result = run_script(
        "predict.py", str(best), "--input", str(source), "--output", str(tmp_path / "script.csv"), cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sizes: list[int] = []
    read = prediction.read_table_chunks

    def spy(*args, **kwargs):
        for frame, kept in read(*args, **kwargs):
            sizes.append(len(frame))
            yield frame, kept

    monkeypatch.setattr(prediction, "read_table_chunks", spy)
    model = load_model(best)
    prediction.predict_file(model, source, tmp_path / "chunked.csv", chunk_rows=4096)
    assert sizes == [4096, 4096, 1808]
    prediction.predict_file(model, source, tmp_path / "whole.csv", chunk_rows=None)
    assert (
        (tmp_path / "whole.csv").read_bytes()
        == (tmp_path / "chunked.csv").read_bytes()
        == (tmp_path / "script.csv").read_bytes()
    )


TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 258112 vs 258000"  # what torch.save raised on a full tmpfs


def test_a_full_disk_under_torch_save_is_one_line_exit_2_and_the_old_file_intact(tmp_path, monkeypatch, capsys):
    # torch's zip writer reports a full disk as a RuntimeError, which the one-line handler for unwritable places missed.
    from house_price.errors import exit_cleanly_on_error
    from house_price.files import write_atomic

    def full_disk(obj, destination, *args, **kwargs):
        Path(destination).write_bytes(b"partial")
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(torch, "save", full_disk)
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"the previous checkpoint")
    with pytest.raises(SystemExit) as exit_:
        exit_cleanly_on_error(lambda: write_atomic(checkpoint, lambda temporary: torch.save({}, temporary)))
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_.value.code == 2
        and len(error) == 1
        and error[0].startswith("error: cannot write")
        and "best.ckpt" in error[0]
    ), error
    assert checkpoint.read_bytes() == b"the previous checkpoint" and sorted(tmp_path.iterdir()) == [checkpoint], (
        "no temporary file left"
    )


def test_ctrl_c_during_predict_is_one_line_exit_130_and_no_output(
    housing_run, housing_csv, tmp_path, monkeypatch, capsys
):
    from conftest import run_in_process

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("house_price.commands.predict.predict_file", interrupted)
    shutil.copy(housing_csv, tmp_path / "houses.csv")
    result = run_in_process(
        capsys,
        "predict.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "houses.csv"),
        "--output",
        str(tmp_path / "priced.csv"),
    )
    assert result.returncode == 130 and result.stderr.strip().splitlines() == [
        "interrupted (Ctrl-C): stopped; no output was left half-written"
    ]
    assert not (tmp_path / "priced.csv").exists()


def test_a_new_run_into_a_folder_that_holds_a_run_is_refused_with_both_ways_on(tmp_path, capsys):
    from conftest import run_in_process

    run = tmp_path / "california" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch\n0\n")
    (run / "checkpoints" / "best.ckpt").write_bytes(b"the first run's model")
    result = run_in_process(
        capsys,
        "train.py",
        "fit",
        "--config=configs/california.yaml",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=0",
    )
    assert_clean_failure(
        result, "already holds a run", "leave out --trainer.logger.init_args.version", "--ckpt_path last"
    )
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == b"the first run's model" and (
        run / "metrics.csv"
    ).read_text() == "epoch\n0\n"


def test_impossible_houses_are_named_on_stderr_and_a_positive_price_never_gets_a_negative_bound(
    housing_run, housing_csv, tmp_path
):
    houses = pd.read_csv(housing_csv, nrows=4)
    houses.loc[0, "population"] = 1e12
    houses.loc[1, "median_income"] = 1000.0
    houses.loc[2, "total_rooms"] = -50.0
    houses.to_csv(tmp_path / "houses.csv", index=False)
    result = run_script(
        "predict.py",
        str(housing_run / "checkpoints" / "best.ckpt"),
        "--input",
        str(tmp_path / "houses.csv"),
        "--output",
        str(tmp_path / "priced.csv"),
        "--interval",
        "0.9",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    named = {
        line.split("'")[1]: line for line in result.stderr.splitlines() if "outside the range training saw" in line
    }
    assert set(named) == {"population", "median_income", "total_rooms"}, result.stderr
    assert (
        "1 rows" in named["population"]
        and "1000000000000.0" in named["population"]
        and "extrapolations" in named["population"]
    )
    priced = pd.read_csv(tmp_path / "priced.csv")
    assert (priced["median_house_value_lower"] >= 0).all()
    assert (priced["median_house_value_lower"] <= priced["median_house_value_prediction"]).all()


def test_last_ckpt_written_at_the_step_of_a_best_ckpt_is_that_file_and_resumes(tmp_path):
    """Where an epoch writes best.ckpt, last.ckpt is a copy of it (not a second serialization): the same bytes, a
    state naming last.ckpt itself, and a resume from it that keeps writing best.ckpt and last.ckpt (no last-v1.ckpt)."""

    def fit(epochs: int, ckpt_path: str | None = None) -> None:
        torch.manual_seed(0)
        datamodule = plain_datamodule(priced_frame(150), target="price")
        model = HousePriceRegressor(
            preprocessing=datamodule.preprocessing, hidden_sizes=[16], ensemble_size=2, scheduler="none"
        )
        # "epoch" in mode max improves at every epoch: each writes best.ckpt, then last.ckpt.
        checkpoint = EpochCheckpoint(dirpath=tmp_path, filename="best", monitor="epoch", mode="max", save_last=True)
        trainer = L.Trainer(
            max_epochs=epochs,
            logger=False,
            callbacks=[checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    fit(2)
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    assert last.read_bytes() == best.read_bytes()
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and state["callbacks"][
        next(key for key in state["callbacks"] if key.startswith("EpochCheckpoint"))
    ]["last_model_path"] == str(last)
    fit(3, ckpt_path=str(last))
    assert {path.name for path in tmp_path.iterdir()} == {"best.ckpt", "last.ckpt"}
    assert torch.load(last, weights_only=True)["epoch"] == 2 and last.read_bytes() == best.read_bytes()


@pytest.mark.slow
def test_last_ckpt_is_the_last_epoch_and_a_finished_run_is_not_resumed(tmp_path):
    # With mode "max" the "best" checkpoint is only ever the first epoch: Lightning then left last.ckpt at epoch 1 too,
    # and --ckpt_path last retrained the later epochs, appending them to metrics.csv a second time.
    first = subprocess.run(
        train_command(tmp_path, "--checkpoint.mode=max"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "california" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2, (
        "the end of the third and last epoch"
    )
    metrics = (run / "metrics.csv").read_text()
    again = subprocess.run(
        train_command(tmp_path, "--checkpoint.mode=max", "--ckpt_path=last"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_clean_failure(again, "has finished", "epoch 3 of --trainer.max_epochs 3", "larger --trainer.max_epochs")
    assert (run / "metrics.csv").read_text() == metrics


def test_a_checkpoint_too_big_for_a_real_small_filesystem_is_one_line_and_leaves_the_old_one(tmp_path, capsys):
    # The same through torch's own writer on a real 1 MiB tmpfs (mounting needs root, as CI has; skipped elsewhere).
    from house_price.errors import exit_cleanly_on_error
    from house_price.files import write_atomic

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        checkpoint = disk / "best.ckpt"
        torch.save({"weights": torch.zeros(1000)}, checkpoint)
        before = checkpoint.read_bytes()
        with pytest.raises(SystemExit) as exit_:
            exit_cleanly_on_error(
                lambda: write_atomic(
                    checkpoint, lambda temporary: torch.save({"weights": torch.zeros(2**19)}, temporary)
                )
            )
        error = capsys.readouterr().err.strip().splitlines()
        assert (
            exit_.value.code == 2
            and len(error) == 1
            and error[0].startswith("error: cannot write")
            and "best.ckpt" in error[0]
        ), error
        assert checkpoint.read_bytes() == before and sorted(disk.iterdir()) == [checkpoint]
    finally:
        subprocess.run(
            ["umount", "--lazy", str(disk)], capture_output=True
        )  # lazy: a failed write may still hold a descriptor
