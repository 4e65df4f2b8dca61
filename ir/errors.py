"""The few exception types a user can meet; the CLI turns each into one line."""


class SramflowError(Exception):
    """Base of every error caused by user input rather than by a bug."""


class ConfigError(SramflowError):
    """A model config or target file is missing, malformed, or unsupported."""


class ParseError(SramflowError):
    """A text form (graph IR, assembly) does not parse; names file, line and column."""


class VerifyError(SramflowError):
    """An IR value breaks a type, shape or ordering rule; names the op."""


class DoesNotFitError(SramflowError):
    """The model cannot be placed on the chips allowed; says how many would do."""

    def __init__(self, message: str, chips_needed: int | None = None):
        super().__init__(message)
        self.chips_needed = chips_needed


class HazardError(SramflowError):
    """A Program breaks a timing rule; names chip, unit, instruction and cycle."""


class ExecutionError(SramflowError):
    """A Program fails when executed on data (functional mode) or disagrees with the reference;
    names chip, unit, queue index and cycle, or the step, sequence and position. Exit status 2,
    like a hazard: the build is wrong, not the command line."""
