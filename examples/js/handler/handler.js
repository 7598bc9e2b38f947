// A wasmatic handler in JavaScript: fetches the URL of its configuration and
// answers with its greeting, the input and what the URL answered (the same
// handler as examples/python/handler).
//
// Register it with its configuration, e.g.
// `/register?name=hello-js&env=URL=https://example.com/&env=GREETING=hi`.
//
// componentize-js runs this module's top-level code once, at build time, and
// snapshots the result: read configuration inside `handler`, never up here.

import { log } from 'wasmatic:guest/audit@0.1.0';
import { get as config } from 'wasmatic:guest/config@0.1.0';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingRequest } from 'wasi:http/types@0.2.12';

// Largest response body read; the rest is not fetched.
const MAX_BODY = 64 * 1024;

export function handler(input) {
  const url = config('URL');
  if (url === undefined) {
    // An exception traps: the run fails and its stderr says why.
    throw new Error('no URL configured: register with env=URL=https://...');
  }
  const greeting = config('GREETING') ?? 'hello';

  log('info', `GET ${url}`);
  const { status, body } = get(new URL(url));
  log('info', `${url} answered ${status} with ${body.length} bytes`);

  return JSON.stringify({
    greeting,
    input,
    status,
    body: new TextDecoder().decode(body),
  });
}

// GETs `url` through wasi:http, blocking until the answer is in. Imported
// functions returning a `result` throw its error; a `result` inside another
// type is a `{ tag, val }` object. Resources are dropped children first, as
// WASI requires (a pollable before its future, a stream before its body).
function get(url) {
  const request = new OutgoingRequest(new Fields());
  request.setMethod({ tag: 'get' });
  request.setScheme({ tag: url.protocol === 'https:' ? 'HTTPS' : 'HTTP' });
  request.setAuthority(url.host);
  request.setPathWithQuery(url.pathname + url.search);

  const future = handle(request, undefined);
  const ready = future.subscribe();
  ready.block();
  ready[Symbol.dispose]();
  // Ready now: option<result<result<response, error-code>>>.
  const answer = future.get();
  future[Symbol.dispose]();
  if (answer === undefined || answer.tag === 'err') {
    throw new Error(`GET ${url}: no response`);
  }
  if (answer.val.tag === 'err') {
    throw new Error(`GET ${url} failed: ${JSON.stringify(answer.val.val)}`);
  }

  const response = answer.val.val;
  const status = response.status();
  const incoming = response.consume();
  const stream = incoming.stream();
  const body = new Uint8Array(MAX_BODY);
  let length = 0;
  while (length < MAX_BODY) {
    let chunk;
    try {
      chunk = stream.blockingRead(BigInt(MAX_BODY - length));
    } catch (e) {
      if (e.payload?.tag === 'closed') break;
      throw e;
    }
    body.set(chunk, length);
    length += chunk.length;
  }
  stream[Symbol.dispose]();
  incoming[Symbol.dispose]();
  response[Symbol.dispose]();
  return { status, body: body.subarray(0, length) };
}
