"""User-facing errors: the CLI prints these as one line (no traceback) and exits with status 2."""


class PathVQAError(Exception):
    """A mistake the user can fix (bad config, missing file, unreachable model id)."""


class ConfigError(PathVQAError):
    """One or more config problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with where it stopped and how to go on (the CLI prints it and exits 130)."""


class DataError(PathVQAError):
    """A dataset source that cannot be found or read."""


class ModelLoadError(PathVQAError):
    """A model id or folder that cannot be loaded (offline, misspelt, missing files)."""


def require_checkpoint_folder(path) -> None:
    """A ``--checkpoint`` argument that cannot be one (missing, or a file): said before torch loads."""
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        raise PathVQAError(f"{path} is a file: give a run folder or a checkpoints/step-N folder")
    if not path.is_dir():
        raise PathVQAError(f"checkpoint not found: {path}")
