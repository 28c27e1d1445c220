"""dse: design-space exploration of approximate-arithmetic DNN accelerators."""

__version__ = "0.1.0"
