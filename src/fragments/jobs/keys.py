"""Names of every fleet key in Redis, under one prefix (`FRAGMENTS_FLEET_PREFIX`), so a test run
or a second deployment on one Redis keeps to its own keys."""

from __future__ import annotations

from dataclasses import dataclass

# The consumer group every node reads job streams in.
GROUP = "nodes"


@dataclass(frozen=True, slots=True)
class FleetKeys:
    prefix: str

    @property
    def new_sandboxes(self) -> str:
        """The shared stream of jobs any node may take (new sandboxes when none has a warm one)."""
        return f"{self.prefix}jobs:new"

    @property
    def dead_letters(self) -> str:
        """Jobs given up after too many attempts, kept for an operator to read."""
        return f"{self.prefix}jobs:dead"

    def node_jobs(self, node_id: str) -> str:
        """A node's own stream: jobs for the sandboxes it holds, and new ones routed to it."""
        return f"{self.prefix}node:{node_id}:jobs"

    def node(self, node_id: str) -> str:
        """A node's heartbeat (JSON, expires when the node stops beating)."""
        return f"{self.prefix}node:{node_id}"

    @property
    def nodes(self) -> str:
        """The ids of every node that has beaten and whose stream is not yet retired."""
        return f"{self.prefix}nodes"

    def job_events(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def job_attempts(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:attempts"

    def sandbox(self, sandbox_id: str) -> str:
        """sandbox id -> the node holding it."""
        return f"{self.prefix}sandbox:{sandbox_id}"

    def owner(self, owner: str) -> str:
        """a conversation (owner) -> its sandbox, node and template (JSON)."""
        return f"{self.prefix}owner:{owner}"
