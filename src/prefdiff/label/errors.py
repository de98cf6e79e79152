"""Errors of the label app. All are `PrefdiffError`s: the CLI prints one line and exits 2."""

from prefdiff.errors import PrefdiffError


class StudyError(PrefdiffError):
    """A study cannot be created or used: a manifest, pairs file or option is wrong."""


class NotFoundError(PrefdiffError):
    """A study, rater or comparison does not exist (or is not visible to the caller)."""


class ConflictError(PrefdiffError):
    """The request contradicts stored state (a different vote for an answered question)."""


class BadRequestError(PrefdiffError):
    """The request is well-formed JSON but names an invalid choice, question or assignment."""
