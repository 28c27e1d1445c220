"""The run directory and the study storage.

A run directory holds ``budget.toml`` (copy of the budget), ``journal.log`` (Optuna journal, the default storage),
``study.txt`` (the study's name), ``storage.txt`` (the storage URL when it is not the journal) and ``results.json``
(written after the final hold-out check). Default location ``<cwd>/runs/<budget-stem>-<seed>``; every path is made
absolute before it reaches Optuna.

Storages (``--storage`` / ``[search] storage``):

* ``journal://PATH`` (default: the run directory's ``journal.log``): several processes on one machine. The append lock
  is an ``flock`` on ``PATH.lock``, which the kernel drops when its holder dies, so a killed run never blocks its
  resume (Optuna's open/symlink locks wait out a grace period instead). A torn last record (disk full, power loss)
  is cut off with a one-line warning before the next append; anything else that is not a journal record is a
  one-line error.
* ``postgresql://user@host/db`` (needs ``pip install 'dse[postgres]'``, psycopg 3; mapped to SQLAlchemy's
  ``postgresql+psycopg://``): several machines.
* SQLite is refused with several workers (it does not support concurrent writers reliably).

Trials left RUNNING by a dead process are found, failed and re-run the same way on every storage
(dse.search.liveness).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from dse.errors import DseError, SettingError

BUDGET_FILE, JOURNAL_FILE, RESULTS_FILE = "budget.toml", "journal.log", "results.json"
STORAGE_FILE, STUDY_FILE = "storage.txt", "study.txt"

SCHEMA_ATTEMPTS = 8


def default_run_dir(budget_path: str | Path, seed: int) -> Path:
    return Path.cwd() / "runs" / f"{Path(budget_path).stem}-{seed}"


@dataclass
class Prepared:
    run_dir: Path     # absolute
    url: str          # storage URL ('journal:///abs/run/journal.log' for the default)
    storage: object   # opened Optuna storage


def prepare(run_dir: str | Path, budget_path: str | Path, storage: str | None, workers: int = 1) -> Prepared:
    """Create the run directory, copy the budget (refusing a different budget when resuming), record the storage and
    return it opened."""
    run_dir = Path(run_dir).absolute()
    if run_dir.exists() and not run_dir.is_dir():
        raise SettingError("run_dir", run_dir, "exists and is not a directory; pass a directory path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError("run_dir", run_dir, f"cannot create it ({exc.strerror}); pass a writable directory path") \
            from None
    src = Path(budget_path).read_bytes()
    dst = run_dir / BUDGET_FILE
    if dst.exists() and dst.read_bytes() != src:
        raise DseError(f"{run_dir}: holds a study of a different budget ({dst}); use another run directory "
                       f"or delete {run_dir}")
    if not dst.exists():
        write_atomic(dst, src)
    if storage and storage.startswith("sqlite") and workers > 1:
        raise SettingError("search.storage", storage, f"SQLite does not support {workers} parallel workers; use the "
                           "default journal file or a PostgreSQL URL")
    sfile = run_dir / STORAGE_FILE
    if not storage:
        url = recorded_url(run_dir)
        return Prepared(run_dir, url, open_storage(url))
    opened = open_storage(storage)  # a bad URL fails here, before it is recorded in storage.txt
    if sfile.exists() and sfile.read_text().strip() != storage:
        raise DseError(f"{run_dir}: was run with storage {sfile.read_text().strip()}; use the same storage "
                       "or another run directory")
    write_atomic(sfile, (storage + "\n").encode())
    return Prepared(run_dir, storage, opened)


def recorded_url(run_dir: Path) -> str:
    """The storage URL of a run directory: storage.txt, else its journal file."""
    sfile = run_dir / STORAGE_FILE
    if sfile.exists():
        return sfile.read_text().strip()
    return f"journal://{(run_dir / JOURNAL_FILE).absolute()}"


# ---------------------------------------------------------------- storages


def sqlalchemy_url(url: str) -> str:
    """Plain ``postgresql://`` (and ``postgres://``) URLs use psycopg 3 (the ``dse[postgres]`` extra)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def open_storage(url: str):
    """An Optuna storage for a URL (``journal://PATH`` or an SQLAlchemy URL); DseError naming the URL if it fails."""
    if url.startswith("journal://"):
        return open_journal(Path(url[len("journal://"):]))
    if sqlalchemy_url(url).startswith("postgresql+psycopg://"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise DseError(f"storage '{url}': PostgreSQL needs psycopg 3; pip install 'dse[postgres]'") from None
    try:
        return _rdb_storage(sqlalchemy_url(url))
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver/OS errors of a user-given URL
        first = (str(exc).splitlines() or [""])[0]
        raise DseError(f"storage '{url}' (search.storage): cannot open it ({type(exc).__name__}: "
                       f"{first}); give e.g. postgresql://user@host/db, sqlite:////abs/path.db or "
                       "journal:///abs/path.log") from None


def _rdb_storage(url: str) -> RDBStorage:
    """RDBStorage; processes starting together on an empty database race on creating the schema
    (IntegrityError / duplicate table), so a failed attempt is retried: the next one finds the tables."""
    import sqlalchemy.exc

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class FlockLock:
    """Journal append lock: ``flock`` on ``PATH.lock``, held only while appending. The kernel releases it when the
    holder dies, so no stale lock and no grace period (interface of Optuna's journal file locks)."""

    def __init__(self, path: Path):
        self.path = str(path) + ".lock"
        self.fd = None

    def acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(self.path)  # a symlink left by Optuna's symlink lock (older dse runs): ours is a plain file
            return self.acquire()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class RepairingJournalBackend(JournalFileBackend):
    """Journal file whose appends first cut off a torn last record (a write cut short by a full disk or a power
    loss), so a half line can never be glued to the next record."""

    def __init__(self, path: Path):
        self.lock = FlockLock(path)
        super().__init__(str(path), lock_obj=self.lock)

    def append_logs(self, logs: list[dict]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with self.lock:
            drop_torn_tail(Path(self._file_path))
            with open(self._file_path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())


def drop_torn_tail(path: Path) -> int:
    """Truncate a last line without its newline (call with the journal lock held); warn once; bytes dropped."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        pos = size
        while pos > 0:  # find the last newline, reading backwards in blocks
            step = min(65536, pos)
            f.seek(pos - step)
            block = f.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                pos = pos - step + i + 1
                break
            pos -= step
        f.truncate(pos)
        f.flush()
        os.fsync(f.fileno())
    print(f"warning: {path}: dropped a torn last record ({size - pos} bytes, an interrupted write); "
          "completed trials are intact", file=sys.stderr)
    return size - pos


def check_journal(path: Path) -> None:
    """DseError (one line) unless every complete line of ``path`` is an Optuna journal record."""
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # torn last record: cut off before the next append, skipped by readers
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                rec = None
            if not isinstance(rec, dict) or "op_code" not in rec:
                raise DseError(f"{path}: line {i} is not an Optuna journal record, so this is not a dse journal "
                               "(or it was overwritten); restore it or use another run directory")


def open_journal(path: Path) -> JournalStorage:
    path = path.absolute()
    hint = "give a journal file in an existing directory (journal:///abs/path.log) or e.g. postgresql://user@host/db"
    if path.is_dir():
        raise DseError(f"storage 'journal://{path}': is a directory; {hint}")
    if not path.parent.is_dir():
        raise DseError(f"storage 'journal://{path}': directory {path.parent} does not exist; {hint}")
    if path.exists():
        check_journal(path)
    try:
        return JournalStorage(RepairingJournalBackend(path))
    except OSError as exc:
        raise DseError(f"storage 'journal://{path}': cannot open it ({exc.strerror}); {hint}") from None


# ---------------------------------------------------------------- studies of a storage


def study_names(storage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(run_dir: str | Path) -> optuna.Study:
    """Open the study of an existing run directory (DseError if there is none)."""
    run_dir = Path(run_dir).absolute()
    if not run_dir.exists():
        raise DseError(f"run directory {run_dir}: not found; pass the directory 'dse search' created "
                       "(runs/<budget>-<seed>)")
    if not run_dir.is_dir():
        raise DseError(f"run directory {run_dir}: is a file, not a run directory; pass the directory 'dse search' "
                       "created (runs/<budget>-<seed>)")
    if not (run_dir / JOURNAL_FILE).exists() and not (run_dir / STORAGE_FILE).exists():
        raise DseError(f"run directory {run_dir}: no {JOURNAL_FILE} or {STORAGE_FILE}; is it a 'dse search' "
                       "run directory?")
    storage = open_storage(recorded_url(run_dir))
    name = study_name_of(run_dir, storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise DseError(f"run directory {run_dir}: its storage holds no study '{name}'; run 'dse search' "
                       "first") from None


def study_name_of(run_dir: Path, storage) -> str:
    sfile = run_dir / STUDY_FILE
    if sfile.exists():
        return sfile.read_text().strip()
    names = study_names(storage)
    if len(names) == 1:
        return names[0]
    raise DseError(f"run directory {run_dir}: no {STUDY_FILE} and {len(names)} studies in its storage; "
                   "run 'dse search' first or pick one with 'dse report --list'")


# ---------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a uniquely named temporary file in the same directory and os.replace (several processes may write
    the same file at once; each reader sees one whole version)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        raise


def write_results(run_dir: str | Path, results: dict) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    write_atomic(path, json.dumps(results, indent=2, sort_keys=False).encode())
    return path


def read_results(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DseError(f"{path}: not valid JSON ({exc}); delete it and re-run 'dse search' to recreate it") from None
    if not isinstance(res, dict):
        raise DseError(f"{path}: expected a JSON object, got {type(res).__name__}; delete it and re-run 'dse search' "
                       "to recreate it")
    return res
