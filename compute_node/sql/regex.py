"""PostgreSQL regular expressions (ARE) on top of Python's `re` (pure).

Theory of operation
-------------------
PostgreSQL's Advanced Regular Expressions and Python's `re` agree on the common core
(literals, `.`, bracket sets, `* + ? {m,n}` and their lazy forms, groups, `(?:`, look-
ahead and lookbehind, back-references, `\\d \\s \\w` and their negations, `^`). Where they
differ, this module either translates or refuses with 0A000, never guesses:

  * `$` is the end of the string in PostgreSQL (no newline-sensitive mode) -> `\\Z`;
    `.` matches a newline -> DOTALL.
  * The database runs with C ctype: `\\w`, `\\d`, case-insensitivity only know ASCII -> re.ASCII.
  * POSIX classes (`[[:alpha:]]`), collating elements, `\\m \\M \\y \\Y` word edges, `\\b`
    (a backspace in ARE, a word boundary in Python), `\\B`, `(?P...)`, atomic groups,
    possessive quantifiers, embedded options and `***` directors: 0A000.
  * Match extent. Python takes the first match its backtracking finds; PostgreSQL takes,
    at the same (leftmost) start, the longest match when the RE is greedy and the shortest
    when it is not, the RE's greediness being that of its first quantifier (alternation at
    the top level is always greedy). `longest_or_shortest` re-establishes that by trying
    full matches at the found start, so substring() and regexp_replace() return what
    PostgreSQL returns; the boolean operators do not care about extent. The search is
    bounded by REGEX_EXTENT_TEXT_CHARS_MAX (limits.py); beyond it the statement is 0A000.

An invalid pattern is 2201B, as PostgreSQL.
"""
from __future__ import annotations

import re

from quorumdb import errors, limits
from quorumdb.errors import SqlError

_CACHE: dict[tuple[str, bool], "Pattern"] = {}
_CACHE_MAX = 256


class Pattern:
    def __init__(self, compiled: re.Pattern, greedy: bool) -> None:
        self.compiled = compiled
        self.greedy = greedy
        self.groups = compiled.groups
        # A full match tried up to a shorter end would see that end as the string's end.
        self.end_sensitive = "\\Z" in compiled.pattern or "(?=" in compiled.pattern or "(?!" in compiled.pattern


def compile_pattern(pattern: str, case_insensitive: bool = False) -> Pattern:
    key = (pattern, case_insensitive)
    found = _CACHE.get(key)
    if found is not None:
        return found
    translated, greedy = _translate(pattern)
    flags = re.DOTALL | re.ASCII | (re.IGNORECASE if case_insensitive else 0)
    try:
        compiled = re.compile(translated, flags)
    except re.error as error:
        raise SqlError(errors.INVALID_REGULAR_EXPRESSION, f"invalid regular expression: {error}") from None
    except (OverflowError, RecursionError):
        raise SqlError(errors.INVALID_REGULAR_EXPRESSION, "invalid regular expression: too complex") from None
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    result = _CACHE[key] = Pattern(compiled, greedy)
    return result


def _unsupported(what: str) -> SqlError:
    return SqlError(errors.FEATURE_NOT_SUPPORTED, f"regular expression {what} is not supported")


def _translate(pattern: str) -> tuple[str, bool]:
    """(Python pattern, greedy) for an ARE; 0A000 for constructs the two engines read differently."""
    if pattern.startswith("***"):
        raise _unsupported("directors (***)")
    out: list[str] = []
    options = re.match(r"\(\?([a-z]*)\)", pattern)
    if options is not None:  # ARE embedded options, only at the start (as Python's global flags)
        if set(options.group(1)) - set("ic"):
            raise _unsupported(f"embedded options ({options.group(0)})")
        if options.group(1).rstrip("c").endswith("i") or ("i" in options.group(1) and "c" not in options.group(1)):
            out.append("(?i)")
        pattern = pattern[options.end():]
    greedy: bool | None = None
    depth = 0
    top_level_alternation = False
    index = 0
    length = len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\":
            if index + 1 >= length:
                raise SqlError(errors.INVALID_REGULAR_EXPRESSION, "invalid regular expression: invalid escape \\ sequence")
            following = pattern[index + 1]
            if following in "bB":  # a backspace and a backslash in ARE: rare enough to refuse
                raise _unsupported(f"escape \\{following}")
            out.append(_WORD_EDGES.get(following, pattern[index:index + 2]))
            index += 2
            continue
        if char == "[":
            end = _bracket_end(pattern, index)
            body = pattern[index:end]
            if "[." in body[1:] or "[=" in body[1:]:
                raise _unsupported("collating elements and equivalence classes in brackets")
            out.append(_POSIX_CLASS.sub(_posix_class, body[:1]) + _POSIX_CLASS.sub(_posix_class, body[1:]))
            index = end
            continue
        if char == "(":
            if pattern.startswith("(?", index):
                if not any(pattern.startswith(p, index) for p in ("(?:", "(?=", "(?!", "(?<=", "(?<!", "(?#")):
                    raise _unsupported(f"group syntax {pattern[index:index + 3]}")
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == "|" and depth == 0:
            top_level_alternation = True
        elif char == "$":
            out.append(r"\Z")
            index += 1
            continue
        elif char == "{" and not pattern[index + 1:index + 2].isdigit():
            out.append("\\{")  # a brace that starts no bound is a literal in ARE
            index += 1
            continue
        elif char in "*+?{":
            is_group_mark = char == "?" and bool(out) and out[-1] == "("  # (?: (?= ...: no quantifier
            if not is_group_mark:
                end = index + 1
                if char == "{":
                    close = pattern.find("}", index)
                    if close == -1 or not re.fullmatch(r"\d+(,\d*)?", pattern[index + 1:close]):
                        raise SqlError(errors.INVALID_REGULAR_EXPRESSION,
                                       "invalid regular expression: invalid repetition count(s)")
                    end = close + 1
                lazy = end < length and pattern[end] == "?"
                if end < length and pattern[end] == "+":
                    raise _unsupported("possessive quantifiers")
                if greedy is None:
                    greedy = not lazy
                out.append(pattern[index:end + (1 if lazy else 0)])
                index = end + (1 if lazy else 0)
                continue
        out.append(char)
        index += 1
    return "".join(out), True if top_level_alternation or greedy is None else greedy


# ARE word edges: \m start of a word, \M end of one, \y either, \Y neither (ASCII words, C ctype).
_WORD_EDGES = {"m": r"\b(?=\w)", "M": r"\b(?<=\w)", "y": r"\b", "Y": r"\B"}
_POSIX_CLASS = re.compile(r"\[:([a-z]+):\]")
# POSIX classes in the C locale (ASCII only, as PostgreSQL with C ctype).
_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "xdigit": "0-9A-Fa-f", "word": "a-zA-Z0-9_",
    "punct": r"!-/:-@\[-`{-~",
    "cntrl": "\\x00-\\x1f\\x7f", "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e",
}


def _posix_class(match: re.Match) -> str:
    members = _POSIX_CLASSES.get(match.group(1))
    if members is None:
        raise SqlError(errors.INVALID_REGULAR_EXPRESSION, "invalid regular expression: invalid character class")
    return members


def _bracket_end(pattern: str, start: int) -> int:
    """The index after the `]` closing the bracket expression at `start` (`]` first is literal)."""
    index = start + 1
    if index < len(pattern) and pattern[index] == "^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    while index < len(pattern):
        if pattern[index] == "\\":
            index += 2
            continue
        if pattern[index] == "[" and index + 1 < len(pattern) and pattern[index + 1] in ":.=":
            close = pattern.find(pattern[index + 1] + "]", index + 2)
            index = close + 2 if close != -1 else len(pattern)
            continue
        if pattern[index] == "]":
            return index + 1
        index += 1
    raise SqlError(errors.INVALID_REGULAR_EXPRESSION, "invalid regular expression: brackets [] not balanced")


def similar_to_are(pattern: str, escape: str | None = "\\") -> str:
    """The ARE a SIMILAR TO pattern stands for, as PostgreSQL's similar_to_escape writes it: the
    whole string must match; % and _ are .* and .; | * + ? {m,n} ( ) [ ] keep their meaning;
    . ^ $ and a backslash that is not the escape are literals."""
    out = ["^(?:"]
    after_escape = False
    in_brackets = False
    for char in pattern:
        if after_escape:
            if char == '"':
                raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                               "the SIMILAR TO escape-double-quote separator is not supported")
            out.append("\\" + char)  # as PostgreSQL: an escaped letter keeps its ARE meaning (#d is \d)
            after_escape = False
        elif escape and char == escape:
            after_escape = True
        elif in_brackets:
            out.append("\\\\" if char == "\\" else char)
            in_brackets = char != "]"
        elif char == "[":
            out.append(char)
            in_brackets = True
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        elif char == "(":
            out.append("(?:")
        elif char in ".^$\\":
            out.append("\\" + char)
        else:
            out.append(char)
    if after_escape:
        raise SqlError(errors.INVALID_ESCAPE_SEQUENCE, "invalid escape string",
                       hint="Escape string must be empty or one character.")
    out.append(")$")
    return "".join(out)


def search(pattern: Pattern, text: str, start: int = 0) -> re.Match | None:
    """The match PostgreSQL reports: leftmost, then longest (greedy RE) or shortest (non-greedy)."""
    found = pattern.compiled.search(text, start)
    if found is None:
        return None
    begin = found.start()
    if len(text) - begin > limits.REGEX_EXTENT_TEXT_CHARS_MAX:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f"regular expression matches in text longer than {limits.REGEX_EXTENT_TEXT_CHARS_MAX} "
                       "characters are not supported by substring() and regexp_replace()")
    if pattern.end_sensitive:  # only a full match to the real end can be tried (PostgreSQL's lazy = Python's)
        ends = [len(text)] if pattern.greedy and found.end() < len(text) else []
    else:
        ends = range(len(text), found.end(), -1) if pattern.greedy else range(begin, found.end())
    for end in ends:
        candidate = pattern.compiled.fullmatch(text, begin, end)
        if candidate is not None:
            return candidate
    return found


def matches(pattern: Pattern, text: str) -> bool:
    return pattern.compiled.search(text) is not None


def substring(pattern: Pattern, text: str) -> str | None:
    """substring(text FROM pattern): the first parenthesized subexpression's match, else the whole match."""
    found = search(pattern, text)
    if found is None:
        return None
    return found.group(1) if pattern.groups else found.group(0)


def parse_flags(flags: str) -> tuple[bool, bool]:
    """(global, case_insensitive) of regexp_replace's flags."""
    is_global = False
    case_insensitive = False
    for flag in flags:
        if flag == "g":
            is_global = True
        elif flag == "i":
            case_insensitive = True
        elif flag == "c":
            case_insensitive = False
        elif flag in "bemnpqstwx":
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'regular expression option "{flag}" is not supported')
        else:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f'invalid regular expression option: "{flag}"')
    return is_global, case_insensitive


def replace(pattern: Pattern, text: str, replacement: str, is_global: bool) -> str:
    """regexp_replace: `\\1`..`\\9` and `\\&` in the replacement name the match's parts."""
    out: list[str] = []
    position = 0
    search_from = 0
    while search_from <= len(text):
        found = search(pattern, text, search_from)
        if found is None:
            break
        out.append(text[position:found.start()])
        out.append(_expand(replacement, found, pattern.groups))
        position = found.end()
        if not is_global:
            break
        search_from = found.end() if found.end() > found.start() else found.end() + 1
        if found.end() == found.start() and found.start() < len(text):
            out.append(text[found.start()])
            position = found.start() + 1
    out.append(text[position:])
    return "".join(out)


def _expand(replacement: str, found: re.Match, groups: int) -> str:
    out: list[str] = []
    index = 0
    while index < len(replacement):
        char = replacement[index]
        if char == "\\" and index + 1 < len(replacement):
            following = replacement[index + 1]
            if following.isdigit() and following != "0":
                number = int(following)
                if number <= groups:
                    out.append(found.group(number) or "")
                index += 2
                continue
            if following == "&":
                out.append(found.group(0))
                index += 2
                continue
            if following == "\\":
                out.append("\\")
                index += 2
                continue
        out.append(char)
        index += 1
    return "".join(out)
