"""`thunderhelm worker --no-supervise`: the Faust worker in this process.

Kept apart from the command definitions so that `thunderhelm worker` (the
supervisor) never imports Faust: only the supervised child runs this.
"""

from __future__ import annotations

import asyncio
import gc
import sys

from thunderhelm.streams.config.settings import Settings

SWITCH_INTERVAL_S = 0.001


def run_worker(settings: Settings) -> int:
    import faulthandler

    import faust

    # A crash in native code (the kernel, an interpreter) leaves every
    # thread's stack in the worker's log instead of nothing.
    faulthandler.enable(all_threads=True)
    # The main interpreter's GIL passes between the event loop and the
    # threads that wait on the pool every 1 ms instead of 5, so a burst of
    # bookkeeping in those threads holds a command up for less time. (bench
    # stream's accept p99 moved within its run-to-run noise; see RESULTS.md.)
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    from thunderhelm.streams.observability import logs, telemetry
    from thunderhelm.streams.worker.app import create_app
    from thunderhelm.streams.worker.kafka.topics import ensure_topics

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    created = loop.run_until_complete(ensure_topics(settings, timeout_s=60.0))
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    telemetry.configure(settings)
    app, service = create_app(settings)
    # What is alive now (every imported module, the app) lives as long as the
    # worker: out of the collector's sight, a full collection walks only what
    # runs made, and no longer stalls the event loop for ~90 ms at a time.
    gc.freeze()
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel="INFO",
        redirect_stdouts=False,
        logging_config=logs.worker_logging_config(settings.log_format),
    )
    try:
        worker.execute_from_commandline()
    finally:
        service.stop()
        telemetry.shutdown()
    return 0
