"""Real-time avatar streaming server: one photo -> animatable 3D Gaussian avatar -> live video."""

__version__ = "0.1.0"
