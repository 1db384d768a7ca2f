"""Drives redis-py the way an app would and prints one JSON line of what the
library did, for tests/libraries.rs (through tests/common/clients.rs).

    redis_py.py --host H --port P [--tls-ca CA] [--user U] [--password PW]
                [--asyncio] [--single-connection] [--retries N]
                SCENARIO WORD...

Scenarios, each running the command WORD... (e.g. `GET k`):
  command  connect (the library's own handshake) and run it once:
           {"result": R}
  kill     run it, learn the connection's CLIENT ID, kill that connection
           with CLIENT KILL ID from a second client at the same address,
           wait until the first connection's socket shows the close, then
           run the command again:
           {"before": R, "killed": R, "after": R}
where R is {"reply": <reply>} or {"error": {"class", "message", "mro"}}.

The library comes from tests/clients/python (scripts/deps.sh), which the
harness puts on PYTHONPATH.
"""

import argparse
import asyncio
import json
import select
import sys
import time

import redis
import redis.asyncio
from redis.backoff import NoBackoff

# Every wait here is bounded below the harness's own timeout, so a stalled
# peer shows up as the library's TimeoutError in the JSON, not a killed child.
SOCKET_TIMEOUT = 5.0
CLOSE_WAIT = 5.0


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-ca")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--asyncio", action="store_true")
    p.add_argument("--single-connection", action="store_true")
    # None keeps the library's default retry policy.
    p.add_argument("--retries", type=int)
    p.add_argument("scenario", choices=["command", "kill"])
    p.add_argument("words", nargs="+")
    return p.parse_args()


def client_kwargs(a, retry_cls):
    kw = dict(
        host=a.host,
        port=a.port,
        username=a.user,
        password=a.password,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        single_connection_client=a.single_connection,
    )
    if a.tls_ca:
        kw.update(ssl=True, ssl_ca_certs=a.tls_ca)
    if a.retries is not None:
        kw["retry"] = retry_cls(NoBackoff(), a.retries)
    return kw


def error(e):
    return {
        "class": type(e).__name__,
        "message": str(e),
        "mro": [c.__name__ for c in type(e).__mro__],
    }


def run_on(r, *words):
    try:
        return {"reply": r.execute_command(*words)}
    except Exception as e:  # the JSON reports whatever the library raised
        return {"error": error(e)}


def sync_main(a):
    try:
        # A single-connection client connects (and handshakes) right here.
        r = redis.Redis(**client_kwargs(a, redis.retry.Retry))
    except Exception as e:
        return {"result": {"error": error(e)}, "stage": "constructor"}
    if a.scenario == "command":
        return {"result": run_on(r, *a.words)}
    before = run_on(r, *a.words)
    conn_id = r.client_id()
    conn = r.connection or r.connection_pool._available_connections[0]
    admin = redis.Redis(**client_kwargs(a, redis.retry.Retry))
    killed = run_on(admin, "CLIENT", "KILL", "ID", conn_id)
    admin.close()
    # Readable means the close (or whatever the peer sent first) has arrived;
    # reading it is the library's job on its next command.
    select.select([conn._sock], [], [], CLOSE_WAIT)
    return {"before": before, "killed": killed, "after": run_on(r, *a.words)}


async def async_main(a):
    r = redis.asyncio.Redis(**client_kwargs(a, redis.asyncio.retry.Retry))

    async def run(client, *words):
        try:
            return {"reply": await client.execute_command(*words)}
        except Exception as e:
            return {"error": error(e)}

    try:
        if a.scenario == "command":
            return {"result": await run(r, *a.words)}
        before = await run(r, *a.words)
        conn_id = await r.client_id()
        conn = r.connection or r.connection_pool._available_connections[0]
        admin = redis.asyncio.Redis(**client_kwargs(a, redis.asyncio.retry.Retry))
        killed = await run(admin, "CLIENT", "KILL", "ID", conn_id)
        await admin.aclose()
        # asyncio reads eagerly into the stream's buffer: poll it for the
        # close (or bytes) to arrive, with a deadline.
        deadline = time.monotonic() + CLOSE_WAIT
        reader = conn._reader
        while not (reader.at_eof() or reader._buffer) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"before": before, "killed": killed, "after": await run(r, *a.words)}
    finally:
        await r.aclose()


def main():
    a = parse_args()
    out = asyncio.run(async_main(a)) if a.asyncio else sync_main(a)
    out["library"] = "redis-py " + redis.__version__ + (" asyncio" if a.asyncio else "")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
