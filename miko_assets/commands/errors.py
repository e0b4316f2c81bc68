"""One line for each failure a user can cause: what went wrong and what to do about it.

Anything not recognised here is a bug in miko and keeps its traceback.
"""

from __future__ import annotations

import json
import sys

USER_ERROR_EXIT = 2


def explain(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug."""
    message = _message(exc)
    return None if message is None else " ".join(message.split())


def _message(exc: BaseException) -> str | None:
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename} is a folder, not a file: give the path of the file itself"
    if isinstance(exc, NotADirectoryError):
        return f"{exc.filename}: a part of this path is a file, not a folder: check the path"
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder: {exc.filename}: check the path" if exc.filename else f"{exc}: check the path"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}: give this user access to it, or use another path"
    if isinstance(exc, UnicodeDecodeError):
        return f"{exc.reason} at byte {exc.start}: save the file as UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}: fix the file"
    if isinstance(exc, OSError):
        return f"{exc}: check the path and the disk"
    warehouse = sys.modules.get("miko_assets.warehouse.warehouse")
    if warehouse is not None and isinstance(exc, warehouse.WarehouseLockTimeout):
        return (f"the warehouse is locked by another process ({exc}): wait for the running `dagster dev` "
                "run or `miko` command to finish, then try again")
    duckdb = sys.modules.get("duckdb")
    if duckdb is not None and isinstance(exc, duckdb.TransactionException):
        return f"another process changed the same rows at the same time ({exc}): run the command again"
    if duckdb is not None and isinstance(exc, duckdb.IOException):
        return f"the warehouse file could not be used ({exc}): check its path, permissions and free disk space"
    provider = sys.modules.get("miko_assets.llm.provider_interface")
    if provider is not None and isinstance(exc, provider.ProviderError):
        return (f"the provider failed ({exc}): check its base URL (MIKO_OPENAI_BASE_URL), key and network, "
                "then try again")
    if isinstance(exc, (ValueError, LookupError)):
        return str(exc)
    return None
