"""The one unfinished status line on stderr.

A status line (a progress count with its rate) is rewritten in place with a carriage return and
left without a newline. Whatever else is printed to stderr while it is open would be glued to its
end, so everything goes through this module, which knows whether a line is open:

- status(text): shows text as the status line, replacing the previous one;
- end(): finishes the status line with a newline, if one is open (call it before printing an
  error, a warning or a result);
- line(text): end(), then prints text as a line of its own.

Imports nothing heavy: preparation uses it without loading TensorFlow.
"""

import sys

_width = 0  # characters of the open status line; 0 when none is open


def status(text):
    """Replaces the open status line (or opens one) with text, padded to erase a longer previous one."""
    global _width
    sys.stderr.write("\r" + text.ljust(_width))
    sys.stderr.flush()
    _width = max(len(text), 1)


def end():
    """Finishes the open status line with a newline; does nothing when none is open."""
    global _width
    if _width:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _width = 0


def line(text):
    """Prints text on a line of its own below any open status line."""
    end()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
