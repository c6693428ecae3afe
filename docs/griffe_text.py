"""A griffe extension for the API page: the project's docstrings are plain text, where
`out/<name>/<run-id>/` means a path, not HTML tags. Angle brackets outside code spans are escaped
so that Markdown shows them."""

import re

import griffe

_CODE = re.compile(r"(`[^`]*`)")


def as_text(docstring):
    """The docstring with < and > outside `code` written as entities."""
    parts = _CODE.split(docstring)
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;")
                   for part in parts)


class PlainTextDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = as_text(obj.docstring.value)
