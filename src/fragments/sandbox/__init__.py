"""Sandboxes: where fragments run. A backend protocol, the local backend, and the templates."""
