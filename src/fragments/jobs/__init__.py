"""The fleet: API processes send sandbox work as jobs over Redis Streams to `fragments node`
processes (`queue.py`), which report each job's progress on a per-job event stream
(`events.py`); a registry in Redis (`registry.py`) knows the live nodes, which node holds which
sandbox and which sandbox is a conversation's. `fleet.py` is the API side (a SandboxService),
`worker.py` and `node.py` the node side. Without the fleet (`FRAGMENTS_EMBEDDED_NODE=true`, the
default) none of this runs: sandboxes live in the app process."""
