"""The run directory: ``budget.toml`` (copy of the budget), ``journal.log`` (Optuna JournalStorage) and
``results.json`` (written after the final hold-out check).

Default location ``runs/<budget-stem>-<seed>``. Any Optuna storage URL may replace the journal (PostgreSQL for several
machines; ``journal:///abs/path.log`` for a journal file elsewhere); the URL is remembered in ``storage.txt`` so ``dse report`` finds the study. SQLite is refused with several
workers (it does not support concurrent writers reliably).
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from dse.errors import DseError, SettingError

STUDY_NAME = "dse"
BUDGET_FILE, JOURNAL_FILE, RESULTS_FILE, STORAGE_FILE = "budget.toml", "journal.log", "results.json", "storage.txt"


def default_run_dir(budget_path: str | Path, seed: int) -> Path:
    return Path("runs") / f"{Path(budget_path).stem}-{seed}"


def prepare(run_dir: str | Path, budget_path: str | Path, storage: str | None, workers: int = 1):
    """Create the run directory, copy the budget (refusing a different budget when resuming), record the storage and
    return it opened (see storage_for)."""
    run_dir = Path(run_dir)
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
        dst.write_bytes(src)
    if storage and storage.startswith("sqlite") and workers > 1:
        raise SettingError("search.storage", storage, f"SQLite does not support {workers} parallel workers; use the "
                           "default journal file or a PostgreSQL URL")
    sfile = run_dir / STORAGE_FILE
    if not storage:
        return storage_for(run_dir)
    opened = _open_storage(storage)  # a bad URL fails here, before it is recorded in storage.txt
    if sfile.exists() and sfile.read_text().strip() != storage:
        raise DseError(f"{run_dir}: was run with storage {sfile.read_text().strip()}; use the same storage "
                       "or another run directory")
    sfile.write_text(storage + "\n")
    return opened


def _open_storage(url: str):
    """An Optuna storage for a URL (``journal://PATH`` or an SQLAlchemy URL); DseError naming the URL if it fails."""
    try:
        if url.startswith("journal://"):
            return JournalStorage(JournalFileBackend(url[len("journal://"):]))
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver/OS errors of a user-given URL
        first = (str(exc).splitlines() or [""])[0]
        raise DseError(f"storage '{url}' (search.storage): cannot open it ({type(exc).__name__}: "
                       f"{first}); give e.g. postgresql://user@host/db, sqlite:////abs/path.db or "
                       "journal:///abs/path.log") from None


def storage_for(run_dir: str | Path, storage: str | None = None):
    """The Optuna storage of a run: the given URL, the recorded one, or the journal file in the run directory."""
    run_dir = Path(run_dir)
    sfile = run_dir / STORAGE_FILE
    if storage is None and sfile.exists():
        storage = sfile.read_text().strip()
    if storage:
        return _open_storage(storage)
    return JournalStorage(JournalFileBackend(str(run_dir / JOURNAL_FILE)))


def load_study(run_dir: str | Path) -> optuna.Study:
    """Open the study of an existing run directory (DseError if there is none)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DseError(f"run directory {run_dir}: not found; pass the directory 'dse search' created (runs/<budget>-<seed>)")
    if not (run_dir / JOURNAL_FILE).exists() and not (run_dir / STORAGE_FILE).exists():
        raise DseError(f"run directory {run_dir}: no {JOURNAL_FILE} or {STORAGE_FILE}; is it a 'dse search' run directory?")
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=storage_for(run_dir))
    except KeyError:
        raise DseError(f"run directory {run_dir}: holds no study '{STUDY_NAME}'; run 'dse search' first") from None


def write_results(run_dir: str | Path, results: dict) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False))
    tmp.replace(path)
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
