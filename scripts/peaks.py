"""`house-price peaks` from a checkout, without installing: see house_price/peaks.py (`--help`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from house_price.datamodules.errors import exit_cleanly_on_error
from house_price.peaks import main

if __name__ == "__main__":
    exit_cleanly_on_error(main)
