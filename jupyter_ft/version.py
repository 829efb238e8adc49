"""The package version, in a leaf module: the server reports it without importing the package's API."""

__version__ = "0.1.0"
