"""mlsrv: inspect, run, serve and measure TensorFlow SavedModels; a drop-in TensorFlow Serving replacement."""

__version__ = "0.1.0"

__all__ = ["__version__"]
