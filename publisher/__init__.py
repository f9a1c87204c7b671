"""publisher: daily research digests to RSS/Atom feeds, a web archive and an SMTP newsletter."""

__version__ = "0.1.0"
