"""The one exception family for what a user can cause. The CLI turns these into one line."""

from __future__ import annotations


class PublisherError(Exception):
    """Base for errors caused by input or environment (bad digest, bad config, refused SMTP)."""


class ConfigError(PublisherError):
    """config.toml is missing, malformed, or has an unknown key or a wrong type."""


class DigestError(PublisherError):
    """A file is not a digest. The message names the file and the line."""

    def __init__(self, path: object, line: int, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line > 0 else self.path
        super().__init__(f"{where}: {problem}")


class BuildError(PublisherError):
    """The site could not be built for a reason outside the digests: Pagefind failed, say."""
