#!/usr/bin/env python3
"""Fails when the top-level modules of a crate (or of a module folder)
import each other in a circle.

    python3 .ci/module-circles.py actors/src src/store/embedded

Reads every `crate::<module>` path (and `super::<module>` that climbs back
to the folder given) in each file's code (comments and the
`#[cfg(test)] mod tests` block left out), draws an edge from the file's
top-level module to each module it names, and prints every circle. Text, not
a compiler: a path built by a macro is not seen. Used by `.ci/run` so the
actors crate stays free of import circles (issue 12)."""
import pathlib
import re
import sys


def edges_of(root):
    edges = {}
    for f in sorted(root.rglob("*.rs")):
        parts = [p for p in f.relative_to(root).with_suffix("").parts if p not in ("mod", "lib")]
        if not parts or parts[-1] == "tests":
            continue
        top = parts[0]
        code = f.read_text().split("#[cfg(test)]\nmod tests")[0]
        code = "\n".join(line.split("//")[0] for line in code.splitlines())
        names = set(re.findall(r"crate::(\w+)", code))
        # `use crate::{a::…, b, …};`: the first name of each item of the tree.
        for tree in re.findall(r"crate::\{(.*?)\};", code, re.S):
            depth, item = 0, ""
            for ch in tree + ",":
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    m = re.match(r"\s*(\w+)", item)
                    if m:
                        names.add(m.group(1))
                    item = ""
                else:
                    item += ch
        # `super::…` that climbs back to `root`, for a module folder such as
        # src/store/embedded whose files name each other that way.
        for supers, rest in re.findall(r"((?:super::)+)(\{.*?\}|\w+)", code, re.S):
            if len(parts) - supers.count("super::") == 0:
                names.update(re.findall(r"(?:^|[{,])\s*(\w+)", rest.strip("{}") if rest.startswith("{") else rest))
        modules = {n for n in names if (root / f"{n}.rs").exists() or (root / n).is_dir()}
        edges.setdefault(top, set()).update(modules - {top})
    return edges


def circles(edges):
    found = set()

    def walk(start, node, path):
        for nxt in edges.get(node, ()):
            if nxt == start:
                i = path.index(min(path))
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in path:
                walk(start, nxt, path + [nxt])

    for node in edges:
        walk(node, node, [node])
    return sorted(found)


failed = False
for arg in sys.argv[1:]:
    root = pathlib.Path(arg)
    found = circles(edges_of(root))
    for c in found:
        print(f"import circle in {root}: {' -> '.join(c + (c[0],))}")
    failed |= bool(found)
    if not found:
        print(f"{root}: no import circle between its top-level modules")
sys.exit(1 if failed else 0)
