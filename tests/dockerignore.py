"""The build context `docker build` sends: the working tree filtered by .dockerignore.

Docker's rules (moby/patternmatcher): a pattern is matched against the path
relative to the context root (a leading `/` is dropped), `*` and `?` stay
within one path element, `**` spans any number of them, a pattern that
matches a directory excludes all under it, `!` re-includes, and the last
matching rule wins. Unlike .gitignore, `build` names only the top-level one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern[str]
    include: bool


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def parse(text: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().lstrip("/").rstrip("/")
        rules.append(Rule(_regex(pattern), include))
    return rules


def excluded(path: str, rules: list[Rule]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for rule in rules:
        if any(rule.regex.fullmatch(p) for p in prefixes):
            verdict = not rule.include
    return verdict


def tree_files(root: Path) -> list[str]:
    """The working tree's files as a clone plus local work has them (git's view)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = [p for p in listed.split("\0") if p]
    return sorted(p for p in paths if (root / p).is_symlink() or (root / p).is_file())


def context_files(root: Path) -> list[str]:
    rules = parse((root / ".dockerignore").read_text())
    return [p for p in tree_files(root) if not excluded(p, rules)]


def copy_context(root: Path, dest: Path) -> list[str]:
    """Copy the build context into `dest` (symlinks as symlinks, as docker does)."""
    files = context_files(root)
    for rel in files:
        source, target = root / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copy2(source, target)
    return files
