"""The local sandbox backend: confined processes on this machine."""
