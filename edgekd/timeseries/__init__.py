"""Time-series building blocks that sit above models and data: the noisy Born-Again objective."""
