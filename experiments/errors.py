"""The one exception type for a user's mistake; kept free of heavy imports so that data
preparation workers can use it without loading TensorFlow."""


class ConfigError(ValueError):
    """A mistake in an experiment file, an override or the data, described in one line that
    names the problem and the fix."""
