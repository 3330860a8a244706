"""The one error a build raises on purpose (the CLI turns it into its message and exit 2)."""


class BuildError(RuntimeError):
    """A build that cannot start or finish (busy folder, foreign folder); the message says why."""
