"""The run store: everything about run folders: create, lock, write, checksum, read, repair.

- :mod:`.store`: atomic writes, checksummed checkpoints, verified reads (re-exports :mod:`.folder`).
- :mod:`.folder`: the run folder itself, its lock, the store's errors.
- :mod:`.checksums`: the sha256 manifest of the checkpoints in one folder; ``torch_load``.
- :mod:`.derived`: values computed from a run's checkpoint, kept in its folder (``derived/<name>.json``).
"""
