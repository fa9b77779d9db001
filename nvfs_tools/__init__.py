"""nvfs-tools: offline tools for the NVFS persistent-memory filesystem."""

__version__ = "0.1.0"
