"""Preference data: the PreferencePair schema, readers and the trainer's data stream."""

from prefdiff.data.pickapic import ReadReport, read_pickapic
from prefdiff.data.schema import PreferencePair, open_image

__all__ = ["PreferencePair", "ReadReport", "open_image", "read_pickapic"]
