"""Errors a user can act on. Stages print them as one clear line (no traceback) and exit non-zero."""


class PetvisionError(Exception):
    """Base of the errors whose message alone tells the user what to fix."""


class ConfigError(PetvisionError, ValueError):
    """A configuration value that cannot work; the message names the key and the value."""


class DataError(PetvisionError):
    """Input data that is missing, corrupt or of the wrong shape; the message names the file."""


class DownloadError(PetvisionError):
    """A download that failed for good (after retries) or did not verify."""


class TrackingError(PetvisionError):
    """The MLflow tracking store cannot be used; the message names the URI."""


class TrainingError(PetvisionError):
    """Training cannot go on (a NaN loss, out of memory); the message says what to change."""
