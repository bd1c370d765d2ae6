"""The package version (a leaf module: importing it imports nothing else of the package)."""
__version__ = "0.1.0"
