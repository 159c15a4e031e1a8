"""What one `paramem serve` holds: the base model, the memories loaded into it, the engine that replies
from them, the jobs, and who a token belongs to."""

from __future__ import annotations

from paramem.errors import InputError
from paramem.memory.milp.model import REPLY_SYSTEM
from paramem.model.loading import load_model
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.serve.config import ServeConfig
from paramem.serve.engine import Engine
from paramem.serve.errors import ApiError
from paramem.serve.jobs import Jobs
from paramem.serve.memories import Memories, Memory
from paramem.serve.text_side import TextSides
from paramem.store.user import UserMemory, users

PREFIX = "paramem:"


MILP_PREFIX = "paramem-milp:"


class MemoryServer:
    """The base model, the memories loaded into it, the engine that replies from them, and the jobs."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.jobs = Jobs(config)
        base, self.tokenizer = load_model(config.base_model, config.dtype)
        base.eval()
        self.memories = Memories(
            base, self.tokenizer, config.home, config.base_model, config.cache_size, self.jobs.forgetting
        )
        self.engine = Engine(self.memories, config.max_batch, config.max_waiting, config.prefill_wait)
        self.text_sides = TextSides(self.tokenizer, config.home, config.cache_size)

    @property
    def loaded(self):
        return self.memories.loaded

    @property
    def loads(self) -> int:
        return self.memories.loads

    def stop(self) -> None:
        self.engine.stop()
        self.jobs.stop()

    # -- auth ------------------------------------------------------------------------------

    def caller(self, authorization: str | None) -> str:
        """The user whose token this is (401 without a valid one)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "a bearer token is needed (paramem token --user NAME)", "authentication_error")
        token = authorization.removeprefix("Bearer ").strip()
        for name in users(self.config.home):
            try:
                if UserMemory(name, self.config.home).tokens.matches(token):
                    return name
            except (InputError, OSError):  # a folder no user could have made: not a user
                continue
        raise ApiError(401, "unknown token", "authentication_error")

    def models(self, caller: str) -> list[str]:
        memory = UserMemory(caller, self.config.home)
        mine = [f"{PREFIX}{caller}"] if memory.current_version() or memory.texts.ids() else []
        mine += [f"{MILP_PREFIX}{caller}"] if memory.milp.record() else []
        return [self.config.base_model, *mine]

    def memory_of(self, model: str, caller: str) -> Memory | None:
        """The memory `model` names (None for the base model); 403 for another user's."""
        if model == self.config.base_model:
            return None
        for prefix, kind in ((MILP_PREFIX, "milp"), (PREFIX, "plum")):
            if model.startswith(prefix):
                if model.removeprefix(prefix) != caller:
                    raise ApiError(403, f"this token does not open {model!r}", "permission_error")
                return kind, caller
        raise ApiError(404, f"no model {model!r} (available: {', '.join(self.models(caller))})", "not_found_error")

    def prompt(self, memory: Memory | None, messages: list[dict]) -> tuple[Memory | None, list[int]]:
        """The chat as the model reads it, and the memory the reply reads with (None: the base model).
        A MiLP memory: the system prompt its replies were tuned under. A user's own memory: the answer
        path (read/respond.py), as `paramem chat` answers: the passages of their stored texts
        retrieved for the last message, read by the base model while the texts hold everything, with
        the memory where some text is gone, and the memory alone when no text is kept."""
        system = SYSTEM_PROMPT
        if memory is not None and memory[0] == "milp":
            system = REPLY_SYSTEM
        elif memory is not None:
            self.memories.refuse_while_forgetting(memory[1])
            path = self.text_sides.of(memory[1])
            if path.source == "nothing":
                raise ApiError(404, f"user {memory[1]!r} has nothing stored yet", "not_found_error")
            said = [m["content"] for m in messages if m["role"] == "user"]
            system = path.system_for(said[-1] if said else "")
            memory = None if path.source == "text" else memory
        chat = [{"role": "system", "content": system}, *(m for m in messages if m["role"] != "system")]
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        if len(ids) > self.config.max_prompt_tokens:
            raise ApiError(400, f"the chat is {len(ids)} tokens; the limit is {self.config.max_prompt_tokens}")
        return memory, list(ids)
