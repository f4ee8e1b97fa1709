"""On-disk cache of class-name embeddings (docs/research/method.md Sec. 1: T0 is computed once).

Each result is a safetensors file named by the SHA-256 of the spec, the template(s), the
aliases, the class names and the size and mtime of the local files the spec reads (bank
files, a local checkpoint or model folder). A cache hit reads that file and never builds
the encoder; a file that cannot be used (unreadable, without its tensor, another dtype than
float32, another number of dimensions, rows or width, NaN or inf) is announced on stderr and
computed again.
"""

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipfuse import paths
from clipfuse.errors import ClipfuseError, announce, one_line
from clipfuse.fileio import atomic_write
from clipfuse.text.aliases import apply_aliases
from clipfuse.text.base import validate_class_names
from clipfuse.text.prompts import DEFAULT_TEMPLATE, template_list
from clipfuse.text.registry import create_text_encoder, split_spec

_KEY_VERSION = 1
_TENSOR = "embeddings"


def cache_key(
    spec: str,
    class_names: Sequence[str],
    template: str | Sequence[str] = DEFAULT_TEMPLATE,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """Hex SHA-256 identifying one embedding matrix."""
    encoder_class, argument = split_spec(spec)
    sources = []
    for path in encoder_class.source_files(argument):
        stat = path.stat()
        sources.append([str(path.resolve()), stat.st_mtime_ns, stat.st_size])
    payload = {
        "version": _KEY_VERSION,
        "spec": spec,
        "template": template if isinstance(template, str) else list(template),
        "aliases": sorted((aliases or {}).items()),
        "class_names": list(class_names),
        "sources": sources,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _problem(embeddings: torch.Tensor, rows: int, width: int | None) -> str | None:
    """Why a matrix cannot stand for ``rows`` class embeddings of ``width`` (None: any
    positive width), or None."""
    shape = "x".join(map(str, embeddings.shape))
    if embeddings.dtype != torch.float32 or embeddings.ndim != 2:
        expected = f"{rows}x{width or 'width'}"
        return f"holds a {shape} {embeddings.dtype} tensor, expected a {expected} float32 matrix"
    columns = embeddings.shape[1]
    if embeddings.shape[0] != rows or columns == 0 or (width is not None and columns != width):
        of_width = f" of width {width}" if width else ""
        plural = "s" if rows != 1 else ""
        return f"holds a {shape} matrix, expected {rows} row{plural} (one per class){of_width}"
    if not bool(torch.isfinite(embeddings).all()):
        return "holds values that are not finite (NaN or inf)"
    return None


def _read(path: Path, rows: int, width: int | None) -> torch.Tensor | None:
    """The cached matrix; None when absent, or when it cannot be used (unreadable, without its
    tensor, another dtype, shape or width, not finite: announced), so that it is computed
    again."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        problem = f"cannot be read ({one_line(error)})"
    else:
        embeddings = tensors.get(_TENSOR)
        problem = (
            f"holds no {_TENSOR!r} tensor"
            if embeddings is None
            else _problem(embeddings, rows, width)
        )
    if problem is None:
        return embeddings
    announce(f"text-embedding cache {path} {problem}: computing the embeddings again")
    return None


def _write(path: Path, embeddings: torch.Tensor, metadata: dict[str, str]) -> None:
    atomic_write(
        path, lambda temporary: save_file({_TENSOR: embeddings.contiguous()}, temporary, metadata)
    )


def embed_class_names(
    spec: str,
    class_names: Sequence[str],
    template: str | Sequence[str] = DEFAULT_TEMPLATE,
    aliases: Mapping[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """T0 for ``class_names`` (K x dim float32, CPU), from the cache or computed and stored.

    ``aliases`` maps user names to the names the encoder knows (e.g.
    :data:`~clipfuse.text.aliases.CAMVID_ALIASES` for a bank); it applies to every encoder.
    The cache lives in ``cache_dir`` or ``clipfuse.paths.cache_dir() / "text"``. ``width``:
    the width the caller needs (a trained model's); None: the one the spec fixes without
    loading anything (:meth:`~clipfuse.text.base.TextEncoder.spec_width`), if any. A cached
    matrix of another width is computed again; an encoder that gives another is an error.
    """
    names = validate_class_names(class_names)
    template_list(template)
    if width is None:
        encoder_class, argument = split_spec(spec)
        width = encoder_class.spec_width(argument)
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "text"
    path = folder / f"{cache_key(spec, names, template, aliases)}.safetensors"
    cached = _read(path, len(names), width)
    if cached is not None:
        return cached
    embeddings = create_text_encoder(spec).encode(apply_aliases(names, aliases), template)
    problem = _problem(embeddings, len(names), width)
    if problem is not None:  # never cached, never trained with
        raise ClipfuseError(f"text encoder {spec} gave embeddings that are unusable: {problem}")
    metadata = {
        "spec": spec,
        "template": json.dumps(template if isinstance(template, str) else list(template)),
        "aliases": json.dumps(dict(aliases or {})),
        "class_names": json.dumps(names),
    }
    _write(path, embeddings, metadata)
    return embeddings
