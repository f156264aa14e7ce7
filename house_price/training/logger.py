"""The CSV logger of every run, which keeps the earlier epochs' rows when a run resumes in its own folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from house_price.files import write_text_atomic


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv on start; this one appends to it. Its hparams.yaml names
    the location price's training sales by their count: the checkpoint holds them, and YAML-writing tens of thousands of
    numbers took seconds at every start."""

    def log_hparams(self, params: dict[str, Any]) -> None:
        state = params.get("preprocessing")
        if isinstance(state, dict) and isinstance(state.get("location"), dict):
            location = state["location"]
            sales = {
                key: f"{len(location[key]):,} numbers, in the checkpoint"
                for key in ("latitude", "longitude", "prices")
                if key in location
            }
            params = {**params, "preprocessing": {**state, "location": {**location, **sales}}}
        self.hparams.update(params)
        # Lightning's writer's YAML (a tuple as its list: safe to load), by libyaml's emitter where PyYAML has it:
        # Lightning's dumps every value twice in pure Python, and the preprocessing state is thousands of numbers.
        try:
            text = yaml.dump(self.hparams, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
        except yaml.representer.RepresenterError:  # a value that is not plain data: Lightning's writer names its type
            super().log_hparams({})
        else:
            write_text_atomic(Path(self.log_dir) / self.NAME_HPARAMS_FILE, text)

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the earlier epochs' rows when a run resumes in its own folder (`--ckpt_path last`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
