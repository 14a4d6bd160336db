"""The one base of every error a user can fix: `glus` prints it as `glus: error: <message>` and exits 2.

A GlusError's message is the whole report (the file or field that is wrong and the fix), so the command line
shows no traceback for it; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class GlusError(Exception):
    """A problem in the user's input (a missing path, a bad file, a wrong option), named with its fix."""


class MissingInputs(GlusError, FileNotFoundError):
    """Files a command needs are not there: the message lists each one and how to get it."""
