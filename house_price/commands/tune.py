"""Hyperparameter search with Optuna: best validation RMSE, pruned per epoch, in a study database.

    house-price tune --config california --trials 40
    house-price tune --config california --trials 4 --trainer.max_epochs 2        # any train option is passed on
    house-price tune --config california --trials 40 --storage postgresql://user:pw@host/db --study california

Each trial trains with `house-price train`'s CLI and the trial's values from the search space (--space, default
the bundled configs/tune_space.yaml, or configs/tune_space_comparables.yaml for the comparables network); its
objective is the best validation RMSE, never the test split, and a trial whose validation RMSE falls behind the
median of earlier trials at the same epoch is pruned. The study lives in a
database (default sqlite:///runs/tune/study.db; any SQLAlchemy URL): the same command after a crash goes on where
it stopped, and several processes or machines can run the same command on one study at once, until --trials
trials have finished between them. A study refuses trials with other options than it started with (another data
file, recipe or search space): name a new one with --study. Written to runs/tune/<study>/: best.yaml (a config
`house-price train --config best.yaml` accepts: the study's configs, the options passed on, the best values),
trials.csv and trials.png, and each trial's run folder (trial_<n>/) with its checkpoints.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from house_price.commands.train import MONITOR, HousePriceCLI, bundled_config, configs_folder, run_cli
from house_price.errors import HousePriceError
from house_price.files import write_text_atomic
from house_price.reports import amount, save_figure
from house_price.training.callbacks import InterruptExit
from house_price.training.search_space import as_option, dotted_options, load_space, merged_config, suggest, values_of
from house_price.training.tuning import InterruptGate, PruneOnValidation

DEFAULT_STORAGE = "sqlite:///runs/tune/study.db"
# A process that stops sending heartbeats for this long (killed, machine lost) has its running trial failed by
# the next process to start, which runs that trial's values again.
HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 30


def quiet_interrupts(record: logging.LogRecord) -> bool:
    """A logging filter: Optuna logs an interrupted trial as failed with the KeyboardInterrupt's traceback; the one
    line `tune` prints after it says what happened and what to do."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def bundled_space(config: dict[str, Any]) -> Path:
    """The bundled search space of the config's network: configs/tune_space.yaml for the MLP ensemble,
    configs/tune_space_comparables.yaml for the comparables network (which has other options)."""
    architecture = (config.get("model") or {}).get("architecture", "mlp")
    return configs_folder() / ("tune_space_comparables.yaml" if architecture == "comparables" else "tune_space.yaml")


class SurplusTrial(Exception):
    """A trial begun once the study already had its --trials trials, finished or running in other processes: ended
    unrun (Optuna records it as failed), so processes sharing a study finish exactly the trials asked."""


def is_surplus(study: Any, trial: Any, trials: int, since: datetime.datetime) -> bool:
    """Whether `trial` comes after the study's first `trials` finished trials and those running that began `since`
    this process started (a trial running from before may be one a killed process abandoned: it is failed once its
    heartbeat is stale, and counting it would leave the study short). Trial numbers are given out one at a time by
    the storage, so of several processes starting trials at once exactly the later ones are surplus."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    counted = [
        other
        for other in study.get_trials(deepcopy=False)
        if other.number < trial.number
        and (
            other.state in finished
            or (
                other.state == optuna.trial.TrialState.RUNNING
                and other.datetime_start is not None
                and other.datetime_start >= since
            )
        )
    ]
    return len(counted) >= trials


def quiet_surplus(record: logging.LogRecord) -> bool:
    """A logging filter: Optuna logs a surplus trial as failed; it was never run."""
    return "SurplusTrial" not in record.getMessage() and not (
        record.exc_info and isinstance(record.exc_info[1], SurplusTrial)
    )


class TrialCLI(HousePriceCLI):
    def after_fit(self) -> None:
        """Nothing: a search never looks at the test split (and calibrates no intervals)."""


def storage(url: str) -> Any:
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = (
        {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    )  # wait for the other processes' writes
    # Heartbeats are "experimental" in Optuna's terms since 2.8; they are what makes a killed study resumable here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        )
    except Exception as error:  # SQLAlchemy's many connection errors
        raise HousePriceError(
            f"cannot open the study database '{url}' ({' '.join(str(error).split())[:200]}); check --storage"
        ) from None


def check_same_setup(study: Any, setup: dict[str, Any], url: str) -> None:
    """Record what the study's trials are measured on (the merged config and the search space) when it starts, and
    refuse to add trials measured on anything else: trials on another data file or recipe would be ranked, pruned
    and picked as "best" against each other."""
    setup = json.loads(json.dumps(setup))  # as the database gives it back
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", setup)
    elif stored != setup:
        raise HousePriceError(
            f"study '{study.study_name}' in {url} was run with other options ({first_difference(stored, setup)}); rerun it with "
            "those, or start a new study with --study NAME"
        )


def first_difference(before: Any, now: Any, name: str = "") -> str:
    """The first dotted option where two nested dicts differ, as "name: <before> then, <now> now"."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in [*before, *(key for key in now if key not in before)]:
            if before.get(key) != now.get(key):
                return first_difference(before.get(key), now.get(key), f"{name}.{key}" if name else key)
    return f"{name}: {before!r} then, {now!r} now"


def parse_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[str]]:
    """(tune's own arguments, the train options passed on to every trial, the configs as files), each refused in one
    line where it cannot run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", action="append", required=True, help="a train config (a bundled name or a path); repeatable"
    )
    parser.add_argument(
        "--trials", type=int, required=True, help="finished (complete or pruned) trials the study should have"
    )
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"SQLAlchemy database URL (default {DEFAULT_STORAGE})"
    )
    parser.add_argument("--study", help="study name (default: the config names joined by '+')")
    parser.add_argument(
        "--space", type=Path, help="search space YAML (default: the bundled one of the configs' architecture)"
    )
    arguments, train_options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if arguments.trials < 1:
        raise HousePriceError(f"--trials {arguments.trials} must be at least 1")
    configs = [bundled_config(config) for config in arguments.config]
    for config in configs:
        if not Path(config).is_file():
            raise HousePriceError(
                f"config '{config}' is not a file or a bundled config name; give a path or one of "
                f"{sorted(path.stem for path in configs_folder().glob('*.yaml'))}"
            )
    return arguments, train_options, configs


def run_trial(
    trial: Any,
    *,
    study: Any,
    trials: int,
    started: datetime.datetime,
    space: dict[str, dict[str, Any]],
    configs: list[str],
    train_options: list[str],
    folder: Path,
    gate: InterruptGate,
    interrupt: InterruptExit,
) -> float:
    """One trial: `house-price train` with the trial's values from the space, pruned on validation; its best
    validation RMSE. A trial past the study's `trials` (finished or running, between every process) is not run."""
    import optuna

    if is_surplus(study, trial, trials, started):
        study.stop()
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number} not run: the study has its {trials} trials, finished or running")
    values = suggest(trial, space)
    pruning = PruneOnValidation(trial, gate, monitor=MONITOR)
    quiet = [
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]  # the user's options may turn them on
    args = [
        "fit",
        *[f"--config={config}" for config in configs],
        *quiet,
        *train_options,
        *(as_option(k, v) for k, v in values.items()),
        f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.logger.init_args.name=trial_{trial.number}",
    ]
    try:
        with gate.opened():
            cli = run_cli(args, interrupt, cli=TrialCLI, callbacks=(pruning,))
    except SystemExit:  # how Lightning ends a fit stopped by Ctrl-C or SIGTERM
        if interrupt.exit_code is None:
            raise
    if interrupt.exit_code is not None:
        raise KeyboardInterrupt  # Optuna records the trial as failed (not finished): a rerun measures it again
    score = cli.trainer.checkpoint_callback.best_model_score
    if score is None:
        raise HousePriceError(f"trial {trial.number} logged no {MONITOR}; check the train options")
    if pruning.pruned:
        raise optuna.TrialPruned()
    return float(score)


def main(argv: list[str] | None = None) -> None:
    import optuna

    arguments, train_options, configs = parse_arguments(argv)
    passed_on = dotted_options(train_options)
    setup = merged_config(configs, passed_on)  # what the trials train with, before the space's values
    space_path = arguments.space or bundled_space(setup)
    space = {name: entry for name, entry in load_space(space_path).items() if name not in passed_on}  # passed on: fixed
    name = arguments.study or "+".join(Path(config).stem for config in configs)
    folder = Path("runs") / "tune" / name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # the handler sees its child loggers' records too
        handler.addFilter(quiet_interrupts)
        handler.addFilter(quiet_surplus)
    study = optuna.create_study(
        study_name=name,
        storage=storage(arguments.storage),
        direction="minimize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    check_same_setup(study, {"config": setup, "space": space}, arguments.storage)
    claim_report_folder(folder, arguments.storage)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    interrupt, gate = InterruptExit(), InterruptGate()
    started = datetime.datetime.now()  # as Optuna stamps a trial's start

    objective = functools.partial(
        run_trial,
        study=study,
        trials=arguments.trials,
        started=started,
        space=space,
        configs=configs,
        train_options=train_options,
        folder=folder,
        gate=gate,
        interrupt=interrupt,
    )
    done = len(study.get_trials(deepcopy=False, states=finished))
    try:
        with gate.installed():
            if done < arguments.trials:
                study.optimize(
                    objective,
                    n_trials=arguments.trials - done,
                    catch=(SurplusTrial,),
                    callbacks=[optuna.study.MaxTrialsCallback(arguments.trials, states=finished), gate.stop_study],
                )
        interrupted = gate.held
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        print(
            f"Interrupted: study '{name}' keeps its finished trials; rerun the same command to go on", file=sys.stderr
        )
        sys.exit(interrupt.exit_code or 130)
    report(study, space, configs, passed_on, folder)


def claim_report_folder(folder: Path, storage_url: str) -> None:
    """A study's report folder (best.yaml, trials.csv, trial runs) belongs to one database: a study of the same name
    in another would replace its files. The folder keeps a fingerprint of its storage's URL (not the URL, which may
    hold a password) and refuses any other."""
    mark = folder / ".storage"
    fingerprint = hashlib.sha256(storage_url.encode()).hexdigest()[:16]
    if mark.exists() and mark.read_text().strip() != fingerprint:
        raise HousePriceError(
            f"report folder '{folder}' belongs to a study named '{folder.name}' in another database (--storage); "
            "give this one another --study name"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(mark, fingerprint + "\n")


def report(
    study: Any, space: dict[str, dict[str, Any]], configs: list[str], passed_on: dict[str, Any], folder: Path
) -> None:
    """best.yaml, trials.csv and trials.png in `folder`, and a summary on stdout."""
    import matplotlib.pyplot as plt
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise HousePriceError(
            f"study '{study.study_name}' has no complete trial yet (all pruned or failed); run more --trials"
        )
    folder.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    config = merged_config(configs, passed_on | values_of(best.params, space))
    header = f"# Best trial {best.number} of study '{study.study_name}': validation RMSE {amount(best.value)}\n"
    best_yaml = write_text_atomic(folder / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    write_text_atomic(folder / "trials.csv", table.to_csv(index=False))
    figure, axis = plt.subplots(figsize=(7, 4))
    for state, marker in ((optuna.trial.TrialState.COMPLETE, "o"), (optuna.trial.TrialState.PRUNED, "x")):
        trials = [trial for trial in study.trials if trial.state == state and trial.intermediate_values]
        values = [
            trial.value if trial.value is not None else min(trial.intermediate_values.values()) for trial in trials
        ]
        axis.scatter([trial.number for trial in trials], values, marker=marker, label=state.name.lower())
    axis.set(xlabel="trial", ylabel=f"best {MONITOR}", title=f"Study {study.study_name}")
    axis.legend()
    save_figure(figure, folder / "trials.png")
    counts = {
        state.name.lower(): sum(trial.state == state for trial in study.trials) for state in optuna.trial.TrialState
    }
    surplus = sum(bool(trial.user_attrs.get("surplus")) for trial in study.trials)
    if surplus:  # begun by a process sharing the study as the last trials were already running: never trained
        counts["fail"] -= surplus
        counts["not run (begun once the study had its trials)"] = surplus
    if counts.get("running"):  # nothing runs here any more: another process's, or one a killed process left behind
        counts[
            f"running (in another process, or abandoned by one that was killed: once its heartbeat is {GRACE_SECONDS} s old, "
            "the next run of this command marks it failed and tries its values again)"
        ] = counts.pop("running")
    print(
        f"Study '{study.study_name}': {', '.join(f'{n} {s}' for s, n in counts.items() if n)}. Best: trial {best.number}, "
        f"validation RMSE {amount(best.value)}, {values_of(best.params, space)}"
    )
    print(
        f"Wrote {best_yaml} (train it: house-price train --config {best_yaml}), {folder / 'trials.csv'}, {folder / 'trials.png'}"
    )
