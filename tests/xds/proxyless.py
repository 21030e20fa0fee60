#!/usr/bin/env python3
"""A proxyless gRPC client (grpcio, `xds:///NAME`) and one small gRPC backend per cell, for the
xDS end-to-end test. Arguments: the cell names. It prints {"backends": {cell: port}}, then reads
one JSON command per line on stdin and answers each with one JSON line on stdout:

  {"cmd": "connect", "bootstrap": PATH, "target": "xds:///checkout"}  -> {"ok": true}
  {"cmd": "count", "n": N}      N calls in a row -> {"counts": {cell: calls}, "failed": F}
  {"cmd": "start"}              calls in a row in the background until "stop" -> {"ok": true}
  {"cmd": "stop"}               -> {"calls": [[start_unix_ms, cell], ...], "failed": F}

Each backend answers the call /cellpilot.test.Echo/Which with its cell's name.
"""

import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "cellpilot.test.Echo"
METHOD = f"/{SERVICE}/Which"


def backend(cell):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    answer = cell.encode()
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Which": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Client:
    def __init__(self, bootstrap, target):
        # Read by grpc's xDS client when the first xds:/// channel is made.
        os.environ["GRPC_XDS_BOOTSTRAP"] = bootstrap
        self.channel = grpc.insecure_channel(target)
        self.call = self.channel.unary_unary(METHOD)
        self.failed = 0

    def one(self):
        try:
            return self.call(b"", timeout=5, wait_for_ready=True).decode()
        except grpc.RpcError as e:
            self.failed += 1
            sys.stderr.write(f"call failed: {e.code()} {e.details()}\n")
            return None


def main():
    cells = sys.argv[1:]
    servers = {}
    ports = {}
    for cell in cells:
        servers[cell], ports[cell] = backend(cell)
    say({"backends": ports})
    client = None
    running = threading.Event()
    log = []
    worker = None

    def loop():
        while running.is_set():
            t = time.time() * 1000.0
            cell = client.one()
            if cell is not None:
                log.append([t, cell])

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "connect":
            client = Client(cmd["bootstrap"], cmd["target"])
            say({"ok": True})
        elif cmd["cmd"] == "count":
            client.failed = 0
            counts = {}
            for _ in range(cmd["n"]):
                cell = client.one()
                if cell is not None:
                    counts[cell] = counts.get(cell, 0) + 1
            say({"counts": counts, "failed": client.failed})
        elif cmd["cmd"] == "start":
            client.failed = 0
            log.clear()
            running.set()
            worker = threading.Thread(target=loop, name="calls")
            worker.start()
            say({"ok": True})
        elif cmd["cmd"] == "stop":
            running.clear()
            worker.join()
            say({"calls": log, "failed": client.failed})
    for s in servers.values():
        s.stop(0)


if __name__ == "__main__":
    main()
