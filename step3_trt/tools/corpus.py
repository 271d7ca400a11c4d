"""A text corpus built offline from documentation that ships with Python itself.

Documents are, in a fixed order:
1. the docstrings (`inspect.getdoc`) of a fixed, sorted list of standard-library modules and of
   their submodules, and within each module of the classes and functions it defines itself and
   of those classes' methods and properties (dunder names are skipped, except `__init__`);
2. the Python language-reference help topics in `pydoc_data.topics` (what `help("if")` shows);
3. the docstrings of the pip and setuptools sources in the wheels that `ensurepip` bundles with
   the standard library, read with `ast` (nothing from them is imported or run).

Documents longer than `MAX_DOC_CHARS` are cut at paragraph boundaries; exact duplicates are
dropped (the first occurrence is kept), as are documents shorter than `MIN_DOC_CHARS` and the few
that hold control characters other than newlines.

The split is by document and deterministic: a document's bucket is the SHA-256 of its first
`KEY_CHARS` characters (whitespace collapsed) modulo 1000, so near-copies that open the same way
(setuptools vendors distutils, for one) land in the same split. Buckets [0, 40) are held-out
evaluation text, [40, 52) calibration text, the rest training text; the splits never share a
document. Within a split the documents keep corpus order and are joined by a blank line.

The corpus depends on the Python build (docstrings change between releases); the committed
`data/heldout.txt` and `data/calib.txt` were produced with the version in TRAINING.json.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import pkgutil
import sys
import sysconfig
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# Top-level modules and packages whose documentation forms the corpus (sorted). Modules with side
# effects on import (`this`, `antigravity`, `idlelib`), test suites and Windows-only modules are
# left out; modules missing from an interpreter build are skipped.
MODULES: tuple[str, ...] = tuple(sorted("""
    abc argparse array ast asyncio base64 bdb binascii bisect builtins bz2 cProfile calendar cmath
    cmd code codecs codeop collections colorsys compileall concurrent configparser contextlib
    contextvars copy copyreg csv ctypes curses dataclasses datetime dbm decimal difflib dis doctest
    email enum errno faulthandler filecmp fileinput fnmatch fractions ftplib functools gc getopt
    getpass gettext glob graphlib gzip hashlib heapq hmac html http imaplib importlib inspect io
    ipaddress itertools json keyword linecache locale logging lzma mailbox marshal math mimetypes
    mmap modulefinder multiprocessing netrc numbers opcode operator optparse os pathlib pdb pickle
    pickletools pkgutil platform plistlib poplib posixpath pprint profile pstats pty py_compile
    pyclbr pydoc queue quopri random re reprlib rlcompleter runpy sched secrets select selectors
    shelve shlex shutil signal site smtplib socket socketserver sqlite3 ssl stat statistics string
    stringprep struct subprocess symtable sys sysconfig tabnanny tarfile tempfile textwrap threading
    time timeit token tokenize tomllib trace traceback tracemalloc types typing unicodedata
    unittest urllib uuid warnings weakref wsgiref xml xmlrpc zipapp zipfile zipimport zlib zoneinfo
    distutils lib2to3 tkinter turtle _collections_abc _compat_pickle _markupbase _osx_support
    _py_abc _pydecimal _pyio _sitebuiltins _strptime _threading_local _weakrefset
""".split()))

# Submodule name parts that are never descended into.
SKIP_PARTS = ("test", "tests", "__main__", "windows_events", "windows_utils", "popen_spawn_win32")
MIN_DOC_CHARS = 40
MAX_DOC_CHARS = 3000
KEY_CHARS = 120
DOC_SEPARATOR = "\n\n"
HELDOUT_BUCKETS = range(0, 40)
CALIB_BUCKETS = range(40, 52)

DESCRIPTION = ("Docstrings of Python standard-library modules (submodules, classes, functions, "
               "methods), the pydoc language-reference topics, and the docstrings of the pip and "
               "setuptools wheels bundled by ensurepip; deduplicated, long documents cut at "
               "paragraphs; split by SHA-256(first 120 chars) mod 1000: [0,40) held-out, "
               "[40,52) calibration, rest train.")


@dataclass(frozen=True)
class Document:
    name: str  # where the text came from, e.g. "json.dumps" or "pydoc:if#2"
    text: str


@dataclass(frozen=True)
class Splits:
    train: list[Document]
    heldout: list[Document]
    calib: list[Document]

    @staticmethod
    def join(docs: list[Document]) -> str:
        """One split as a single text, the form written to `data/*.txt`."""
        return DOC_SEPARATOR.join(d.text for d in docs) + "\n"


def module_names(modules: tuple[str, ...] = MODULES) -> list[str]:
    """The importable modules: each listed one, then its public submodules in sorted order."""
    out: list[str] = []
    for name in modules:
        module = _import(name)
        if module is None:
            continue
        out.append(name)
        if hasattr(module, "__path__"):
            subs = sorted(info.name for info in pkgutil.walk_packages(module.__path__, name + ".")
                          if not any(p.startswith("_") or p in SKIP_PARTS
                                     for p in info.name.split(".")[1:]))
            out += [s for s in subs if _import(s) is not None]
    return out


def _import(name: str) -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # missing C extension, platform-only module, ...
            return None


def _docstrings(module: ModuleType) -> Iterator[tuple[str, str | None]]:
    """(qualified name, docstring) of a module and of the objects it defines."""
    name = module.__name__
    yield name, inspect.getdoc(module)
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("__") or getattr(obj, "__module__", None) != name:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        yield f"{name}.{attr}", inspect.getdoc(obj)
        if inspect.isclass(obj):
            for member, value in sorted(vars(obj).items()):
                doc = getattr(value, "__doc__", None)
                dunder = member.startswith("__") and member != "__init__"
                if not dunder and isinstance(doc, str):
                    yield f"{name}.{attr}.{member}", inspect.cleandoc(doc)


def _pydoc_topics() -> Iterator[tuple[str, str | None]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for key in sorted(topics):
        yield f"pydoc:{key}", topics[key].strip()


def _bundled_wheel_docstrings() -> Iterator[tuple[str, str | None]]:
    """Docstrings of every module, class and function in the wheels under `ensurepip/_bundled`."""
    bundled = Path(sysconfig.get_paths()["stdlib"]) / "ensurepip" / "_bundled"
    for wheel in sorted(bundled.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            for path in sorted(n for n in z.namelist() if n.endswith(".py")):
                try:
                    tree = ast.parse(z.read(path))
                except (SyntaxError, ValueError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                        label = getattr(node, "name", "")
                        yield f"{wheel.name}:{path}:{label}", ast.get_docstring(node)


def _pieces(text: str) -> list[str]:
    """Cut `text` at blank lines into pieces of at most MAX_DOC_CHARS (a longer paragraph stays
    whole)."""
    pieces: list[str] = []
    current = ""
    for para in text.split("\n\n"):
        if current and len(current) + 2 + len(para) > MAX_DOC_CHARS:
            pieces.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def build_documents(modules: tuple[str, ...] = MODULES) -> list[Document]:
    """Every corpus document, deduplicated, in corpus order."""
    def sources() -> Iterator[tuple[str, str | None]]:
        for name in module_names(modules):
            yield from _docstrings(sys.modules[name])
        yield from _pydoc_topics()
        yield from _bundled_wheel_docstrings()

    seen: set[str] = set()
    docs: list[Document] = []
    with warnings.catch_warnings():  # reading some attributes warns (deprecated aliases)
        warnings.simplefilter("ignore")
        pairs = list(sources())
    for name, raw in pairs:
        if not raw:
            continue
        text = "\n".join(line.rstrip() for line in raw.strip().expandtabs(4).splitlines())
        for i, piece in enumerate(_pieces(text)):
            if len(piece) < MIN_DOC_CHARS or piece in seen or not _clean(piece):
                continue
            seen.add(piece)
            docs.append(Document(name if i == 0 else f"{name}#{i}", piece))
    return docs


def _clean(text: str) -> bool:
    return all(ch == "\n" or ch.isprintable() for ch in text)


def bucket(text: str) -> int:
    """The document's split bucket in [0, 1000), from the opening of its text alone."""
    key = " ".join(text.split())[:KEY_CHARS]
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 1000


def split_documents(docs: list[Document]) -> Splits:
    train, heldout, calib = [], [], []
    for doc in docs:
        b = bucket(doc.text)
        (heldout if b in HELDOUT_BUCKETS else calib if b in CALIB_BUCKETS else train).append(doc)
    return Splits(train, heldout, calib)


@functools.lru_cache(maxsize=2)
def cached_documents(modules: tuple[str, ...] = MODULES) -> tuple[Document, ...]:
    """`build_documents`, built once per process (the build imports and parses for seconds)."""
    return tuple(build_documents(modules))


def build_splits(modules: tuple[str, ...] = MODULES) -> Splits:
    return split_documents(list(cached_documents(modules)))
