"""Gaussian avatars: the Gaussians type, the animatable Avatar, .ply I/O, linear blend skinning."""

from .avatar import Avatar
from .gaussians import Gaussians

__all__ = ["Avatar", "Gaussians"]
