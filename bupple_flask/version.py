"""The installed package's version (``0.0.0`` in a checkout that was never installed)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bupple-flask")
except PackageNotFoundError:
    __version__ = "0.0.0"
