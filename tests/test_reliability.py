"""Bad input and faults: one-line errors with exit code 2, no half-written output, nothing lost."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, TRAIN, assert_clean_failure, plain_datamodule, run_in_process, run_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from house_price.datamodules.sources import read_table
from house_price.errors import HousePriceError


def numbers_csv(path: Path, rows: int = 60, **columns: list) -> Path:
    frame = pd.DataFrame({"size": np.arange(rows, dtype=float), "price": np.arange(rows, dtype=float) * 3 + 1})
    for name, values in columns.items():
        frame[name] = values
    frame.to_csv(path, index=False)
    return path


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def bad_data_cases(tmp: Path) -> list[tuple[list[str], list[str]]]:
    n = 60
    dollars = [f"${i},{i % 10}00" for i in range(n)]
    return [
        (["--data.path", str(tmp / "missing.csv")], ["does not exist", "missing.csv"]),
        (["--data.path", str(tmp)], ["is a directory"]),
        (["--data.path", str(write(tmp / "empty.csv", ""))], ["is empty"]),
        (["--data.path", str(write(tmp / "binary.csv", bytes(range(256)) * 8))], ["binary"]),
        (["--data.path", str(write(tmp / "header.csv", "size,price\n"))], ["no data rows"]),
        (["--data.path", str(write(tmp / "few.csv", "size,price\n1,2\n2,3\n3,5\n"))], ["too few", "3 rows"]),
        (
            ["--data.path", str(write(tmp / "dup.csv", "size,size,price\n1,2,3\n4,5,6\n"))],
            ["duplicate column names", "'size'"],
        ),
        (["--data.path", str(numbers_csv(tmp / "t.csv")), "--data.target", "cost"], ["'cost' is not in the data"]),
        (
            ["--data.path", str(numbers_csv(tmp / "s.csv", kind=["a"] * n)), "--data.target", "kind"],
            ["'kind' is not numeric"],
        ),
        (
            ["--data.path", str(numbers_csv(tmp / "c.csv", flat=[5.0] * n)), "--data.target", "flat"],
            ["'flat' is constant"],
        ),
        (
            [
                "--data.path",
                str(numbers_csv(tmp / "m.csv", gap=[1.0] * 10 + [None] + [2.0] * (n - 11))),
                "--data.target",
                "gap",
            ],
            ["'gap' has 1 missing", "row 11"],
        ),
        (["--data.path", str(numbers_csv(tmp / "d.csv", cost=dollars))], ["'cost' looks numeric", "'$0,000'"]),
        (
            ["--data.path", str(numbers_csv(tmp / "p.csv", share=[f"{i}%" for i in range(n)]))],
            ["'share' looks numeric but holds text such as '0%'", "write percentages as plain numbers"],
        ),
        (
            [
                "--data.path",
                str(numbers_csv(tmp / "g.csv", area=[f"{i} 500" for i in range(1, n + 1)])),
            ],  # digits grouped by a space
            ["'area' looks numeric but holds text such as '1 500' (data row 1)", "thousands separators"],
        ),
        (
            [
                "--data.path",
                str(numbers_csv(tmp / "ge.csv", cost=[f"{i}\u00a0500 €" for i in range(1, n + 1)])),
            ],  # a no-break space, a trailing €
            ["'cost' looks numeric but holds text such as '1", "500 €' (data row 1)", "remove currency signs"],
        ),
        (
            ["--data.path", str(numbers_csv(tmp / "u.csv", age=[1] * 9 + ["unknown"] + [2] * (n - 10)))],
            [
                "'age' looks numeric but holds text such as 'unknown' (data row 10)",
                "if it marks a missing value, leave those cells empty or write NA",
            ],
        ),
        (
            ["--data.path", str(numbers_csv(tmp / "i.csv", area=[1.0] * 5 + [float("inf")] + [1.0] * (n - 6)))],
            ["'area' holds an infinite", "row 6"],
        ),
        (["--trainer.max_epochs=-5"], ["max_epochs"]),
        (["--data.test_fraction=1.5"], ["test_fraction is 1.5"]),
        (["--model.hidden_sizes=[64,0]"], ["hidden_sizes is [64, 0]"]),
        (["--trainer.gradient_clip_val=1.0"], ["--model.gradient_clip 1.0 instead"]),
        (["--trainer.accumulate_grad_batches=4"], ["accumulate_grad_batches", "--data.batch_size"]),
        (["--model.gradient_clip=0"], ["gradient_clip is 0"]),
        (["--data.batches_per_call=0"], ["batches_per_call is 0"]),
        (["--checkpoint.every_n_train_steps=100"], ["every_n_train_steps needs --data.batches_per_call 1"]),
    ]


@pytest.mark.slow
def test_training_refuses_bad_input_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    for arguments, fragments in bad_data_cases(tmp_path):
        if arguments[0] == "--data.path" and "--data.target" not in arguments:
            arguments = [*arguments, "--data.target", "price"]
        result = run_in_process(
            capsys,
            "train.py",
            "fit",
            "--config=configs/housing_csv.yaml",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={runs}",
            *arguments,
        )
        assert_clean_failure(result, *fragments)
    # One as a real process too: the exit code and the single stderr line are what a shell sees.
    result = run_script(
        "train.py",
        "fit",
        "--config=configs/housing_csv.yaml",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--data.path",
        str(tmp_path / "missing.csv"),
        cwd=ROOT,
    )
    assert_clean_failure(result, "does not exist")
    assert not runs.exists(), "a failed start must leave no run folder behind"


def test_unknown_config_keys_are_refused_by_lightning_cli():
    result = run_script("train.py", "fit", "--config=configs/california.yaml", "--model.hidden_size=3", cwd=ROOT)
    assert result.returncode == 2 and "hidden_size" in result.stderr


def test_debug_mode_shows_the_traceback(tmp_path):
    result = run_script(
        "predict.py",
        str(tmp_path / "none.ckpt"),
        "--input",
        "x.csv",
        "--output",
        str(tmp_path / "o.csv"),
        cwd=tmp_path,
        env={"HOUSE_PRICE_DEBUG": "1"},
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "HousePriceError" in result.stderr


def test_bad_checkpoints_are_refused(housing_run, tmp_path, capsys):
    best = housing_run / "checkpoints" / "best.ckpt"
    truncated = write(tmp_path / "truncated.ckpt", best.read_bytes()[: best.stat().st_size // 2])
    corrupted = write(tmp_path / "corrupted.ckpt", b"this is not a checkpoint at all\n" * 10)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}, "epoch": 3}, other)
    cases = [
        (tmp_path / "absent.ckpt", "does not exist"),
        (tmp_path, "is a directory"),
        (truncated, "truncated or corrupted"),
        (corrupted, "truncated or corrupted"),
        (other, "not a house-price model checkpoint"),
    ]
    for path, fragment in cases:
        assert_clean_failure(run_in_process(capsys, "evaluate.py", str(path)), fragment)
        result = run_in_process(
            capsys, "predict.py", str(path), "--input", str(ROOT / "README.md"), "--output", str(tmp_path / "o.csv")
        )
        assert_clean_failure(result, fragment)
    assert_clean_failure(run_script("evaluate.py", str(truncated), cwd=tmp_path), "truncated or corrupted")
    assert not (tmp_path / "o.csv").exists()


def test_prediction_output_paths(housing_run, housing_csv, tmp_path, capsys):
    best = str(housing_run / "checkpoints" / "best.ckpt")
    small = tmp_path / "in.csv"
    pd.read_csv(housing_csv).head(10).to_csv(small, index=False)
    # Refusals in-process (they stop before any work); the one that writes runs as a real process.
    assert_clean_failure(
        run_in_process(capsys, "predict.py", best, "--input", str(small), "--output", str(tmp_path / "no" / "o.csv")),
        "does not exist",
    )
    existing = write(tmp_path / "keep.csv", "precious user data\n")
    assert_clean_failure(
        run_in_process(capsys, "predict.py", best, "--input", str(small), "--output", str(existing)), "--overwrite"
    )
    assert existing.read_text() == "precious user data\n"
    result = run_script(
        "predict.py", best, "--input", str(small), "--output", str(existing), "--overwrite", cwd=tmp_path
    )
    assert result.returncode == 0 and len(pd.read_csv(existing)) == 10
    assert_clean_failure(
        run_in_process(
            capsys, "predict.py", best, "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "n.csv")
        ),
        "does not exist",
    )
    assert not (tmp_path / "n.csv").exists()
    leftovers = [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # A learning rate of 1e4 makes the weights overflow within the first epochs.
    result = run_script(
        "train.py",
        *TRAIN,
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--model.learning_rate=1e4",
        "--model.scheduler=none",
        "--trainer.max_epochs=3",
        cwd=ROOT,
    )
    assert_clean_failure(result, "training loss became", "at epoch", "step")
    last = tmp_path / "california" / "version_0" / "checkpoints" / "last.ckpt"
    if last.exists():
        weights = torch.load(last, weights_only=True)["state_dict"]
        assert all(torch.isfinite(value).all() for value in weights.values())
    assert not (tmp_path / "california" / "version_0" / "test_metrics.json").exists()


def test_non_finite_losses_are_read_once_per_epoch_and_the_first_bad_step_named():
    from types import SimpleNamespace

    from house_price.training.callbacks import StopOnNonFiniteLoss

    callback = StopOnNonFiniteLoss()
    progress = SimpleNamespace(is_last_batch=False)
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        global_step=10,
        current_epoch=2,
        checkpoint_callback=None,
    )
    callback.on_train_epoch_start(trainer, None)
    for step, loss in enumerate([0.5, 0.4, float("nan"), float("inf")], start=11):
        trainer.global_step = step
        callback.on_train_batch_end(
            trainer, None, {"loss": torch.tensor(loss)}, None, step - 11
        )  # no wait for the device
    trainer.global_step, progress.is_last_batch = 15, True
    with pytest.raises(HousePriceError, match=r"became nan at epoch 2, step 13; stopped. Last good checkpoint: none"):
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.3)}, None, 4)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from house_price.training.checkpointing import AtomicCheckpointIO

    target = tmp_path / "model.ckpt"
    target.write_bytes(b"previous good checkpoint")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(1)}, target)
    assert target.read_bytes() == b"previous good checkpoint"
    assert [path.name for path in tmp_path.iterdir()] == ["model.ckpt"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.integers(-5, 5).map(str),
                st.sampled_from(["", "NA", "n/a", "$1,2", "inf", "x", '"', "a,b", "1e400", "\ufeff"]),
                st.text(max_size=4),
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=0,
        max_size=8,
    ),
    st.sampled_from([",", ";", "\t"]),
)
def test_random_malformed_csvs_load_or_raise_our_error(tmp_path, rows, separator):
    text = "\n".join(separator.join(row) for row in rows)
    path = tmp_path / "fuzz.csv"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        frame = read_table(path)
        target = str(frame.columns[-1])
        datamodule = plain_datamodule(frame, target=target, test_fraction=0.3, val_fraction=0.3)
        datamodule.tensors("train")
    except HousePriceError:
        pass


def test_unwritable_output_folder_is_refused(tmp_path, monkeypatch):
    # Tests run as root here, where every folder is writable: simulate the permission answer instead.
    from house_price.files import check_output

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(HousePriceError, match="not writable"):
        check_output(tmp_path / "out.csv")
