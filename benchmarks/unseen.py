"""How a trained model prices houses whose category it never saw: test RMSE with each categorical column set to a
value absent from training, with that value's embedding as the package sets it (zeros) and as nn.Embedding's
default left it before (a random normal vector, several draws).

    python -m benchmarks.unseen --data ../shared/data/housing.csv --target median_house_value
    python -m benchmarks.unseen --data ../shared/data/housing.csv --target median_house_value --neighborhoods 150

--neighborhoods N replaces longitude and latitude by N k-means clusters of them, a column like Ames' Neighborhood.
Each run trains configs/fast.yaml for --epochs epochs in a temporary folder. The unseen value's embedding row takes
no part in training (no training row holds it; tests/test_network.py proves it stays zero), so both rows are
compared on the same trained weights. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from house_price.models.checkpoint import model_from_checkpoint, read_checkpoint, training_split

ROOT = Path(__file__).resolve().parents[1]


def with_neighborhoods(frame: pd.DataFrame, clusters: int) -> pd.DataFrame:
    from sklearn.cluster import KMeans

    labels = KMeans(clusters, n_init=1, random_state=0).fit_predict(frame[["longitude", "latitude"]])
    return frame.drop(columns=["longitude", "latitude"]).assign(neighborhood=[f"n{label}" for label in labels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--neighborhoods", type=int, help="replace longitude/latitude by this many k-means clusters")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--draws", type=int, default=5, help="random rows drawn for the former embedding")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        data = arguments.data.resolve()
        if arguments.neighborhoods:
            data = Path(folder) / "neighborhoods.csv"
            with_neighborhoods(pd.read_csv(arguments.data), arguments.neighborhoods).to_csv(data, index=False)
        command = [
            sys.executable,
            "-m",
            "house_price",
            "train",
            "--config",
            "housing_csv",
            "--config",
            "fast",
            f"--data.path={data}",
            f"--data.target={arguments.target}",
            f"--trainer.max_epochs={arguments.epochs}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={folder}",
            "--trainer.logger.init_args.name=unseen",
        ]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        checkpoint = read_checkpoint(next(Path(folder).glob("unseen/version_*/checkpoints/best.ckpt")))
        model, test = model_from_checkpoint(checkpoint), training_split(checkpoint)

        def rmse(frame: pd.DataFrame) -> float:
            return float(np.sqrt(np.mean((model.predict(frame).to_numpy() - frame[model.target].to_numpy()) ** 2)))

        print(
            f"{arguments.data.name}{f' with {arguments.neighborhoods} neighborhoods' if arguments.neighborhoods else ''}, "
            f"configs/fast.yaml for {arguments.epochs} epochs; test RMSE ({len(test)} rows), target units\n"
        )
        print(
            "| column set to an unseen value | values in training | known categories | unseen: zeros (now) | "
            f"unseen: random row (before), mean of {arguments.draws} draws |"
        )
        print("|---|---|---|---|---|")
        generator = torch.Generator().manual_seed(0)
        for index, column in enumerate(model.preprocessor.categorical):
            unseen = test.assign(**{column: "NEVER SEEN"})
            embedding = model.network.categories[index].weight
            zeros = rmse(unseen)
            draws = []
            with torch.no_grad():
                for _ in range(arguments.draws):
                    embedding[0] = torch.randn(
                        embedding.shape[1], generator=generator
                    )  # nn.Embedding's N(0, 1) initialization
                    draws.append(rmse(unseen))
                embedding[0] = 0
            vocabulary = len(model.preprocessor.state.vocabularies[index])
            print(
                f"| {column} | {vocabulary} | {rmse(test):,.0f} | {zeros:,.0f} | {np.mean(draws):,.0f} (from {min(draws):,.0f} to {max(draws):,.0f}) |"
            )


if __name__ == "__main__":
    main()
