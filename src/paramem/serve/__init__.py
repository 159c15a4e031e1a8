"""`paramem serve`: an OpenAI-compatible server over the store, built in parts with one job each:

app.py       the HTTP API and the page (FastAPI); nothing in it blocks the event loop
server.py    what one server holds: the model, its memories, the engine and the jobs
engine.py    one thread owning the model: replies queued and decoded together, joining and
             leaving the batch between any two steps (continuous batching); reply.py a reply
memories.py  the LRU of loaded memories, named by identities that never repeat
jobs.py      uploads and forgets as a bounded queue of child processes
config.py    its settings; errors.py the errors it answers with
"""
