"""edgekd: distill a cloud teacher into an edge-sized student, export it and measure it."""

__version__ = "0.1.0"
