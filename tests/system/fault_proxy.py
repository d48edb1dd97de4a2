"""An HTTP proxy that injects the faults a bucket's network has, on purpose and at a chosen
request: the tests put it between the commands and the S3 and GCS servers (AWS_ENDPOINT_URL,
STORAGE_EMULATOR_HOST), so that a fault hits what they name, when they name it, instead of
whenever a stopped server happens to close its connections.

A Fault matches requests by a regular expression over "METHOD /path?query" and hits the
`nth` matching request and the `times - 1` after it (times=None: every one from the nth on):
- "reset": the connection is reset before the request reaches the server;
- "lost_reply": the server carries out the request, then the client's connection is reset
  (the client cannot know that it succeeded);
- "503": the server is not asked; the client gets 503 Service Unavailable;
- "stall": the request waits `stall_s` seconds, then goes on;
- "cut": the server gets the request's head and half of its body, then the connection
  closes (an upload cut short); the client's connection is reset.
"""

import dataclasses
import http.client
import http.server
import re
import socket
import struct
import threading
import time

KINDS = ("reset", "lost_reply", "503", "stall", "cut")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade"}


@dataclasses.dataclass
class Fault:
  kind: str
  pattern: str
  nth: int = 1
  times: int | None = 1
  stall_s: float = 3.0
  matched: int = 0  # requests that matched so far
  hits: list = dataclasses.field(default_factory=list)  # the requests it hit

  def __post_init__(self):
    assert self.kind in KINDS, self.kind

  def hits_request(self, line: str) -> bool:
    if not re.search(self.pattern, line):
      return False
    self.matched += 1
    last = None if self.times is None else self.nth + self.times - 1
    hit = self.matched >= self.nth and (last is None or self.matched <= last)
    if hit:
      self.hits.append(line)
    return hit


class FaultProxy:
  """A threaded HTTP/1.1 proxy to one upstream server on 127.0.0.1."""

  def __init__(self, upstream_port: int):
    self.upstream_port = upstream_port
    self.faults: list[Fault] = []
    self.requests: list[str] = []  # every request line seen, in order
    self._lock = threading.Lock()
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):
        pass

      def _relay(self):
        proxy._relay(self)

      do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _relay

    class Server(http.server.ThreadingHTTPServer):
      daemon_threads = True

      def handle_error(self, request, client_address):
        pass  # a client that gives up on a connection (after a fault: expected)

    self.server = Server(("127.0.0.1", 0), Handler)
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  @property
  def port(self) -> int:
    return self.server.server_address[1]

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.port}"

  def inject(self, *faults: Fault) -> None:
    with self._lock:
      self.faults = list(faults)

  def clear(self) -> None:
    self.inject()

  def close(self) -> None:
    self.server.shutdown()
    self.server.server_close()

  def _fault_for(self, line: str) -> Fault | None:
    with self._lock:
      self.requests.append(line)
      for fault in self.faults:
        if fault.hits_request(line):
          return fault
    return None

  def _relay(self, handler) -> None:
    line = f"{handler.command} {handler.path}"
    body = _read_body(handler)
    fault = self._fault_for(line)
    if fault and fault.kind == "reset":
      return _reset(handler)
    if fault and fault.kind == "503":
      message = b'{"error": {"code": 503, "message": "injected by the fault proxy"}}'
      handler.send_response(503)
      handler.send_header("Content-Type", "application/json")
      handler.send_header("Content-Length", str(len(message)))
      handler.end_headers()
      handler.wfile.write(message)
      return
    if fault and fault.kind == "stall":
      time.sleep(fault.stall_s)
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
    if body is not None:
      headers["Content-Length"] = str(len(body))
    if fault and fault.kind == "cut":
      _send_cut(self.upstream_port, handler.command, handler.path, headers, body or b"")
      return _reset(handler)
    upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
    try:
      upstream.request(handler.command, handler.path, body=body, headers=headers)
      reply = upstream.getresponse()
      content = reply.read()
    finally:
      upstream.close()
    if fault and fault.kind == "lost_reply":
      return _reset(handler)
    handler.send_response(reply.status, reply.reason)
    for key, value in reply.getheaders():
      # A HEAD reply keeps the server's Content-Length: the size of what GET would send.
      if key.lower() not in _HOP_BY_HOP and (key.lower() != "content-length" or
                                             handler.command == "HEAD"):
        handler.send_header(key, value)
    if handler.command != "HEAD":
      handler.send_header("Content-Length", str(len(content)))
    handler.end_headers()
    if handler.command != "HEAD":
      handler.wfile.write(content)


def _read_body(handler) -> bytes | None:
  if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
    parts = []
    while True:
      size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
      if size == 0:
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
          pass  # trailers
        return b"".join(parts)
      parts.append(handler.rfile.read(size))
      handler.rfile.readline()
  length = handler.headers.get("Content-Length")
  return handler.rfile.read(int(length)) if length is not None else None


def _reset(handler) -> None:
  """Closes the client's connection with a TCP reset (SO_LINGER 0), not a clean close."""
  handler.close_connection = True
  connection = handler.connection
  connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
  handler.wfile.flush = lambda: None  # nothing more goes out on this connection
  connection.close()


def _send_cut(port: int, method: str, path: str, headers: dict, body: bytes) -> None:
  """The request's head and half its body to the server, then the connection closed."""
  head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
  head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
  with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:len(body) // 2])
    time.sleep(0.2)
