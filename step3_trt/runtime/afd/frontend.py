"""The serving coordinator's endpoint: JSON messages to and from Triton backends over a ZeroMQ
ROUTER socket (each client a DEALER; ZeroMQ does the framing, we never pickle)."""

from __future__ import annotations

import json


class Frontend:
    def __init__(self, endpoint: str):
        import zmq

        self.zmq = zmq
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = endpoint

    def poll(self, timeout_ms: int = 0) -> list[tuple[bytes, dict]]:
        """Every message waiting (after up to `timeout_ms` for the first): (client, message).
        A frame that is not a JSON object is answered with an error and dropped."""
        got = []
        while self.socket.poll(0 if got else timeout_ms):
            frames = self.socket.recv_multipart(self.zmq.NOBLOCK)
            client, payload = frames[0], frames[-1]
            try:
                msg = json.loads(payload)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                self.send(client, {"type": "error", "error": "messages must be JSON objects"})
                continue
            got.append((client, msg))
        return got

    def send(self, client: bytes, msg: dict) -> None:
        self.socket.send_multipart([client, json.dumps(msg).encode()])

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()
