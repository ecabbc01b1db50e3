"""The web app through StubTreq: status codes, headers, JSON errors and the stream."""
import json

import pytest
import treq
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from monit.auth import JWTVerifier
from monit.inbox import InboxRegistry
from monit.stream import EventStream
from monit.token import mint
from monit.web import MonitWeb

SECRET = "test-secret"
URL = "http://monit.example/events"


def result_of(d: Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def registry(clock):
    return InboxRegistry(clock, grace=10)


@pytest.fixture
def web(clock, registry):
    return MonitWeb(registry, JWTVerifier.with_secret(SECRET, clock), clock, heartbeat=15)


@pytest.fixture
def stub(web):
    return StubTreq(web.resource())


@pytest.fixture
def token(clock):
    return mint(SECRET, "alice", 3600, now=clock.seconds())


def get(stub, url, headers=None):
    response = result_of(stub.get(url, headers=headers or {}))
    return response


def json_body(stub, response):
    d = response.json()
    stub.flush()
    return result_of(d)


def test_missing_stream_is_400(stub, token):
    response = get(stub, URL, {"X-Auth-Token": token})
    assert response.code == 400
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert "stream" in json_body(stub, response)["error"]


@pytest.mark.parametrize("query", ["?stream=", "?stream=a&stream=b", "?stream=a%20b", "?stream=%ff"])
def test_bad_stream_is_400(stub, token, query):
    response = get(stub, URL + query, {"X-Auth-Token": token})
    assert response.code == 400
    assert json_body(stub, response)["error"]


def test_missing_token_is_401(stub):
    response = get(stub, URL + "?stream=job")
    assert response.code == 401
    assert "token" in json_body(stub, response)["error"]


@pytest.mark.parametrize("header", ["X-Auth-Token", "Authorization"])
def test_invalid_token_is_401(stub, clock, header):
    bad = mint("wrong-secret", "mallory", 3600, now=clock.seconds())
    value = bad if header == "X-Auth-Token" else "Bearer " + bad
    response = get(stub, URL + "?stream=job", {header: value})
    assert response.code == 401
    body = json_body(stub, response)
    assert body == {"error": "invalid token"}


def test_unknown_path_is_404_json(stub):
    response = get(stub, "http://monit.example/nope")
    assert response.code == 404
    assert json_body(stub, response) == {"error": "not found"}


def test_wrong_method_is_405_json(stub):
    response = result_of(stub.post(URL + "?stream=job"))
    assert response.code == 405
    assert json_body(stub, response) == {"error": "method not allowed"}


def read_stream(stub, response):
    chunks = []
    done = treq.collect(response, chunks.append)
    stub.flush()
    return chunks, done


def test_stream_headers_history_live_events_and_end(stub, registry, clock, token):
    registry.open("job", '{"id":"job"}', "service.create")
    response = get(stub, URL + "?stream=job", {"Authorization": "Bearer " + token})
    assert response.code == 200
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    assert headers.getRawHeaders("cache-control") == ["no-cache"]
    assert headers.getRawHeaders("x-accel-buffering") == ["no"]
    chunks, done = read_stream(stub, response)
    registry.deliver("job", '{"body":"live"}')
    registry.close("job", '{"id":"job"}', "service.create.done")
    stub.flush()
    body = b"".join(chunks)
    assert body.startswith(b"retry: 3000\n\n")
    assert body.index(b"event: service.create\n") < body.index(b'data: {"body":"live"}')
    assert body.endswith(b'id: 3\nevent: service.create.done\ndata: {"id":"job"}\n\n')
    assert not done.called
    clock.advance(10)
    stub.flush()
    result_of(done)
    assert len(registry) == 0


def test_unknown_stream_is_created_by_the_reader(stub, registry, token):
    response = get(stub, URL + "?stream=fresh", {"X-Auth-Token": token})
    assert response.code == 200
    assert registry.get("fresh").subscribers


def test_keepalive_comments_on_the_heartbeat(stub, web, clock, token):
    web.start()
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token})
    chunks, _ = read_stream(stub, response)
    clock.advance(15)
    stub.flush()
    assert b"".join(chunks).endswith(b": keep-alive\n\n")
    web.stop()


def test_stop_ends_every_stream(stub, web, token):
    response = get(stub, URL + "?stream=job", {"X-Auth-Token": token})
    chunks, done = read_stream(stub, response)
    web.stop()
    stub.flush()
    result_of(done)
    assert len(web.streams) == 0


def test_cancelled_stream_unsubscribes_at_once(registry, clock):
    """Klein cancels the handler's Deferred when the client goes away."""
    from monit.stream import StreamSet

    streams = StreamSet(clock, 15)
    request = DummyRequest([b"events"])
    stream = EventStream(request, registry, streams, "alice", clock)
    d = stream.run("job", 3000)
    assert registry.get("job").subscribers
    d.addErrback(lambda _: None)
    d.cancel()
    assert not registry.get("job").subscribers
    assert len(streams) == 0
    registry.deliver("job", '"after"')
    assert b"after" not in b"".join(request.written)


def test_error_bodies_are_short_json(stub):
    response = get(stub, URL)
    body = json_body(stub, response)
    assert list(body) == ["error"] and len(json.dumps(body)) < 200
