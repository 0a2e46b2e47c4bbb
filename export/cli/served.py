"""Served models (``triton://``) on the command line: the form named in help texts, the
commands a served model answers, and the refusal of one where a command needs the bundle's files."""
from __future__ import annotations

from medexport.engine.errors import ConfigurationError

SERVED_FORM = "(triton://HOST:PORT/MODEL, started with 'medexport serve')"
SERVED_COMMANDS = ("predict", "inspect", "selftest", "bench", "shadow")  # the commands a served model answers
BUNDLE_ARGS = ("bundle", "bundles", "candidate", "current")  # where the other commands take bundles


def refuse_served(args) -> None:
    """A served model where a command needs the bundle's files (to write a new bundle, sign it,
    verify it, serve or export it, commission it, find its shadow runs in a spool) is refused with
    what to pass instead. ``shadow`` runs studies through a served candidate or current model."""
    from medexport.engine.remote import is_remote

    if args.command in SERVED_COMMANDS and not (args.command == "shadow" and args.spool):  # a spool: by SHA-256
        return
    for name in BUNDLE_ARGS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if is_remote(item):
                also = {"verify": f"; 'medexport inspect {item}' shows the server's own signature check",
                        "commission": f"; 'medexport selftest {item}' and 'medexport bench {item}' check and time "
                                      "the served model from here"}.get(args.command, "")
                raise ConfigurationError(f"'medexport {args.command}' on the served model {item}",
                                         expected="a bundle folder or .zip: this command needs the bundle's own "
                                                  f"files (a served model answers {', '.join(SERVED_COMMANDS)})",
                                         fix=f"run 'medexport {args.command}' on the bundle the server was started "
                                             f"with, on its machine (or a copy: 'medexport inspect {item}' names it "
                                             f"by its SHA-256){also}")
