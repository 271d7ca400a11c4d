"""The coordinator's endpoint for its clients (Triton backends, `step3-trt run`): messages over a
ZeroMQ ROUTER socket (each client a DEALER; ZeroMQ does the framing, messages are JSON; never
pickle). Decoding and validation are the coordinator's (runtime/messages.py)."""

from __future__ import annotations

from step3_trt.runtime import messages


class Frontend:
    def __init__(self, endpoint: str):
        import zmq

        self.zmq = zmq
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = endpoint

    def poll(self, timeout_ms: int = 0) -> list[tuple[bytes, bytes]]:
        """Every message waiting (after up to `timeout_ms` for the first): (client, payload)."""
        got = []
        while self.socket.poll(0 if got else timeout_ms):
            frames = self.socket.recv_multipart(self.zmq.NOBLOCK)
            got.append((frames[0], frames[-1]))
        return got

    def send(self, client: bytes, msg) -> None:
        self.socket.send_multipart([client, messages.encode(msg)])

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()
