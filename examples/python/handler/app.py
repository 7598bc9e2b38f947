"""A wasmatic handler in Python: fetches the URL of its configuration and
answers with its greeting, the input and what the URL answered.

Register it with its configuration, e.g.
`/register?name=hello-py&env=URL=https://example.com/&env=GREETING=hi`.

componentize-py runs this module's top-level code once, at build time, and
snapshots the result: read configuration inside `handler`, never up here.
"""

import json
from urllib.parse import urlsplit

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import audit, config, outgoing_handler
from wit_world.imports.audit import Level
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    Method_Get,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

# Largest response body read; the rest is not fetched.
MAX_BODY = 64 * 1024


class WitWorld(wit_world.WitWorld):
    def handler(self, input: str) -> str:
        url = config.get("URL")
        if url is None:
            # An exception traps: the run fails and its error says why.
            raise ValueError("no URL configured: register with env=URL=https://...")
        greeting = config.get("GREETING") or "hello"

        audit.log(Level.INFO, f"GET {url}")
        status, body = get(url)
        audit.log(Level.INFO, f"{url} answered {status} with {len(body)} bytes")

        return json.dumps(
            {
                "greeting": greeting,
                "input": input,
                "status": status,
                "body": body.decode("utf-8", errors="replace"),
            }
        )


def get(url: str) -> tuple[int, bytes]:
    """GETs `url` through wasi:http, blocking until the answer is in.

    Resources are closed with `with`, children before their parents, as
    WASI requires (a pollable before its future, a stream before its body).
    """
    parts = urlsplit(url)
    request = OutgoingRequest(Fields())
    request.set_method(Method_Get())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))

    # `handle` raises Err(ErrorCode) if the request is refused outright,
    # e.g. for a host the node does not allow.
    with outgoing_handler.handle(request, None) as future:
        with future.subscribe() as ready:
            ready.block()
        # Ready now: Ok(Ok(response)), or Ok(Err(error code)) if it failed.
        answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise RuntimeError(f"GET {url}: no response")
    if isinstance(answer.value, Err):
        raise RuntimeError(f"GET {url} failed: {answer.value.value}")
    assert isinstance(answer.value, Ok)

    with answer.value.value as response:
        status = response.status()
        with response.consume() as body:
            with body.stream() as stream:
                data = b""
                while len(data) < MAX_BODY:
                    try:
                        data += stream.blocking_read(MAX_BODY - len(data))
                    except Err as e:
                        if isinstance(e.value, StreamError_Closed):
                            break
                        raise
    return status, data
