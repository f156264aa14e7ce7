"""The `house-price` command: train, evaluate, predict, explain, tune, export and the analyses, from any folder."""
