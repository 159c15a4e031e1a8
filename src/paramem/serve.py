"""An OpenAI-compatible server over the store (`paramem serve`).

  GET  /v1/models             the models the caller may use: the base model, paramem:<caller> and
                              paramem-milp:<caller> (each where that memory exists)
  POST /v1/chat/completions   `model` is paramem:<user> (that user's memory: PLUM's, distilled or
                              cartridges), paramem-milp:<user> (the MiLP memory `paramem search`
                              stored) or the base model's name (no memory); with `stream: true` the
                              reply comes as server-sent events

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import FastAPI, Header, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from paramem.config import REPLY_REPETITION_PENALTY
from paramem.errors import InputError
from paramem.store import UserMemory, users

PREFIX = "paramem:"
MILP_PREFIX = "paramem-milp:"
Memory = tuple[str, str]  # (kind: "plum" or "milp", user): a memory the server can load


@dataclass
class ServeConfig:
    base_model: str
    home: Path | None = None
    cache_size: int = 8  # memories kept loaded
    max_new_tokens: int = 256  # the most a reply may ask for
    dtype: str | None = None
    max_upload_bytes: int = 10_000_000  # an uploaded conversation file, at most
    teacher: str = "extractive"  # the teacher of uploaded conversations
    keep_conversations: bool = False  # keep uploaded text in the manifest (the upload file goes either way)


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
    """The base model, the memories loaded into it, and replies from either; learning jobs for uploads."""

    def __init__(self, config: ServeConfig):
        from paramem.models import load_model

        self.config = config
        self.jobs = LearningJobs(config)
        self.base, self.tokenizer = load_model(config.base_model, config.dtype)
        self.base.eval()
        self.peft = None  # the PeftModel, once a sequential memory is loaded
        self.loaded: OrderedDict[Memory, _Loaded] = OrderedDict()
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
        memory = UserMemory(caller, self.config.home)
        mine = [f"{PREFIX}{caller}"] if memory.current_version() else []
        mine += [f"{MILP_PREFIX}{caller}"] if memory.milp_record() else []
        return [self.config.base_model, *mine]

    def memory_of(self, model: str, caller: str) -> Memory | None:
        """The memory `model` names (None for the base model); 403 for another user's."""
        if model == self.config.base_model:
            return None
        for prefix, kind in ((MILP_PREFIX, "milp"), (PREFIX, "plum")):
            if model.startswith(prefix):
                user = model.removeprefix(prefix)
                if user != caller:
                    raise ApiError(403, f"this token does not open {model!r}", "permission_error")
                return kind, user
        raise ApiError(404, f"no model {model!r} (available: {', '.join(self.models(caller))})", "not_found_error")

    # -- memories --------------------------------------------------------------------------

    def _load(self, key: Memory) -> _Loaded:
        """The memory's current version, from the LRU when that version is loaded already."""
        from contextlib import nullcontext

        from paramem.cartridge import CartridgeModel

        kind, user = key
        memory = UserMemory(user, self.config.home)
        if kind == "milp":
            record = memory.milp_record()
            if record is None:
                raise ApiError(404, f"user {user!r} has no MiLP memory (paramem search)", "not_found_error")
            version, base_model = record["version"], record.get("base_model")
            adapter = Path(record["adapter"])
            form = "sequential" if (adapter / "adapter_config.json").exists() else "base"  # n = 0: no LoRA
        else:
            version = memory.current_version()
            if version is None:
                raise ApiError(404, f"user {user!r} has learned nothing yet", "not_found_error")
            settings = memory.settings()
            base_model, form = settings.get("base_model"), settings.get("form", "sequential")
        if base_model != self.config.base_model:
            raise ApiError(409, f"{user!r} learned on {base_model!r}; this server serves {self.config.base_model!r}")
        cached = self.loaded.get(key)
        if cached is not None and cached.version == version:
            self.loaded.move_to_end(key)
            return cached
        if cached is not None:
            self._evict(key)
        # A valid module name for any user name, per kind and version: an adapter peft could not delete
        # (the last one it holds) never collides with the same memory's next load.
        name = f"{kind[0]}{hashlib.sha256(user.encode()).hexdigest()[:16]}v{version}"
        reading = memory.reading(version) if kind == "plum" else nullcontext(adapter)
        with reading as folder:
            if form == "cartridge":
                handle = CartridgeModel.from_pretrained(self.base, self.tokenizer, folder)
            elif form == "base":
                handle = None
            else:
                handle = self._add_adapter(folder, name)
        self.loads += 1
        self.loaded[key] = _Loaded(version, form, handle)
        while len(self.loaded) > self.config.cache_size:
            self._evict(next(iter(self.loaded)))
        return self.loaded[key]

    def _add_adapter(self, folder: Path, name: str) -> str:
        """Load an adapter folder into the one PeftModel under `name`."""
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
            self.peft.eval()
        elif name not in self.peft.peft_config:  # else kept in peft after its eviction (it was the last one)
            self.peft.load_adapter(str(folder), adapter_name=name)
        return name

    def _evict(self, key: Memory) -> None:
        gone = self.loaded.pop(key)
        if gone.form == "sequential" and self.peft is not None:
            if self.peft.active_adapter == gone.handle:
                others = [v.handle for v in self.loaded.values() if v.form == "sequential"]
                if others:
                    self.peft.set_adapter(others[0])
            if len(self.peft.peft_config) > 1:
                self.peft.delete_adapter(gone.handle)

    def _model_for(self, key: Memory | None):
        """(model to generate with, a context manager around the generation) for a memory or none."""
        from contextlib import nullcontext

        loaded = self._load(key) if key is not None else None
        if loaded is None or loaded.form == "base":
            return self.base, (self.peft.disable_adapter() if self.peft is not None else nullcontext())
        if loaded.form == "cartridge":  # the base model with any adapter switched off, then the cartridges
            return loaded.handle, (self.peft.disable_adapter() if self.peft is not None else nullcontext())
        self.peft.set_adapter(loaded.handle)
        return self.peft, nullcontext()

    # -- replies ---------------------------------------------------------------------------

    def reply(self, key: Memory | None, messages: list[dict], max_tokens: int, usage: dict | None = None):
        """Yield the reply's text in pieces, as it is generated; the lock is held throughout. `usage`,
        if given, is filled with the prompt's and the reply's token counts and the finish reason
        ("length" when the reply ran to `max_tokens`, as OpenAI says it)."""
        from transformers import TextIteratorStreamer

        from paramem.milp import REPLY_SYSTEM
        from paramem.prompts import SYSTEM_PROMPT

        chat = [m for m in messages if m["role"] != "system"]
        system = REPLY_SYSTEM if key is not None and key[0] == "milp" else SYSTEM_PROMPT  # what each was tuned under
        chat = [{"role": "system", "content": system}, *chat]
        inputs = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with self.lock:
            model, context = self._model_for(key)
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    with context:
                        out = model.generate(
                            **inputs,
                            max_new_tokens=max_tokens,
                            do_sample=False,
                            repetition_penalty=REPLY_REPETITION_PENALTY,
                            pad_token_id=self.tokenizer.pad_token_id,
                            streamer=streamer,
                        )
                    if usage is not None:
                        prompt, new = inputs["input_ids"].shape[1], out.shape[1] - inputs["input_ids"].shape[1]
                        stops = self.base.generation_config.eos_token_id or self.tokenizer.eos_token_id
                        stops = stops if isinstance(stops, list) else [stops]  # Qwen stops on two tokens
                        ended = new > 0 and out[0, -1].item() in stops
                        finish = "length" if new >= max_tokens and not ended else "stop"
                        usage.update(prompt_tokens=prompt, completion_tokens=new, finish_reason=finish)
                except BaseException as error:  # reported after the stream ends
                    failure.append(error)
                    streamer.end()

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            yield from (piece for piece in streamer if piece)
            worker.join()
            if failure:
                raise failure[0]


class LearningJobs:
    """Uploaded conversations learned in the background, one job at a time per user (the store's
    lock). Each job is a child process (`python -m paramem.serve`) with its own copy of the base
    model: the model serving is never trained, and a crash or out-of-memory while learning ends that
    job, not the server. An upload waits in `users/<user>/jobs/<job>.jsonl`, beside its job record,
    until its job ends, learned or failed, and is then deleted. Each conversation is committed as it
    is learned. The child runs in its own session, so it outlives a server stopped mid-job and ends the
    job itself; a job whose child is gone too is run again by `resume()` at the next start, skipping
    what was committed."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.lock = threading.Lock()

    def _folder(self, user: str) -> Path:
        return UserMemory(user, self.config.home).root / "jobs"

    def _record(self, user: str, job: str) -> dict:
        path = self._folder(user) / f"{job}.json"
        if not path.exists():
            raise ApiError(404, f"no job {job!r}", "not_found_error")
        return json.loads(path.read_text(encoding="utf-8"))

    def _save(self, user: str, job: str, **fields) -> None:
        from paramem.files import write_atomic

        path = self._folder(user) / f"{job}.json"
        with self.lock:
            record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            write_atomic(path, json.dumps({**record, **fields, "job": job, "user": user}))

    def _end(self, user: str, job: str, **fields) -> None:
        """Delete the job's upload and log, then record how it ended: what was learned is in the
        manifest (with keep_conversations, the raw text too). In that order, a job seen ended has
        left no text behind."""
        for suffix in (".jsonl", ".log"):
            (self._folder(user) / f"{job}{suffix}").unlink(missing_ok=True)
        self._save(user, job, **fields)

    def submit(self, user: str, data: bytes) -> dict:
        """Check an upload, keep it, and start learning it; bad input is a 400 and stores nothing."""
        import tempfile

        from paramem.conversations import load_conversations

        if len(data) > self.config.max_upload_bytes:
            raise ApiError(413, f"the upload is {len(data)} bytes; the limit is {self.config.max_upload_bytes}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.jsonl"
            path.write_bytes(data)
            try:
                conversations = load_conversations(path)
            except InputError as error:
                raise ApiError(400, str(error).replace(str(path), "upload")) from None
        if not conversations:
            raise ApiError(400, "the upload holds no conversation")
        job = uuid.uuid4().hex[:12]
        folder = self._folder(user)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{job}.jsonl").write_bytes(data)
        self._save(user, job, state="running", done=0, total=len(conversations), message="")
        self._start(user, job)
        return self._record(user, job)

    def _start(self, user: str, job: str) -> None:
        """Start the job's child process, and a thread that waits for it."""
        import subprocess
        import sys

        settings = {**asdict(self.config), "home": None if self.config.home is None else str(self.config.home)}
        with open(self._folder(user) / f"{job}.log", "wb") as log:  # the child's stderr: why it failed
            child = subprocess.Popen(
                [sys.executable, "-m", "paramem.serve", json.dumps(settings), user, job],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # a Ctrl-C or a kill of the server does not end the learning
            )
        self._save(user, job, pid=child.pid)
        threading.Thread(target=self._wait, args=(user, job, child), daemon=True).start()

    def _wait(self, user: str, job: str, child) -> None:
        """A child that exits without having ended its job (killed, out of memory) fails the job."""
        code = child.wait()
        if self._record(user, job).get("state") == "running":
            log = self._folder(user) / f"{job}.log"
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log.exists() else []
            last = lines[-1] if lines else "no message"
            self._end(user, job, state="failed", message=f"the learning process stopped (exit {code}): {last}")

    def learn(self, user: str, job: str) -> None:
        """The child's work: learn the upload into the user's memory with the memory's own settings,
        recording progress as each conversation is committed."""
        from paramem.augment.teachers import make_teacher
        from paramem.config import RememberConfig
        from paramem.conversations import load_conversations
        from paramem.forget import stored_train_config
        from paramem.remember import Callbacks, remember

        memory = UserMemory(user, self.config.home)
        upload = self._folder(user) / f"{job}.jsonl"
        if not upload.exists():  # stopped between deleting it and recording the end: nothing left to learn
            self._end(user, job, state="failed", message="the upload is gone; what was learned of it is kept")
            return
        try:
            conversations = load_conversations(upload)
            config = RememberConfig(
                base_model=self.config.base_model,
                dtype=self.config.dtype,
                train=stored_train_config(memory.settings()),
                keep_conversations=self.config.keep_conversations,
            )
            known = len(memory.learned())
            callbacks = Callbacks(on_learned=lambda _: self._save(user, job, done=len(memory.learned()) - known))
            learned = remember(
                user, conversations, make_teacher(self.config.teacher), config, self.config.home, callbacks
            )
            self._end(user, job, state="done", done=len(learned), message=f"learned {len(learned)} conversations")
        except InputError as error:
            self._end(user, job, state="failed", message=str(error))

    def status(self, user: str, job: str) -> dict:
        return self._record(user, job)

    def resume(self) -> list[str]:
        """Start again every job a stopped server left running whose child is gone too (one still
        running ends its job itself); returns the ids started."""
        resumed = []
        for user in users(self.config.home):
            for path in sorted(self._folder(user).glob("*.json")):
                record = json.loads(path.read_text(encoding="utf-8"))
                if record.get("state") == "running" and not _alive(record.get("pid")):
                    self._start(user, record["job"])
                    resumed.append(record["job"])
        return resumed


def _alive(pid: int | None) -> bool:
    """Whether our process `pid` still runs (signal 0 checks without sending anything)."""
    import os

    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the id now belongs to another user
        return False
    return True


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
        memory = server.memory_of(body["model"], caller)
        messages = _messages(body)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or server.config.max_new_tokens
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= server.config.max_new_tokens:
            raise ApiError(400, f"max_tokens must be from 1 to {server.config.max_new_tokens}")
        if memory is not None:
            server._load(memory)  # a missing or mismatched memory is an error before any stream starts
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
                usage: dict = {}
                for piece in server.reply(memory, messages, max_tokens, usage):
                    yield chunk({"content": piece}, None)
                yield chunk({}, usage.get("finish_reason", "stop"))
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        usage: dict = {}
        text = "".join(server.reply(memory, messages, max_tokens, usage)).strip()
        message = {"role": "assistant", "content": text}
        prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
        return {
            "id": completion,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": usage["finish_reason"]}],
            "usage": {
                "prompt_tokens": prompt_tokens,  # the chat as the model reads it, system prompt included
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @app.get("/v1/memory")
    def memory_view(authorization: str | None = Header(None)):
        """What the caller's memory holds: the conversations learned, what was forgotten, and the MiLP
        memory beside it when `paramem search` stored one (its configuration and what it learned)."""
        caller = server.caller(authorization)
        memory = UserMemory(caller, server.config.home)
        learned = memory.learned()
        milp = memory.milp_record()
        return {
            "user": caller,
            "form": memory.settings().get("form", "sequential"),
            "conversations": [
                {
                    "id": r.id,
                    "timestamp": r.timestamp,
                    "qa_pairs": r.qa_pairs,
                    "final_loss": r.final_loss,
                    "learned_at": r.learned_at,
                }
                for r in learned
            ],
            "forgotten": [{"id": i, "at": at} for i, at in memory.forgotten()],
            "milp": None
            if milp is None
            else {"memory": milp.get("described"), "conversations": milp.get("conversations", [])},
        }

    @app.get("/v1/memory/recollections")
    def recollections(authorization: str | None = Header(None)):
        """What the memory recalls of each conversation, generated from it (sequential memories)."""
        from paramem.recall import recall_cues, recollect

        caller = server.caller(authorization)
        memory = UserMemory(caller, server.config.home)
        if memory.settings().get("form") == "cartridge":
            raise ApiError(400, "recollections are generated from sequential memories; cartridges answer questions")
        cues = recall_cues(memory.notes())
        with server.lock:
            model, context = server._model_for(("plum", caller))
            with context:
                texts = recollect(model, server.tokenizer, cues)
        return {"recollections": [{"id": n.conversation_id, "text": t} for n, t in zip(memory.notes(), texts)]}

    @app.post("/v1/memory/conversations", status_code=202)
    async def upload(request: Request, authorization: str | None = Header(None)):
        """A conversation file (any format `paramem remember` reads) as the body; learned in the background."""
        caller = server.caller(authorization)
        data = await request.body()
        return server.jobs.submit(caller, data)

    @app.get("/v1/memory/jobs/{job}")
    def job_status(job: str, authorization: str | None = Header(None)):
        return server.jobs.status(server.caller(authorization), job)

    @app.delete("/v1/memory/conversations/{conversation}")
    def forget_conversation(conversation: str, authorization: str | None = Header(None)):
        from dataclasses import asdict

        from paramem.forget import forget
        from paramem.store import UserLocked

        caller = server.caller(authorization)
        try:
            result = forget(caller, conversation, server.config.home)
        except UserLocked as error:
            raise ApiError(409, str(error)) from None
        except InputError as error:
            raise ApiError(404, str(error), "not_found_error") from None
        return asdict(result)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return (Path(__file__).parent / "web" / "index.html").read_text(encoding="utf-8")

    return app


def check_serve_config(config: ServeConfig) -> None:
    if config.cache_size < 1:
        raise InputError(f"--cache must be at least 1, not {config.cache_size}")
    if config.max_new_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, not {config.max_new_tokens}")


def _learn_upload(settings: str, user: str, job: str) -> None:
    """A learning job's child process: `python -m paramem.serve SETTINGS USER JOB`."""
    config = json.loads(settings)
    home = config.pop("home")
    LearningJobs(ServeConfig(**config, home=None if home is None else Path(home))).learn(user, job)


if __name__ == "__main__":
    import sys

    _learn_upload(*sys.argv[1:])
