"""`house-price tune` in a checkout (installed with `pip install -e .`): see house_price/commands/tune.py (`--help`)."""

from house_price.commands.tune import main
from house_price.errors import exit_cleanly_on_error

if __name__ == "__main__":
    exit_cleanly_on_error(main)
