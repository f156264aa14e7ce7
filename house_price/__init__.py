"""The `house-price` command: train, evaluate, predict, explain, tune, export and the analyses, from any folder.

pyproject.toml installs the checkout's `datamodules/`, `models/`, `analysis/` and `configs/` as `house_price.datamodules`,
`house_price.models`, `house_price.analysis` and `house_price.configs` (`pip install -e .` in a checkout); the layout and
its import rule: docs/architecture.md.
"""
