"""Text from outside, made safe where it lands: a terminal, a spreadsheet, a name.

Participants are adversaries, and so is anything a task or a host prints. Three places
turn their text into something else than text, and each has one function here:

- a terminal obeys escape sequences: `printable` strips C0 and C1 control characters
  (all but newline and tab), whole ESC and C1 sequences (OSC 52 clipboard writes, clear
  screen, cursor moves, window titles) and the bidirectional controls that reorder what
  is shown. Every renderer of the CLI passes what it prints through it. JSON output is
  not touched: `json.dumps` escapes every control and non-ASCII character (`\\u001b`),
  so the raw text travels to the program reading it without reaching a terminal as is;
- a spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` (and tab or carriage
  return, which some strip first) as a formula: `csv_cell` prefixes such a text cell with
  an apostrophe, the mark that makes spreadsheets show it as text. Numbers (scores,
  times, counts, including negative ones such as -0.5) are written as numbers;
- a name (team, submission, event, a participants file's lines) is compared, ranked and
  printed to others: `check_name` NFKC-normalises it (a full-width or ligature spelling
  is the same name as its plain one) and refuses the invisible ones (Unicode categories
  Cc, Cf, Zl, Zp, and lone surrogates from undecodable command-line bytes), so no team
  can pose as another with a bidi override or a zero-width character. Spaces around a
  name are dropped.
"""

import re
import unicodedata

from datarun.errors import UsageError

# Whole escape sequences first, so their parameters do not remain as litter:
# CSI (ESC [ ... final byte), OSC and the other string commands (ESC ] P X ^ _ ... up to
# BEL or the string terminator, or to the end), two-byte escapes, and their C1 forms.
_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# What is left of C0 (but tab and newline), DEL, C1, and the bidi controls
# (ALM, LRM, RLM, LRE/RLE/PDF/LRO/RLO, LRI/RLI/FSI/PDI).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Cs": "a lone surrogate (bytes that are not UTF-8)",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def printable(text) -> str:
    """`text` as a terminal may show it: no control character but newline and tab.

    A carriage return becomes a newline (CR LF one newline), so a line cannot be
    overwritten by what follows it."""
    text = "" if text is None else str(text)
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to look for
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _SEQUENCES.sub("", text))


def csv_cell(value):
    """A value for a CSV cell: numbers as they are, text that a spreadsheet would run as a
    formula behind an apostrophe."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def csv_row(row: dict) -> dict:
    return {key: csv_cell(value) for key, value in row.items()}


def name_key(value: str) -> str:
    """A name as it is stored, for looking one up: NFKC, no spaces around it."""
    return unicodedata.normalize("NFKC", value).strip()


def check_name(value: str, what: str) -> str:
    """A name NFKC-normalised and without spaces around it; UsageError naming the first
    character of a refused category by its code point."""
    value = unicodedata.normalize("NFKC", value)
    for char in value:
        kind = REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind:
            name = unicodedata.name(char, "")
            raise UsageError(
                f"{what} {value!r} holds U+{ord(char):04X}{' ' + name if name else ''}, {kind}: "
                "type the name without it")
    return value.strip()
