"""alto: the Altostratus command-line client. It speaks only the REST API (DESIGN.md §6) and shares the entry
format's rules with the server through ``alto_metadata``."""

__version__ = "0.1.0"
