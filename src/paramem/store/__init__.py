"""The store: per-user memory on disk, a standard PEFT adapter folder plus a SQLite manifest
(user.py; the manifest's tables in manifest.py, the MiLP slot in milp_slot.py, the serving token in
tokens.py).

    $PARAMEM_HOME/users/<user>/
        adapter/            -> versions/<n>: `PeftModel.from_pretrained(base, "adapter")` loads it as is
        versions/<n>/       adapter_config.json + adapter_model.safetensors, one per learned conversation
        manifest.sqlite     what was learned: conversations, teacher notes (for replay), settings
        milp/               the MiLP memory, beside it (`paramem search`):
            current.json    the version in use, its configuration, base model, dtype and search summary
            <n>/            its peft adapter (none for a configuration of 0 LoRAs)
            search/         trials.jsonl (one line per finished trial), pareto.json, pareto.png
        .lock               held by the one process allowed to change this user

A conversation is committed in this order: adapter written to a new version folder and flushed to
disk (fsync of each file and of the folders), manifest row and version number committed in one SQLite
transaction, then the `adapter` link swapped. A crash or a power cut at any point leaves the last
committed version in use, and nothing half-written is ever read.

Readers (`reading()`) hold a shared lock on the version they read (`versions/<n>.lock`); the writer
deletes an old version only when it can take that lock exclusively, so a version is never deleted
under a reader in any process. A version left behind that way goes at the next commit or repair.

User names are letters, digits and `_ . @ -`, starting with a letter or digit, so no name can leave
the store's folder. Two names that differ only in case are refused: on a case-insensitive file system
(macOS, Windows) they would share one folder.
"""
