"""`python -m house_price COMMAND ...`, the same as the installed `house-price` command."""

from house_price.cli import main

main()
