"""A bench worker: serves the demo in-process and times batches of requests on demand.

Protocol (stdin/stdout, one JSON object per line): {"path", "n"} -> {"seconds", "queries"};
{"wait_connected": S} -> {"connected"}; {"flush": S} -> {"flushed"}; {"stats": true} -> the
sender's counters.
"""

from __future__ import annotations

import json
import sys
import time

import django
from django.conf import settings


def main() -> None:
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection, reset_queries
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    handler = WSGIHandler()
    factory = RequestFactory()
    probe_on = any("ProbeMiddleware" in m for m in settings.MIDDLEWARE)

    def serve(path: str) -> None:
        environ = factory.get(path).environ
        chunks = []
        response = handler(environ, lambda status, headers: chunks.append(status))
        b"".join(response)
        response.close()
        if not chunks[0].startswith("200"):
            raise RuntimeError(f"{path}: {chunks[0]}")

    for line in sys.stdin:
        command = json.loads(line)
        if "path" in command:
            reset_queries()  # DEBUG=True logs every query in a bounded deque: start empty
            with CaptureQueriesContext(connection) as ctx:
                serve(command["path"])
            start = time.perf_counter()
            for _ in range(command["n"]):
                serve(command["path"])
            answer = {"seconds": time.perf_counter() - start, "queries": len(ctx.captured_queries)}
        elif "wait_connected" in command:
            connected = True
            if probe_on:
                from djangoscope.probe import sender

                connected = sender.get_sender().connected.wait(command["wait_connected"])
            answer = {"connected": connected}
        elif "flush" in command:
            flushed = True
            if probe_on:
                from djangoscope.probe import sender

                flushed = sender.get_sender().flush(command["flush"])
            answer = {"flushed": flushed}
        elif "stats" in command:
            from djangoscope.probe import sender

            answer = dict(sender.get_sender().stats) if probe_on else {}
        else:
            answer = {"error": "unknown command"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
