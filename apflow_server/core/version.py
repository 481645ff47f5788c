"""The version of apflow-server."""

__version__ = "0.1.0"
