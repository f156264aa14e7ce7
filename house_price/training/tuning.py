"""An Optuna study's training machinery: Ctrl-C held while Optuna works, and pruning on each epoch's validation."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L


class InterruptGate:
    """Ctrl-C during a study: a KeyboardInterrupt while the gate is open (a trial's training), held while it is
    closed (Optuna's own work around the trial) and raised when it next opens; a trial that finishes with an
    interrupt held is the study's last.

    Optuna is not safe to interrupt: a KeyboardInterrupt as it starts a trial's heartbeat thread leaves that thread
    running, so the process never exits and the trial never fails; one inside a database write skips its rollback.
    """

    def __init__(self) -> None:
        self.held = False
        self._open = False

    def __call__(self, signum: int, frame: Any) -> None:
        """The SIGINT handler."""
        if self._open:
            raise KeyboardInterrupt
        self.held = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT while inside; a process that ignores it (a background job, nohup) keeps ignoring it."""
        before = signal.getsignal(signal.SIGINT)
        if before is not signal.default_int_handler:
            yield
            return
        signal.signal(signal.SIGINT, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, before)

    @contextmanager
    def opened(self, is_open: bool = True) -> Iterator[None]:
        """Open (or, with False, close) the gate inside; an interrupt held until it opens is raised then."""
        before, self._open = self._open, is_open
        try:
            if is_open and self.held:
                raise KeyboardInterrupt
            yield
        finally:
            self._open = before
        if before and not is_open and self.held:
            raise KeyboardInterrupt

    def stop_study(self, study: Any, trial: Any) -> None:
        """An Optuna callback, after each trial: no new trial once Ctrl-C was pressed."""
        if self.held:
            study.stop()


class PruneOnValidation(L.Callback):
    """Reports each epoch's `monitor` (the validation RMSE) to the trial and stops training when Optuna's pruner says so."""

    def __init__(self, trial: Any, gate: InterruptGate, *, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.gate = gate
        self.pruned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        with self.gate.opened(False):  # database writes
            self.trial.report(float(value), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if prune:
            self.pruned = True
            trainer.should_stop = True
