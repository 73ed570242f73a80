"""The Derm1M disease ontology: node paths, label lookup, relatives and distance.

Nodes are identified by their path from the root (a tuple of names), never by name alone: the flat
`ontology.json` shares `melanocytic` / `non-melanocytic` between `benign` and `malignant`, so a
name such as "Melanocytic nevus" may have two candidate paths. The nested tree (when given) splits
those children between the two branches; otherwise the row's `hierarchical_disease_label` decides.
Labels are matched against known node names, never split on "," blindly (29 names contain commas).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

Path_ = tuple[str, ...]
_SPACES = re.compile(r"\s+")


def norm(name: str) -> str:
    """Lower-case, unify quotes and spaces, drop trailing commas ("Lichen simplex chronicus, ")."""
    name = name.replace("\u2019", "'").replace("\u2018", "'").lower()
    return _SPACES.sub(" ", name).strip().strip(",").strip()


def display(name: str) -> str:
    """Short human name of a node: the first of its comma-separated synonyms."""
    return name.split(",")[0].strip() or name


def sub_ontology(paths) -> dict[str, list[str]]:
    """The part of a flat ontology (`{node: [children]}` with `root`) that holds the given root-to-node paths.

    Like the real file it lists a shared key such as `melanocytic` once although it sits under both
    `benign` and `malignant`, so nevus and melanoma share one child list; rows' hierarchical labels
    disambiguate.
    """
    flat: dict[str, list[str]] = {"root": []}
    for path in paths:
        parent = "root"
        for node in path:
            if node not in flat[parent]:
                flat[parent].append(node)
            flat.setdefault(node, [])
            parent = node
    return flat


@dataclass(frozen=True)
class Resolution:
    paths: tuple[Path_, ...]    # one path per diagnosis named in the label (empty if none)
    problem: str = ""           # why the label could not be resolved ("" = fine)
    detail: str = ""            # the offending name
    hier_nodes: tuple[str, ...] = ()  # known node names found in the hierarchical label, in order


class Ontology:
    def __init__(self, flat: dict[str, list[str]], tree: dict | None = None, source: str = "ontology"):
        if "root" not in flat:
            raise ValueError(f"{source}: flat ontology needs a 'root' key")
        missing = sorted({c for kids in flat.values() for c in kids} - set(flat))
        if missing:
            raise ValueError(f"{source}: children without their own key: {missing[:5]}")
        self.source = source
        self.children: dict[Path_, list[Path_]] = {}
        self._by_name: dict[str, list[Path_]] = {}
        self._copies = self._tree_copies(tree) if tree else {}
        self._walk(flat, "root", (), tree)
        self.paths: list[Path_] = [p for p in self.children]  # depth-first order
        self.order = {p: i for i, p in enumerate(self.paths)}
        self.top: list[Path_] = [p for p in self.paths if len(p) == 1]
        self._alias: dict[str, str] = {}
        full = set(self._by_name)
        clash: set[str] = set()
        for key in full:
            for part in key.split(","):
                part = part.strip()
                if part and part != key and part not in full:
                    if part in self._alias and self._alias[part] != key:
                        clash.add(part)
                    self._alias[part] = key
        for part in clash:
            del self._alias[part]
        self._longest = max(k.count(",") for k in full) + 1

    @classmethod
    def load(cls, path: str | Path, tree_path: str | Path | None = None) -> "Ontology":
        path = Path(path)
        try:
            flat = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read ontology JSON ({e})") from e
        tree = json.loads(Path(tree_path).read_text(encoding="utf-8")) if tree_path else None
        return cls(flat, tree, source=str(path))

    def _walk(self, flat, name, path, subtree):
        kids = flat[name]
        if path:
            self.children[path] = []
            self._by_name.setdefault(norm(name), []).append(path)
            if subtree is not None and len(self._copies.get(name, ())) > 1:
                # A shared key (melanocytic under benign and malignant): keep the children the nested
                # tree puts under this copy, drop those it puts under the other; keep unplaced ones.
                elsewhere = set().union(*(kids_ for p, kids_ in self._copies[name] if p != path))
                kids = [k for k in kids if k in subtree or k not in elsewhere]
        for kid in kids:
            child = path + (kid,)
            if path:
                self.children[path].append(child)
            self._walk(flat, kid, child, subtree.get(kid) if isinstance(subtree, dict) else None)

    @staticmethod
    def _tree_copies(tree: dict) -> dict[str, list[tuple[Path_, set[str]]]]:
        """name -> [(path, child names)] for every place the nested tree uses that name."""
        out: dict[str, list] = {}

        def visit(node: dict, trail: Path_):
            for k, v in node.items():
                out.setdefault(k, []).append((trail + (k,), set(v)))
                visit(v, trail + (k,))
        visit(tree, ())
        return out

    # ---- structure -------------------------------------------------------------------------
    def all_names(self) -> list[str]:
        """Every normalised node name and comma-separated synonym part (to find disease names in free text)."""
        return sorted(set(self._by_name) | set(self._alias))

    def depth(self, p: Path_) -> int:
        """Level of a node: 1 for the seven top groups."""
        return len(p)

    def ancestors(self, p: Path_) -> list[Path_]:
        return [p[:i] for i in range(1, len(p))]

    def siblings(self, p: Path_) -> list[Path_]:
        return [q for q in (self.children[p[:-1]] if len(p) > 1 else self.top) if q != p]

    def cousins(self, p: Path_) -> list[Path_]:
        """Children of the parent's siblings."""
        return [c for s in (self.siblings(p[:-1]) if len(p) > 1 else []) for c in self.children[s]]

    def is_leaf(self, p: Path_) -> bool:
        return not self.children[p]

    def is_grouping(self, p: Path_) -> bool:
        """Structural groups, not diagnoses: the top level, and the lower-case inner nodes at depth
        2-3 (infectious, viral, benign, melanocytic, ...) — the ontology names its groups in lower case."""
        return len(p) == 1 or (len(p) <= 3 and bool(self.children[p]) and p[-1] == p[-1].lower())

    def related(self, a: Path_, b: Path_) -> bool:
        """True when one node is the other or its ancestor: such a pair can never be a negative."""
        n = min(len(a), len(b))
        return a[:n] == b[:n]

    def shared_depth(self, a: Path_, b: Path_) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    # ---- label lookup ----------------------------------------------------------------------
    def names_in(self, text: str) -> tuple[list[str], list[str]]:
        """Split a comma-joined text into known node names (longest match first) and unknown pieces."""
        pieces = [p.strip() for p in norm(text).split(",")]
        found, unknown, i = [], [], 0
        while i < len(pieces):
            for j in range(min(len(pieces), i + self._longest), i, -1):
                cand = ", ".join(pieces[i:j])
                key = cand if cand in self._by_name else self._alias.get(cand)
                if key is not None:
                    found.append(key)
                    i = j
                    break
            else:
                if pieces[i]:
                    unknown.append(pieces[i])
                i += 1
        return found, unknown

    def candidates(self, name: str) -> list[Path_]:
        key = norm(name)
        return self._by_name.get(key) or self._by_name.get(self._alias.get(key, ""), [])

    @lru_cache(maxsize=65536)
    def resolve(self, label: str, hier: str = "") -> Resolution:
        """Paths of the diagnoses named in `label`, disambiguated with the hierarchical label."""
        if not label.strip():
            return Resolution((), "no diagnosis")
        hier_names, _ = self.names_in(hier) if hier else ([], [])
        key = norm(label)
        names = [key] if key in self._by_name else ([self._alias[key]] if key in self._alias else None)
        if names is None:
            names, unknown = self.names_in(label)
            if unknown:
                return Resolution((), "label not in ontology", repr(unknown[0]), tuple(hier_names))
        paths = []
        hier_set = set(hier_names)
        for name in dict.fromkeys(names):
            cands = self._by_name[name]
            if len(cands) > 1:
                scores = [sum(norm(n) in hier_set for n in c) for c in cands]
                best = max(scores)
                cands = [c for c, s in zip(cands, scores) if s == best]
                if len(cands) > 1:
                    where = " / ".join(" > ".join(c[:-1]) for c in cands)
                    return Resolution((), "ambiguous benign/malignant label",
                                      f"{name!r} under {where}", tuple(hier_names))
            paths.append(cands[0])
        return Resolution(tuple(paths), "", "", tuple(hier_names))
