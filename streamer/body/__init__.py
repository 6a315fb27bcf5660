"""SMPL-X body model: the built-in generated model or real files, pose parameters, skeleton."""

from .joints import JOINT_NAMES, NUM_JOINTS, PARENTS
from .model import BodyModel
from .pose import SmplxPose

__all__ = ["BodyModel", "SmplxPose", "JOINT_NAMES", "PARENTS", "NUM_JOINTS"]
