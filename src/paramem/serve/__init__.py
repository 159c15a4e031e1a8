"""`paramem serve`: an OpenAI-compatible server over the store, built in three parts:

app.py       the HTTP API and the page (FastAPI); nothing in it blocks the event loop
engine.py    one thread owning the model: replies queued, decoded in mixed-adapter batches
memories.py  the LRU of loaded memories, named by identities that never repeat
jobs.py      uploads and forgets as a bounded queue of child processes
"""

from paramem.serve.app import MemoryServer, create_app
from paramem.serve.config import ServeConfig
from paramem.serve.errors import ApiError

__all__ = ["ApiError", "MemoryServer", "ServeConfig", "create_app"]
