"""Torch autograd turned on functions: derivatives, extrema, level crossings and gradient ascent."""
