"""`house-price explain` in a checkout (installed with `pip install -e .`): see house_price/commands/explain.py (`--help`)."""

from house_price.commands.explain import main
from house_price.errors import exit_cleanly_on_error

if __name__ == "__main__":
    exit_cleanly_on_error(main)
