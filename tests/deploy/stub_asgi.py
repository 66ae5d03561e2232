"""A minimal ASGI app, so tests can start gunicorn with deploy/gunicorn.conf.py without the services."""


async def app(scope, receive, send):  # pragma: no cover - exercised through gunicorn
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    import gc
    import json
    import os

    body = json.dumps({"status": "ok", "frozen": gc.get_freeze_count(), "pid": os.getpid()}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
