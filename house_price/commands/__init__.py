"""The subcommands of `house-price`, one module each with `main(argv)`."""
