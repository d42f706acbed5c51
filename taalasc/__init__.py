"""taalasc: print a neural network onto a structured ASIC by drawing its top two masks."""

__version__ = "0.1.0"

__all__ = ["__version__"]
