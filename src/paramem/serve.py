"""An OpenAI-compatible server over the store (`paramem serve`).

  GET  /v1/models             the models the caller may use: the base model, and paramem:<caller>
  POST /v1/chat/completions   `model` is paramem:<user> (that user's memory) or the base model's name
                              (no memory); with `stream: true` the reply comes as server-sent events

Auth: each user has a bearer token (`paramem token --user U`, run by the operator); the server keeps
only its SHA-256, in the user's folder. A token opens its own user's memory and the base model: any
other user's memory is 403.

One base model is loaded once. Memories load on demand and are kept in an LRU of `cache_size`:
adapters are added by name to the one PeftModel (`load_adapter`), so switching between them never
reloads the base model; a cartridge memory shares the same base model. A memory is loaded from the
version current at the request: a newer version (another conversation learned) is picked up by the
next request, and a version's files are held (`UserMemory.reading`) only while they are read into
memory. Generation is serialised by one lock, because peft's active adapter is global: two users'
requests never mix adapters.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from paramem.errors import InputError
from paramem.store import UserMemory, users

PREFIX = "paramem:"


@dataclass
class ServeConfig:
    base_model: str
    home: Path | None = None
    cache_size: int = 8  # memories kept loaded
    max_new_tokens: int = 256  # the most a reply may ask for
    dtype: str | None = None


@dataclass
class _Loaded:
    version: int
    form: str
    handle: object = field(repr=False)  # the peft adapter name, or the CartridgeModel


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class MemoryServer:
    """The base model, the memories loaded into it, and replies from either."""

    def __init__(self, config: ServeConfig):
        from paramem.models import load_model

        self.config = config
        self.base, self.tokenizer = load_model(config.base_model, config.dtype)
        self.base.eval()
        self.peft = None  # the PeftModel, once a sequential memory is loaded
        self.loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self.lock = threading.Lock()  # one generation at a time: the active adapter is global
        self.loads = 0  # memories read from disk (an LRU hit reads none)

    # -- auth ------------------------------------------------------------------------------

    def caller(self, authorization: str | None) -> str:
        """The user whose token this is (401 without a valid one)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "a bearer token is needed (paramem token --user NAME)", "authentication_error")
        token = authorization.removeprefix("Bearer ").strip()
        for name in users(self.config.home):
            if UserMemory(name, self.config.home).token_matches(token):
                return name
        raise ApiError(401, "unknown token", "authentication_error")

    def models(self, caller: str) -> list[str]:
        mine = [f"{PREFIX}{caller}"] if UserMemory(caller, self.config.home).current_version() else []
        return [self.config.base_model, *mine]

    def user_of(self, model: str, caller: str) -> str | None:
        """The user whose memory `model` names (None for the base model); 403 for another user's."""
        if model == self.config.base_model:
            return None
        if not model.startswith(PREFIX):
            raise ApiError(404, f"no model {model!r} (available: {', '.join(self.models(caller))})", "not_found_error")
        user = model.removeprefix(PREFIX)
        if user != caller:
            raise ApiError(403, f"this token does not open {model!r}", "permission_error")
        return user

    # -- memories --------------------------------------------------------------------------

    def _load(self, user: str) -> _Loaded:
        """The user's current memory, from the LRU when that version is loaded already."""
        from peft import PeftModel

        from paramem.cartridge import CartridgeModel

        memory = UserMemory(user, self.config.home)
        version = memory.current_version()
        if version is None:
            raise ApiError(404, f"user {user!r} has learned nothing yet", "not_found_error")
        settings = memory.settings()
        if settings.get("base_model") != self.config.base_model:
            raise ApiError(
                409,
                f"{user!r} learned on {settings.get('base_model')!r}; this server serves {self.config.base_model!r}",
            )
        cached = self.loaded.get(user)
        if cached is not None and cached.version == version:
            self.loaded.move_to_end(user)
            return cached
        if cached is not None:
            self._evict(user)
        form = settings.get("form", "sequential")
        name = "u" + hashlib.sha256(user.encode()).hexdigest()[:16]  # a valid module name for any user name
        with memory.reading(version) as folder:
            if form == "cartridge":
                handle = CartridgeModel.from_pretrained(self.base, self.tokenizer, folder)
            elif self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
                self.peft.eval()
                handle = name
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
                handle = name
        self.loads += 1
        self.loaded[user] = _Loaded(version, form, handle)
        while len(self.loaded) > self.config.cache_size:
            self._evict(next(iter(self.loaded)))
        return self.loaded[user]

    def _evict(self, user: str) -> None:
        gone = self.loaded.pop(user)
        if gone.form == "sequential" and self.peft is not None:
            if self.peft.active_adapter == gone.handle:
                others = [v.handle for v in self.loaded.values() if v.form == "sequential"]
                if others:
                    self.peft.set_adapter(others[0])
            if len(self.peft.peft_config) > 1:
                self.peft.delete_adapter(gone.handle)

    def _model_for(self, user: str | None):
        """(model to generate with, a context manager around the generation) for a user or none."""
        from contextlib import nullcontext

        if user is None:
            return self.base, (self.peft.disable_adapter() if self.peft is not None else nullcontext())
        loaded = self._load(user)
        if loaded.form == "cartridge":  # the base model with any adapter switched off, then the cartridges
            return loaded.handle, (self.peft.disable_adapter() if self.peft is not None else nullcontext())
        self.peft.set_adapter(loaded.handle)
        return self.peft, nullcontext()

    # -- replies ---------------------------------------------------------------------------

    def reply(self, user: str | None, messages: list[dict], max_tokens: int):
        """Yield the reply's text in pieces, as it is generated; the lock is held throughout."""
        from transformers import TextIteratorStreamer

        from paramem.prompts import SYSTEM_PROMPT

        chat = [m for m in messages if m["role"] != "system"]
        chat = [{"role": "system", "content": SYSTEM_PROMPT}, *chat]
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with self.lock:
            model, context = self._model_for(user)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    with context:
                        model.generate(
                            **inputs,
                            max_new_tokens=max_tokens,
                            do_sample=False,
                            pad_token_id=self.tokenizer.pad_token_id,
                            streamer=streamer,
                        )
                except BaseException as error:  # reported after the stream ends
                    failure.append(error)
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            yield from (piece for piece in streamer if piece)
            worker.join()
            if failure:
                raise failure[0]


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
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ApiError(400, "each message needs text content")
        out.append({"role": m["role"], "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in out):
        raise ApiError(400, "the conversation has no user message")
    return out


def create_app(server: MemoryServer) -> FastAPI:
    app = FastAPI(title="paramem", description="An OpenAI-compatible API over per-user parametric memories")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError):
        return JSONResponse({"error": {"message": error.message, "type": error.kind}}, status_code=error.status)

    @app.get("/v1/models")
    def list_models(authorization: str | None = Header(None)):
        caller = server.caller(authorization)
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": now, "owned_by": "paramem"} for m in server.models(caller)
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, authorization: str | None = Header(None)):
        caller = server.caller(authorization)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            raise ApiError(400, "'model' is required")
        user = server.user_of(body["model"], caller)
        messages = _messages(body)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or server.config.max_new_tokens
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= server.config.max_new_tokens:
            raise ApiError(400, f"max_tokens must be from 1 to {server.config.max_new_tokens}")
        if user is not None:
            server._load(user)  # a missing or mismatched memory is an error before any stream starts
        completion = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.get("stream"):

            def events():
                def chunk(delta: dict, finish: str | None) -> str:
                    payload = {
                        "id": completion,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    return f"data: {json.dumps(payload)}\n\n"

                yield chunk({"role": "assistant", "content": ""}, None)
                for piece in server.reply(user, messages, max_tokens):
                    yield chunk({"content": piece}, None)
                yield chunk({}, "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        text = "".join(server.reply(user, messages, max_tokens)).strip()
        prompt_tokens = len(server.tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        return {
            "id": completion,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(server.tokenizer(text, add_special_tokens=False)["input_ids"]),
                "total_tokens": prompt_tokens + len(server.tokenizer(text, add_special_tokens=False)["input_ids"]),
            },
        }

    return app


def check_serve_config(config: ServeConfig) -> None:
    if config.cache_size < 1:
        raise InputError(f"--cache must be at least 1, not {config.cache_size}")
    if config.max_new_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, not {config.max_new_tokens}")
