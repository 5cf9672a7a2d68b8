"""Fragments: chat with a model, get a running app in a sandbox."""

__version__ = "0.1.0"
