"""plauder: a self-hostable, end-to-end encrypted instant messenger."""

from plauder.errors import PlauderError

__all__ = ["PlauderError", "__version__"]
__version__ = "0.1.0"
