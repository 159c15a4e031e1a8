"""The HTTP face of `paramem serve`: an OpenAI-compatible API over the store, and its page.

  GET    /v1/models                        the models the caller may use: the base model,
                                           paramem:<caller> and paramem-milp:<caller> where they exist
  POST   /v1/chat/completions              `model` paramem:<user>, paramem-milp:<user> or the base
                                           model; `stream: true` gives server-sent events
  GET    /v1/memory                        what the caller's memory holds
  GET    /v1/memory/recollections          what it recalls of each conversation
  POST   /v1/memory/conversations          a conversation file, learned by a job (202)
  DELETE /v1/memory/conversations/<id>     forget one conversation, by a job (202); ids may hold "/"
  GET    /v1/memory/jobs/<job>             a job's progress

Auth: each user has a bearer token (`paramem token --user U`); the server keeps only its SHA-256. A
token opens its own user's memory and the base model; any other user's memory is 403.

No handler blocks the event loop: replies go to the engine (engine.py) and come back as events, jobs
run in child processes (jobs.py), and the rest reads small files. Every error is a JSON body with a
message and no file path; an unexpected one is logged whole and answered with a plain 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Header, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from paramem.config import Form
from paramem.errors import InputError
from paramem.read.recall import cached_recollections, recollections
from paramem.serve.errors import ApiError, public_reason
from paramem.serve.memories import Memories
from paramem.serve.reply import Reply
from paramem.serve.server import MemoryServer
from paramem.store.user import UserMemory

log = logging.getLogger("paramem.serve")
WEB = Path(__file__).parent / "web"
# The page loads only its own script and style, and no other site may frame it (a framing page could
# otherwise click Forget for the user).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it passes `limit` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is over the limit of {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the body is over the limit of {limit} bytes")
    return bytes(data)


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, "each message needs a role of system, user or assistant")
        content = m.get("content")
        if isinstance(content, list):  # the content-parts form: its text parts
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if not isinstance(content, str):
            raise ApiError(400, "each message needs text content")
        out.append({"role": m["role"], "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise ApiError(400, "the conversation has no user message")
    return out


class _Events:
    """A reply's events, handed from the engine's thread to the event loop."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, event: tuple) -> None:  # the engine's thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server stopped, nobody is listening
            pass

    async def next(self, request: Request, reply: Reply, keepalive: float | None = None) -> tuple | None:
        """The next event (None after `keepalive` seconds without one); a client that went away
        cancels the reply."""
        waited = 0.0
        while keepalive is None or waited < keepalive:
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except TimeoutError:
                waited += 1.0
                if await request.is_disconnected():
                    reply.cancel()
                    raise ApiError(499, "the client went away") from None
                continue
            if event[0] == "error":
                raise event[1]
            return event
        return None


def create_app(server: MemoryServer) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        server.stop()  # cancel running replies; unended jobs resume at the next start

    app = FastAPI(
        title="paramem",
        description="An OpenAI-compatible API over per-user parametric memories",
        docs_url=None,  # the interactive docs load scripts from a CDN: offline they cannot work
        redoc_url=None,
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        body = {"error": {"message": error.message, "type": error.kind}}
        return JSONResponse(body, status_code=error.status, headers=headers)

    @app.exception_handler(InputError)
    async def input_error(_: Request, error: InputError):  # a damaged file of the store
        log.error("%s", error)
        body = {"error": {"message": f"the memory cannot be read: {public_reason(error)}", "type": "server_error"}}
        return JSONResponse(body, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception):
        log.exception("unexpected error", exc_info=error)
        return JSONResponse(
            {"error": {"message": "internal error; the server's log says why", "type": "server_error"}}, 500
        )

    @app.get("/v1/models")
    def list_models(authorization: str | None = Header(None)):
        caller = server.caller(authorization)
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "paramem"} for m in server.models(caller)]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, authorization: str | None = Header(None)):
        caller = server.caller(authorization)
        try:
            body = json.loads(await _body(request, server.config.max_request_bytes))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ApiError(400, "'model' is required")
        memory = server.memory_of(body["model"], caller)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or server.config.max_new_tokens
        if (
            not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
            or not 1 <= max_tokens <= server.config.max_new_tokens
        ):
            raise ApiError(400, f"max_tokens must be from 1 to {server.config.max_new_tokens}")
        memory, prompt = await asyncio.to_thread(server.prompt, memory, _messages(body))
        if memory is not None:  # no memory to answer from is an HTTP error, before any stream starts
            await asyncio.to_thread(server.memories.check, memory)
        events = _Events()
        reply = Reply(memory, prompt, max_tokens, events.put)
        server.engine.submit(reply)
        completion, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            payload = {"id": completion, "object": "chat.completion.chunk", "created": created, "model": body["model"]}
            return f"data: {json.dumps({**payload, 'choices': [choice]})}\n\n"

        if body.get("stream"):

            async def stream():
                # The stream opens at once; while the reply waits for the model, an SSE comment every
                # 5 s says it is alive (clients skip comments).
                try:
                    yield chunk({"role": "assistant", "content": ""}, None)
                    while True:
                        try:
                            event = await events.next(request, reply, keepalive=5.0)
                        except ApiError as error:
                            yield f"data: {json.dumps({'error': {'message': error.message, 'type': error.kind}})}\n\n"
                            return
                        if event is None:
                            yield ": waiting for the model\n\n"
                        elif event[0] == "text":
                            yield chunk({"content": event[1]}, None)
                        elif event[0] == "end":
                            yield chunk({}, event[1]["finish_reason"])
                            yield "data: [DONE]\n\n"
                            return
                finally:  # ended, or the client went away: the engine drops the row at its next step
                    reply.cancel()

            return StreamingResponse(stream(), media_type="text/event-stream")
        try:
            while (event := await events.next(request, reply))[0] != "end":
                pass
        finally:
            reply.cancel()
        usage = event[1]
        return {
            "id": completion,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": usage["text"].strip()},
                    "finish_reason": usage["finish_reason"],
                }
            ],
            "usage": {
                "prompt_tokens": usage["prompt_tokens"],  # the chat as the model reads it, system prompt included
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            },
        }

    @app.get("/v1/memory")
    def memory_view(authorization: str | None = Header(None)):
        """What the caller's store holds: each conversation with its state (indexed: answerable from
        its text; consolidating: being learned; consolidated: in the memory) and whether its text is
        kept, what was forgotten, a forget under way, and the MiLP memory beside it when `paramem
        search` stored one."""
        caller = server.caller(authorization)
        memory = UserMemory(caller, server.config.home)
        milp = memory.milp.record()
        learned = {r.id: r for r in memory.learned()}
        dates = memory.texts.timestamps()
        conversations = []
        for cid, state in memory.texts.states().items():
            record = learned.get(cid)
            conversations.append(
                {
                    "id": cid,
                    "state": state,
                    "text_kept": cid in dates,
                    "timestamp": record.timestamp if record else dates.get(cid),
                    "qa_pairs": record.qa_pairs if record else None,
                    "final_loss": record.final_loss if record else None,
                    "learned_at": record.learned_at if record else None,
                }
            )
        return {
            "user": caller,
            "form": memory.form,
            "conversations": conversations,
            "forgotten": [{"id": i, "at": at} for i, at in memory.forgotten()],
            "forgetting": server.jobs.forgetting(caller),
            "milp": None
            if milp is None
            else {"memory": milp.get("described"), "conversations": milp.get("conversations", [])},
        }

    @app.get("/v1/memory/recollections")
    async def memory_recollections(authorization: str | None = Header(None)):
        """What the memory recalls of each conversation (sequential memories): generated once per
        version, usually by the job that learned it, and read from beside the version after that."""
        caller = server.caller(authorization)
        memory = UserMemory(caller, server.config.home)
        if memory.form == Form.CARTRIDGE:
            raise ApiError(400, "recollections are generated from sequential memories; cartridges answer questions")
        await asyncio.to_thread(server.memories.check, ("plum", caller))
        texts = await asyncio.to_thread(cached_recollections, memory)
        if texts is not None:  # computed ahead: read, the model not needed
            return {"recollections": [{"id": n.conversation_id, "text": t} for n, t in zip(memory.notes(), texts)]}
        job = server.jobs.pending(caller)
        if job is not None:  # the job computes them once it commits; here they would hold up every reply
            raise ApiError(
                409, f"what this memory recalls is being computed (job {job}); ask again when it ends", retry_after=10
            )

        def read(memories: Memories) -> tuple[list, list[str]]:  # on the engine's thread: nothing else runs
            loaded = memories.acquire(("plum", caller))
            memories.peft.set_adapter(loaded.handle)
            memory.loaded_version = loaded.version
            return memory.notes(), recollections(memories.peft, memories.tokenizer, memory)

        notes, texts = await asyncio.wrap_future(server.engine.call(read))
        return {"recollections": [{"id": n.conversation_id, "text": t} for n, t in zip(notes, texts)]}

    @app.post("/v1/memory/conversations", status_code=202)
    async def upload(request: Request, authorization: str | None = Header(None)):
        """A conversation file (any format `paramem remember` reads) as the body; learned by a job."""
        caller = server.caller(authorization)
        return server.jobs.submit_upload(caller, await _body(request, server.config.max_upload_bytes))

    @app.get("/v1/memory/jobs/{job}")
    def job_status(job: str, authorization: str | None = Header(None)):
        return server.jobs.status(server.caller(authorization), job)

    @app.delete("/v1/memory/conversations/{conversation:path}", status_code=202)
    def forget_conversation(conversation: str, authorization: str | None = Header(None)):
        """Forget one conversation, by a job; until it ends, the memory is not answered from."""
        return server.jobs.submit_forget(server.caller(authorization), conversation)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/page.js", include_in_schema=False)
    def page_script():
        return FileResponse(WEB / "page.js", media_type="text/javascript")

    @app.get("/page.css", include_in_schema=False)
    def page_style():
        return FileResponse(WEB / "page.css", media_type="text/css")

    return app
