"""Preference data: the PreferencePair schema, readers and the trainer's data stream."""

from prefdiff.data.pickapic import read_pickapic
from prefdiff.data.readers import iter_pairs, resolve
from prefdiff.data.report import ReadReport, Reject
from prefdiff.data.schema import PreferencePair, check_image, open_image

__all__ = [
    "PreferencePair",
    "ReadReport",
    "Reject",
    "check_image",
    "iter_pairs",
    "open_image",
    "read_pickapic",
    "resolve",
]
