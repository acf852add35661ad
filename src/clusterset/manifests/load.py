"""Read `DIR/*.yaml` (multi-document, or `kind: List` as `kubectl get -o yaml` writes it).

Bad input never loses state: a document that fails to parse or convert is
reported as one line (file, document index, kind/name, field) and the last
good version of what that file held is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from clusterset.model import convert
from clusterset.model.bag import Objects, add_object
from clusterset.model.ids import ClusterId

SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's loader when PyYAML was built with it: ~7x faster on large folders (measured).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _documents(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(index, document, parse error) for each YAML document; errors do not stop the rest."""
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_data():
            try:
                yield index, loader.get_data(), None
            except yaml.YAMLError as exc:
                yield index, None, _yaml_problem(exc)
                return
            index += 1
    except yaml.YAMLError as exc:
        yield index, None, _yaml_problem(exc)
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def _items(doc: Any) -> Iterator[tuple[str, Any]]:
    """Flatten `kind: List` (and *List kinds) into items with their index suffix."""
    if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
        for i, item in enumerate(doc.get("items") or []):
            yield f".items[{i}]", item
    else:
        yield "", doc


class FolderReader:
    """Reads one folder again and again, keeping each file's last good objects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._good: dict[Path, dict[str, Objects]] = {}
        self._parsed: dict[Path, tuple[tuple[int, int, int], Objects, list[str]]] = {}

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.suffix in SUFFIXES and p.is_file())

    def read(self) -> tuple[Objects, list[str]]:
        """All objects of the folder now, and one error line per bad document."""
        out = Objects()
        errors: list[str] = []
        seen: set[Path] = set()
        for path in self.files():
            seen.add(path)
            objs, errs = self._read_file(path)
            out.merge(objs)
            errors.extend(errs)
        for gone in set(self._good) - seen:
            del self._good[gone]
        for gone in set(self._parsed) - seen:
            del self._parsed[gone]
        return out, errors

    def _read_file(self, path: Path) -> tuple[Objects, list[str]]:
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        cached = self._parsed.get(path)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1], cached[2]  # unchanged since the last read: no re-parse
        objs, errors = self._parse_file(path)
        if stamp is not None:
            self._parsed[path] = (stamp, objs, errors)
        return objs, errors

    def _parse_file(self, path: Path) -> tuple[Objects, list[str]]:
        previous = self._good.get(path, {})
        current: dict[str, Objects] = {}
        errors: list[str] = []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: unreadable: {exc}")
            return _union(previous), errors
        for index, doc, problem in _documents(text):
            if problem is not None:
                errors.append(f"{path}: document {index}: {problem}")
                # Keep the last good objects of every document from here on.
                current.update({k: v for k, v in previous.items() if _doc_index(k) >= index})
                break
            if doc is None:
                continue
            for suffix, item in _items(doc):
                slot = f"{index}{suffix}"
                one = Objects()
                try:
                    add_object(one, item)
                except convert.ObjectError as exc:
                    errors.append(f"{path}: document {slot}: {exc}")
                    if slot in previous:
                        current[slot] = previous[slot]
                    continue
                current[slot] = one
        self._good[path] = current
        return _union(current), errors


def _doc_index(slot: str) -> int:
    return int(slot.split(".", 1)[0])


def _union(parts: Mapping[str, Objects]) -> Objects:
    out = Objects()
    for slot in sorted(parts, key=lambda s: (_doc_index(s), s)):
        out.merge(parts[slot])
    return out


def cluster_name(folder: Path, objs: Objects) -> ClusterId:
    """A folder's cluster ID: its ClusterProperty cluster.clusterset.k8s.io, else its name."""
    from clusterset.model.ids import cluster_id

    return cluster_id(objs.properties.get(convert.CLUSTER_ID_PROPERTY, folder.name))
