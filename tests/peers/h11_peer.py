#!/usr/bin/env python3
"""An independent strict HTTP/1.1 peer for conntest's server.

Usage: h11_peer.py HOST:PORT SCENARIO [SCENARIO...]

Drives a running `conntest server` over raw sockets with h11 (a strict,
pure-Python HTTP/1.1 state machine written by others) as the client side,
so every byte of every answer is checked against HTTP/1.1's framing: a
malformed head, a bad chunk, a body longer or shorter than announced, or
bytes after an answer that no request asked for fail the run. Group bodies
must be exactly one JSON document holding every recorded run.

Exits 0 when every scenario passed, 1 with a message naming the scenario,
the request and the bytes at fault otherwise, 2 on a usage or setup error
(h11 missing). Every socket operation has a timeout and the whole run is
bounded by an alarm.
"""

import json
import signal
import socket
import sys
import time
import uuid

try:
    import h11
except ImportError as why:  # pragma: no cover - the point is to say so loudly
    sys.stderr.write(
        f"h11_peer.py: cannot import h11 ({why}); install it with "
        "`python3 -m pip install h11` (scripts/test.sh does)\n"
    )
    sys.exit(2)

# One socket operation (connect, send, a read) may take this long.
IO_TIMEOUT = 10.0
# The whole run may take this long.
RUN_LIMIT = 150
# How long a finished connection is watched for stray bytes.
QUIET_WAIT = 0.3


class Failure(Exception):
    """A conformance failure: the message says what and where."""


def show(data, limit=200):
    """Bytes for a message: their repr, the middle elided when long."""
    if len(data) <= limit:
        return repr(bytes(data))
    half = limit // 2
    return f"{bytes(data[:half])!r} ... ({len(data)} bytes) ... {bytes(data[-half:])!r}"


class Response:
    def __init__(self, what, head, informational, body):
        self.what = what
        self.status = head.status_code
        self.headers = [(k.decode().lower(), v.decode()) for k, v in head.headers]
        self.http_version = head.http_version.decode()
        self.informational = informational
        self.body = bytes(body)

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def expect(self, status):
        if self.status != status:
            raise Failure(
                f"{self.what}: status {self.status}, expected {status}; body {show(self.body)}"
            )
        return self

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as why:
            raise Failure(
                f"{self.what}: the body is not one valid JSON document ({why}); "
                f"body {show(self.body)}"
            ) from None

    def expect_error(self, status):
        """An error answer: the status and a JSON body {"error": "..."}."""
        self.expect(status)
        body = self.json()
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            raise Failure(f'{self.what}: {status} without {{"error": "..."}}: {show(self.body)}')
        return body["error"]


class Peer:
    """One client connection with h11 as its state machine.

    `rcvbuf` sets SO_RCVBUF before connecting; `read_size` and `pause` make
    a slow reader (that many bytes per read, a sleep after each).
    """

    def __init__(self, addr, label, rcvbuf=None, read_size=65536, pause=0.0):
        self.label = label
        self.read_size = read_size
        self.pause = pause
        self.h = h11.Connection(h11.CLIENT)
        self.received = bytearray()  # the last bytes received, for messages
        self.answer_start = bytearray()  # the first bytes of the answer being read
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(addr)
        self.host = f"{addr[0]}:{addr[1]}"

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fail(self, what, why):
        raise Failure(
            f"{self.label}: {what}: {why}; last bytes received {show(self.received[-120:], 120)}"
        )

    def recv(self, what):
        try:
            data = self.sock.recv(self.read_size)
        except socket.timeout:
            self.fail(what, f"no answer within {IO_TIMEOUT} s")
        except ConnectionResetError:
            data = b""  # reset: closed, as h11 sees it
        if self.pause:
            time.sleep(self.pause)
        self.received += data
        del self.received[:-4096]
        if len(self.answer_start) < 200:
            self.answer_start += data[:200 - len(self.answer_start)]
        return data

    # -- requests --------------------------------------------------------

    def event_bytes(self, machine, method, target, headers, body, chunks):
        """A request's bytes as `machine` (an h11 client) writes them."""
        headers = [("Host", self.host)] + list(headers)
        if chunks is not None:
            headers.append(("Transfer-Encoding", "chunked"))
        elif body is not None:
            headers.append(("Content-Length", str(len(body))))
        out = machine.send(h11.Request(method=method, target=target, headers=headers))
        for piece in chunks if chunks is not None else ([body] if body else []):
            out += machine.send(h11.Data(data=piece))
        out += machine.send(h11.EndOfMessage())
        return out

    def request(self, method, target, headers=(), body=None, chunks=None, what=None):
        """Sends one request (h11 writes it) and reads its answer."""
        what = what or f"{method} {target}"
        self.sock.sendall(self.event_bytes(self.h, method, target, headers, body, chunks))
        return self.read_response(what)

    def pipeline(self, requests):
        """Writes every request (method, target, headers, body) in one go,
        then reads the answers in order."""
        data = b"".join(
            self.event_bytes(h11.Connection(h11.CLIENT), m, t, hs, b, None)
            for m, t, hs, b in requests
        )
        self.sock.sendall(data)
        answers = []
        for m, t, hs, b in requests:
            # Our machine learns of each request only now (its bytes are
            # the ones already written).
            self.event_bytes(self.h, m, t, hs, b, None)
            answers.append(self.read_response(f"pipelined {m} {t} (#{len(answers) + 1})"))
        return answers

    def raw_request(self, data, as_event, what, complete=True):
        """Writes `data` as it is (HTTP/1.0, malformed, partial); h11 is
        told of `as_event`, the request it stands for, to read the answer."""
        self.sock.sendall(data)
        self.h.send(as_event)
        if complete:
            self.h.send(h11.EndOfMessage())
        return self.read_response(what)

    # -- answers ---------------------------------------------------------

    def next_event(self, what):
        while True:
            try:
                event = self.h.next_event()
            except h11.RemoteProtocolError as why:
                self.fail(what, f"h11 RemoteProtocolError: {why}; the answer began {show(self.answer_start)}")
            if event is not h11.NEED_DATA:
                return event
            data = self.recv(what)
            self.h.receive_data(data)

    def read_response(self, what):
        self.answer_start = bytearray(self.h.trailing_data[0][:200])
        informational = []
        while True:
            event = self.next_event(what)
            if isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
                break
            elif isinstance(event, h11.ConnectionClosed):
                self.fail(what, "the server closed the connection without an answer")
            else:
                self.fail(what, f"unexpected event {event!r}")
        body = bytearray()
        while True:
            event = self.next_event(what)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                self.fail(what, f"unexpected event {event!r} in the body")
        response = Response(f"{self.label}: {what}", head, informational, body)
        if self.h.our_state is h11.DONE and self.h.their_state is h11.DONE:
            self.h.start_next_cycle()
        return response

    def wait_100_continue(self, what):
        event = self.next_event(what)
        if not (isinstance(event, h11.InformationalResponse) and event.status_code == 100):
            self.fail(what, f"expected 100 Continue before the body, got {event!r}")

    def expect_quiet(self, what):
        """Nothing further arrives on this keep-alive connection (no stray
        bytes after the last answer), and it stays open."""
        left, closed = self.h.trailing_data
        if left:
            self.fail(what, f"stray bytes after the last answer: {show(left)}")
        if closed:
            self.fail(what, "the server closed a keep-alive connection")
        self.sock.settimeout(QUIET_WAIT)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            data = None
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if data == b"":
            self.fail(what, "the server closed a keep-alive connection")
        if data:
            self.fail(what, f"stray bytes after the last answer: {show(data)}")

    def expect_close(self, what):
        """The server closes the connection, sending nothing more."""
        left, _ = self.h.trailing_data
        data = bytearray(left)
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            try:
                piece = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                piece = b""
            if not piece:
                if data:
                    self.fail(what, f"stray bytes after the last answer: {show(data)}")
                return
            data += piece
        self.fail(what, f"not closed within {IO_TIMEOUT} s; then got {show(data)}")


# -- helpers for the scenarios ---------------------------------------------


def create_group(peer, config, what="create group"):
    group = peer.request("POST", "/test-groups/create", body=json.dumps(config).encode(),
                         headers=[("Content-Type", "application/json")], what=what).expect(200).json()
    return group["run_group_id"]


def record_runs(peer, group_id, bodies, first=1):
    for n, body in enumerate(bodies, start=first):
        reply = peer.request("POST", f"/test-groups/{group_id}/{n}", body=body,
                             what=f"record run {n}").expect(200)
        if reply.body:
            raise Failure(f"{reply.what}: expected an empty body, got {show(reply.body)}")


def check_group(reply, group_id, bodies):
    """The group answer is valid JSON holding exactly `bodies` in order."""
    reply.expect(200)
    group = reply.json()
    if group.get("run_group_id") != group_id:
        raise Failure(f"{reply.what}: run_group_id {group.get('run_group_id')!r}, expected {group_id}")
    runs = group.get("test_runs")
    if not isinstance(runs, list) or len(runs) != len(bodies):
        got = len(runs) if isinstance(runs, list) else runs
        raise Failure(f"{reply.what}: {got} runs, expected {len(bodies)}")
    for i, (run, body) in enumerate(zip(runs, bodies), start=1):
        if run.get("run_count") != i or run.get("data") != body.decode():
            raise Failure(f"{reply.what}: run {i} is {json.dumps(run)[:300]}, expected data {show(body)}")


class Groups:
    """Big groups of recorded runs: 975 and 1000 runs with a fresh UUID per
    run (the default bodies), 512 runs of a 3000-byte `data`."""

    def __init__(self, addr, sizes=((975, 0), (1000, 0), (512, 3000))):
        self.bodies = {}
        with Peer(addr, "recording big groups") as peer:
            for runs, data_size in sizes:
                config = {"run_count": runs, "concurrency": 1}
                if data_size:
                    data = ("d" * (data_size - 8) + uuid.uuid4().hex[:8]).encode()
                    config["data"] = data.decode()
                    bodies = [data] * runs
                else:
                    bodies = [str(uuid.uuid4()).encode() for _ in range(runs)]
                group_id = create_group(peer, config, f"create a {runs}-run group")
                record_runs(peer, group_id, bodies)
                self.bodies[group_id] = bodies
            peer.expect_quiet("after recording")

    def describe(self, group_id):
        bodies = self.bodies[group_id]
        return f"{len(bodies)}-run group of {len(bodies[0])}-byte bodies"


def http10(method, target, host, headers=(), body=b""):
    """An HTTP/1.0 request's bytes (h11 only writes HTTP/1.1) and the
    HTTP/1.1 request h11 is told it stands for."""
    lines = [f"{method} {target} HTTP/1.0", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    fake = [("Host", host)] + list(headers)
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
        fake.append(("Content-Length", str(len(body))))
    if not any(k.lower() == "connection" for k, _ in headers):
        fake.append(("Connection", "close"))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return data, h11.Request(method=method, target=target, headers=fake)


def http10_request(peer, method, target, headers=(), body=b"", what=None):
    data, event = http10(method, target, peer.host, headers, body)
    what = what or f"HTTP/1.0 {method} {target}"
    if body:
        # h11 must count the body it is told of.
        peer.sock.sendall(data)
        peer.h.send(event)
        peer.h.send(h11.Data(data=body))
        peer.h.send(h11.EndOfMessage())
        reply = peer.read_response(what)
    else:
        reply = peer.raw_request(data, event, what)
    if reply.header("transfer-encoding") is not None:
        raise Failure(f"{reply.what}: Transfer-Encoding in an answer to HTTP/1.0")
    return reply


# -- scenarios ---------------------------------------------------------------


def scenario_keep_alive(addr):
    """Many requests of every route on one keep-alive connection."""
    with Peer(addr, "keep-alive") as peer:
        for i in range(50):
            peer.request("GET", "/healthz", what=f"healthz #{i + 1}").expect(200)
        group_id = create_group(peer, {"run_count": 40, "concurrency": 1})
        bodies = [f"body {i} {uuid.uuid4()}".encode() for i in range(40)]
        for i in range(0, 40, 10):
            record_runs(peer, group_id, bodies[i:i + 10], first=i + 1)
            check_group(peer.request("GET", f"/test-groups/{group_id}"), group_id, bodies[:i + 10])
        listing = peer.request("GET", "/test-groups").expect(200).json()
        if group_id not in json.dumps(listing):
            raise Failure(f"keep-alive: GET /test-groups does not list {group_id}")
        peer.request("GET", "/test-groups/00000000-0000-4000-8000-000000000000").expect_error(404)
        peer.request("DELETE", f"/test-groups/{group_id}").expect(200)
        peer.request("GET", f"/test-groups/{group_id}", what="GET after DELETE").expect_error(404)
        peer.request("GET", "/healthz", what="healthz at the end").expect(200)
        peer.expect_quiet("after 120 requests")


def get_groups_back_to_back(peer, groups):
    """Every group twice on one keep-alive connection, checking after each
    answer that nothing follows it."""
    for round_ in (1, 2):
        for group_id in groups.bodies:
            what = f"GET the {groups.describe(group_id)} (round {round_})"
            check_group(peer.request("GET", f"/test-groups/{group_id}", what=what),
                        group_id, groups.bodies[group_id])
            peer.expect_quiet(what)
    peer.request("GET", "/healthz", what="healthz after the big groups").expect(200)
    peer.expect_quiet("after the big groups")


def get_groups_http10(addr, groups, label, **peer_options):
    """Each group over HTTP/1.0: the body is delimited by the close."""
    for group_id in groups.bodies:
        with Peer(addr, label, **peer_options) as peer:
            what = f"HTTP/1.0 GET the {groups.describe(group_id)}"
            check_group(http10_request(peer, "GET", f"/test-groups/{group_id}", what=what),
                        group_id, groups.bodies[group_id])
            peer.expect_close(what)


def scenario_big_groups(addr):
    """Big streamed groups back to back on one keep-alive connection."""
    groups = Groups(addr)
    with Peer(addr, "big groups on one keep-alive connection") as peer:
        get_groups_back_to_back(peer, groups)


def scenario_big_groups_http10(addr):
    """Big streamed groups over HTTP/1.0."""
    get_groups_http10(addr, Groups(addr), "big group over HTTP/1.0")


def scenario_http10(addr):
    """HTTP/1.0: close after each answer unless keep-alive is asked for."""
    with Peer(addr, "HTTP/1.0") as peer:
        http10_request(peer, "GET", "/healthz").expect(200)
        peer.expect_close("HTTP/1.0 GET /healthz")
    with Peer(addr, "HTTP/1.0") as peer:
        group_id = create_group(peer, {"run_count": 3})
    with Peer(addr, "HTTP/1.0") as peer:
        reply = http10_request(peer, "POST", f"/test-groups/{group_id}/1", body=b"one-oh")
        reply.expect(200)
        peer.expect_close("HTTP/1.0 POST a run")
    with Peer(addr, "HTTP/1.0 keep-alive") as peer:
        keep = [("Connection", "keep-alive")]
        for i in range(3):
            reply = http10_request(peer, "GET", "/healthz", headers=keep, what=f"healthz #{i + 1}")
            reply.expect(200)
        http10_request(peer, "POST", f"/test-groups/{group_id}/2", headers=keep,
                       body=b"kept").expect(200)
        peer.expect_quiet("HTTP/1.0 keep-alive")
    with Peer(addr, "HTTP/1.0") as peer:
        reply = http10_request(peer, "GET", f"/test-groups/{group_id}", what="HTTP/1.0 GET the group")
        check_group(reply, group_id, [b"one-oh", b"kept"])
        peer.expect_close("HTTP/1.0 GET the group")
    with Peer(addr, "HTTP/1.0") as peer:
        http10_request(peer, "GET", "/nowhere").expect_error(404)
        peer.expect_close("HTTP/1.0 404")


def scenario_pipelining(addr):
    """Several requests written in one go before any answer is read."""
    with Peer(addr, "pipelining setup") as peer:
        group_id = create_group(peer, {"run_count": 20})
    bodies = [f"piped {i}".encode() for i in range(1, 21)]
    with Peer(addr, "pipelining") as peer:
        requests = [("GET", "/healthz", (), None)]
        requests += [("POST", f"/test-groups/{group_id}/{i}", (), b) for i, b in enumerate(bodies, 1)]
        requests += [("GET", f"/test-groups/{group_id}", (), None), ("GET", "/test-groups", (), None),
                     ("GET", "/no/such/route", (), None), ("GET", "/healthz", (), None)]
        answers = peer.pipeline(requests)
        for reply in answers[:21]:
            reply.expect(200)
        check_group(answers[21], group_id, bodies)
        answers[22].expect(200).json()
        answers[23].expect_error(404)
        answers[24].expect(200)
        peer.expect_quiet("after 25 pipelined requests")
    groups = Groups(addr, sizes=((1000, 0), (512, 3000)))
    with Peer(addr, "pipelined big groups") as peer:
        ids = list(groups.bodies)
        answers = peer.pipeline([("GET", f"/test-groups/{g}", (), None) for g in ids + ids])
        for reply, group_id in zip(answers, ids + ids):
            check_group(reply, group_id, groups.bodies[group_id])
        peer.expect_quiet("after pipelined big groups")


def scenario_expect_continue(addr):
    """Expect: 100-continue: a 100 before the body, then the answer."""
    with Peer(addr, "Expect: 100-continue") as peer:
        group_id = create_group(peer, {"run_count": 2})
        for n, body in ((1, b"after a 100"), (2, b"x" * 20000)):
            what = f"POST run {n} with Expect: 100-continue"
            headers = [("Host", peer.host), ("Content-Length", str(len(body))),
                       ("Expect", "100-continue")]
            peer.sock.sendall(peer.h.send(h11.Request(method="POST", target=f"/test-groups/{group_id}/{n}",
                                                      headers=headers)))
            peer.wait_100_continue(what)
            peer.sock.sendall(peer.h.send(h11.Data(data=body)) + peer.h.send(h11.EndOfMessage()))
            peer.read_response(what).expect(200)
        check_group(peer.request("GET", f"/test-groups/{group_id}"), group_id,
                    [b"after a 100", b"x" * 20000])
        peer.expect_quiet("after Expect: 100-continue")


def scenario_chunked_upload(addr):
    """Chunked request bodies, for a run and for a group's creation."""
    with Peer(addr, "chunked upload") as peer:
        config = json.dumps({"run_count": 3, "description": "chunked"}).encode()
        reply = peer.request("POST", "/test-groups/create", chunks=[config[:5], config[5:]],
                             what="create a group with a chunked body").expect(200)
        group_id = reply.json()["run_group_id"]
        pieces = [[b"a"], [b"chunk", b"ed ", b"body"], [b"z" * 10000, b"y" * 7, b"x" * 70000]]
        for n, chunks in enumerate(pieces, start=1):
            peer.request("POST", f"/test-groups/{group_id}/{n}", chunks=chunks,
                         what=f"POST run {n} in {len(chunks)} chunks").expect(200)
        check_group(peer.request("GET", f"/test-groups/{group_id}"), group_id,
                    [b"".join(c) for c in pieces])
        peer.expect_quiet("after chunked uploads")


def scenario_head(addr):
    """HEAD: a head and no body, on a connection that goes on."""
    with Peer(addr, "HEAD") as peer:
        group_id = create_group(peer, {"run_count": 2})
        record_runs(peer, group_id, [b"one", b"two"])
        for target in ("/healthz", f"/test-groups/{group_id}", "/test-groups"):
            reply = peer.request("HEAD", target, what=f"HEAD {target}").expect(200)
            if reply.body:
                raise Failure(f"{reply.what}: a body in the answer to HEAD: {show(reply.body)}")
            check = peer.request("GET", target, what=f"GET {target} after HEAD").expect(200)
            check.json()
        peer.request("HEAD", "/nowhere").expect(404)
        peer.request("GET", "/healthz", what="GET after HEAD 404").expect(200)
        peer.expect_quiet("after HEAD")


# A slow reader: a 4 KiB receive buffer set before connecting, 4 KiB per
# read, a short sleep after each.
SLOW = {"rcvbuf": 4096, "read_size": 4096, "pause": 0.001}


def scenario_slow_reader(addr):
    """Big streamed groups read slowly on one keep-alive connection."""
    groups = Groups(addr, sizes=((512, 3000), (1000, 0)))
    with Peer(addr, "slow reader, HTTP/1.1 keep-alive", **SLOW) as peer:
        get_groups_back_to_back(peer, groups)


def scenario_slow_reader_http10(addr):
    """Big streamed groups read slowly over HTTP/1.0."""
    groups = Groups(addr, sizes=((512, 3000), (1000, 0)))
    get_groups_http10(addr, groups, "slow reader, HTTP/1.0", **SLOW)


def scenario_errors(addr):
    """Errors, each well framed: 400, 404, 405 on a connection that goes
    on; 400 for a malformed request, 408, 413 and 431 then a close. Needs a
    server with --request-timeout 1s --max-body 4096."""
    with Peer(addr, "errors on a kept connection") as peer:
        peer.request("POST", "/test-groups/create", body=b"{not json", what="bad JSON").expect_error(400)
        peer.request("POST", "/test-groups/create", body=b'{"run_cout": 1}',
                     what="unknown field").expect_error(400)
        peer.request("POST", "/test-groups/create", body=b'{"run_count": -1}',
                     what="negative run_count").expect_error(400)
        peer.request("GET", "/nowhere").expect_error(404)
        peer.request("GET", f"/test-groups/{uuid.uuid4()}").expect_error(404)
        reply = peer.request("GET", "/test-groups/create")
        reply.expect_error(405)
        if not reply.header("allow"):
            raise Failure(f"{reply.what}: 405 without Allow")
        peer.request("PUT", "/healthz", body=b"").expect_error(405)
        group_id = create_group(peer, {"run_count": 1})
        peer.request("POST", f"/test-groups/{group_id}/1", body=b"ok").expect(200)
        peer.request("GET", "/healthz", what="healthz after the errors").expect(200)
        peer.expect_quiet("after 400, 404 and 405")

    def closing(label, data, event, complete, status):
        with Peer(addr, label) as peer:
            reply = peer.raw_request(data, event, label, complete=complete)
            reply.expect_error(status)
            peer.expect_close(label)

    get = h11.Request(method="GET", target="/healthz", headers=[("Host", "x")])
    closing("400 for a malformed request line", b"GET /healthz HTTP/9\r\nHost: x\r\n\r\n",
            get, True, 400)
    closing("400 for a bad header line", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", get, True, 400)
    closing("408 for a head that stops half way", b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            get, False, 408)
    post = h11.Request(method="POST", target=f"/test-groups/{group_id}/2",
                       headers=[("Host", "x"), ("Content-Length", "100")])
    closing("408 for a body that stops short",
            f"POST /test-groups/{group_id}/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".encode(),
            post, False, 408)
    big = h11.Request(method="POST", target=f"/test-groups/{group_id}/2",
                      headers=[("Host", "x"), ("Content-Length", "5000")])
    closing("413 for a Content-Length over --max-body",
            f"POST /test-groups/{group_id}/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode(),
            big, False, 413)
    with Peer(addr, "413 with Expect: 100-continue") as peer:
        headers = [("Host", peer.host), ("Content-Length", "5000"), ("Expect", "100-continue")]
        peer.sock.sendall(peer.h.send(h11.Request(method="POST", target=f"/test-groups/{group_id}/2",
                                                  headers=headers)))
        reply = peer.read_response("413 with Expect: 100-continue")
        if reply.informational:
            raise Failure(f"{reply.what}: {reply.informational} before the 413: the body was invited")
        reply.expect_error(413)
        peer.expect_close(reply.what)
    chunked = h11.Request(method="POST", target=f"/test-groups/{group_id}/2",
                          headers=[("Host", "x"), ("Transfer-Encoding", "chunked")])
    head = f"POST /test-groups/{group_id}/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"400\r\n" + b"c" * 1024 + b"\r\n" for _ in range(5))
    closing("413 for a chunked body over --max-body", head.encode() + body, chunked, False, 413)
    many = "".join(f"X-H{i}: v\r\n" for i in range(100))
    closing("431 for 100 headers", f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode(),
            get, True, 431)
    closing("431 for a 20 KiB header",
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 20000}\r\n\r\n".encode(), get, True, 431)
    with Peer(addr, "after the errors") as peer:
        group = peer.request("GET", f"/test-groups/{group_id}").expect(200).json()
        if [r.get("data") for r in group["test_runs"]] != ["ok"]:
            raise Failure(f"after the errors: a refused request was recorded: {json.dumps(group)[:500]}")
        peer.expect_quiet("after the errors")


SCENARIOS = {
    "keep-alive": scenario_keep_alive,
    "big-groups": scenario_big_groups,
    "big-groups-http10": scenario_big_groups_http10,
    "http10": scenario_http10,
    "pipelining": scenario_pipelining,
    "expect-continue": scenario_expect_continue,
    "chunked-upload": scenario_chunked_upload,
    "head": scenario_head,
    "slow-reader": scenario_slow_reader,
    "slow-reader-http10": scenario_slow_reader_http10,
    "errors": scenario_errors,
}


def main(argv):
    if len(argv) < 3 or any(name not in SCENARIOS for name in argv[2:]):
        sys.stderr.write(f"usage: h11_peer.py HOST:PORT SCENARIO... (of {', '.join(SCENARIOS)})\n")
        return 2
    host, _, port = argv[1].rpartition(":")
    addr = (host, int(port))
    signal.alarm(RUN_LIMIT)
    failed = 0
    for name in argv[2:]:
        started = time.monotonic()
        try:
            SCENARIOS[name](addr)
        except (Failure, OSError) as why:
            failed += 1
            print(f"FAIL {name}: {type(why).__name__ + ': ' if isinstance(why, OSError) else ''}{why}")
            continue
        print(f"ok {name} ({time.monotonic() - started:.2f} s, h11 {h11.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
