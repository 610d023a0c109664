"""The tutorial's own failure: what happened and what to do, printed as one line."""


class StepFailed(Exception):
    """A step could not complete; the message says what happened and what to do."""
