"""`house-price serve`'s application: the pricing API and its page."""
