"""lwta-plugin: stochastic LWTA + IBP + ECOC networks for RobustBench and torchattacks."""
__version__ = "0.1.0"
