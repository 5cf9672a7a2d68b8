"""`make bench`: prints the figures the issues ask for, measured in one run."""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "parts",
        nargs="*",
        default=[
            "overhead",
            "sandbox",
            "templates",
            "capacity",
            "cost",
            "failover",
            "observability",
            "edits",
            "fleet",
            "job_board",
        ],
        help="which benchmarks: overhead, sandbox, templates, capacity, cost, failover, "
        "observability, edits, fleet, job_board (egress, tracing: on request)",
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per figure for templates")
    parser.add_argument("--workers", type=int, default=2, help="service workers for capacity")
    parser.add_argument(
        "--templates", nargs="*", default=None, help="template ids for templates (default: all)"
    )
    parser.add_argument(
        "--streams", type=int, default=1000, help="concurrent chat streams for fleet"
    )
    parser.add_argument(
        "--sandboxes", type=int, default=100, help="concurrent new sandboxes for fleet"
    )
    args = parser.parse_args()
    from bench import chat_stream
    from fragments.observability.logs import configure_logging

    configure_logging(logging.WARNING)  # the figures, not the sandboxes' info logs

    if "overhead" in args.parts:
        chat_stream.overhead()
    if "sandbox" in args.parts:
        from bench import sandbox_runs

        sandbox_runs.cold_vs_warm()
    if "templates" in args.parts:
        from bench import sandbox_templates

        sandbox_templates.run(args.templates, runs=args.runs)
    if "capacity" in args.parts:
        chat_stream.capacity(args.workers)
    if "cost" in args.parts:
        from bench import cost

        cost.run()
    if "failover" in args.parts:
        from bench import failover

        failover.run()
    if "observability" in args.parts:
        from bench import observability

        observability.run()
    if "edits" in args.parts:
        from bench import edits

        edits.run()
    if "tracing" in args.parts:
        from bench import tracing

        tracing.tracing()
    if "fleet" in args.parts:
        from bench import fleet, fleet_chat

        fleet_chat.run(args.streams)
        fleet.run(new=args.sandboxes)
    if "job_board" in args.parts:
        import asyncio

        from bench import job_board

        asyncio.run(job_board.main())
    if "egress" in args.parts:
        from bench import egress

        egress.run()


if __name__ == "__main__":
    main()
