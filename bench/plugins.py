"""User code: an object named `module:attribute`, imported from a user's package folder or an installed package, and
the hash of its package (workers of one study must run the same code)."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path


def import_object(name: str, code: str | None):
    """The object `module.path:Attribute`, with `code`'s parent folder on the import path when given (the folder is
    the package itself, as `examples/mynets` for `mynets.cnn:TextCNN`). Raises ValueError naming the cause."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{name!r}: expected module.path:ClassName, e.g. mynets.cnn:TextCNN")
    if code is not None:
        folder = Path(code).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"code {code!r}: no such folder")
        if module_name.split(".")[0] != folder.name:
            raise ValueError(f"code {code!r}: holds package {folder.name!r}, but {name!r} imports from "
                             f"{module_name.split('.')[0]!r}")
        if str(folder.parent) not in sys.path:
            sys.path.insert(0, str(folder.parent))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        # A missing dependency inside the user's module is not a bad path: name what failed to import.
        parts = module_name.split(".")
        if error.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise ValueError(f"cannot import {module_name!r}: {error}") from None
        raise ValueError(f"importing {module_name!r} failed inside it: {error}") from None
    except Exception as error:  # the user's module raised while it was imported
        raise ValueError(f"importing {module_name!r} raised {type(error).__name__}: {error}") from None
    if not hasattr(module, attribute):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ValueError(f"module {module_name!r} has no {attribute!r}; it has: {', '.join(public) or 'nothing'}")
    return getattr(module, attribute)


def code_hash(name: str) -> str:
    """SHA-256 (16 hex digits) of the Python files of the package that `module.path:Attribute` is imported from, names
    and contents in sorted order: the whole package, since the class may use any of it."""
    source = Path(importlib.import_module(name.partition(":")[0]).__file__).resolve()
    folder, files = source.parent, [source]  # a module outside any package: that file alone
    if (folder / "__init__.py").is_file():
        while (folder.parent / "__init__.py").is_file():  # up to the top package
            folder = folder.parent
        files = sorted(folder.rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
