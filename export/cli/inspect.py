"""``medexport inspect`` (what a bundle or a served model states) and ``medexport selftest``
(checksums and golden inputs on every artifact that runs here, or through a server)."""
from __future__ import annotations

import json

from medexport.engine.errors import ConfigurationError

from .served import SERVED_FORM


def add_parsers(sub) -> None:
    i = sub.add_parser("inspect", help="show a bundle's manifest, card, artifacts and validation; for a served "
                                        "model, what its server states (the same, plus the artifact, backend and "
                                        "device it runs)")
    i.add_argument("bundle", help=f"bundle folder or .zip, or a served model {SERVED_FORM}")
    i.add_argument("--json", action="store_true", help="print the manifest and reports as JSON")

    s = sub.add_parser("selftest", help="verify checksums and run golden inputs on every artifact that runs here; "
                                         "a served model: its golden inputs through the server, compared with the "
                                         "source model at the artifact's tolerance",
                       description="Local bundles: every artifact whose runtime is here runs the bundle's golden "
                                   "inputs and is compared with the float source model's stored scores. A served "
                                   f"model {SERVED_FORM}: the server sends the golden inputs of the bundle it runs "
                                   "(checked against the SHA-256 of that bundle's manifest), they go back through "
                                   "the server one by one and from 4 threads, and its answers are compared the same "
                                   "way. With --bundle, the golden inputs come from your own copy of the served "
                                   "bundle instead (refused unless it is the same bundle, by SHA-256): the check then "
                                   "does not rely on the server's copy.")
    s.add_argument("bundles", nargs="+", help=f"bundle folders or .zip files, or served models {SERVED_FORM}")
    s.add_argument("--bundle", dest="local_copies", action="append", default=[], metavar="COPY",
                   help="a local copy of a served model's bundle to take its golden inputs from (matched by model "
                        "id; repeatable)")


def cmd_inspect(args) -> int:
    from ..render import inspect_bundle

    text, data = inspect_bundle(args.bundle)
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0


def cmd_selftest(args) -> int:
    from medexport.engine.open import self_test_bundle

    copies = _local_copies(args.local_copies, args.bundles)
    failed = 0
    for path in args.bundles:
        for check in self_test_bundle(path, reference=copies.get(path)):
            failed += not check.passed and not check.skipped
            print(check.line())
    return 1 if failed else 0


def _local_copies(copies: list[str], items: list[str]) -> dict:
    """Each --bundle COPY for the served model of the same model id among ``items``."""
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.remote import is_remote, parse_url

    served = {parse_url(item)[2]: item for item in items if is_remote(item)}
    out = {}
    for copy in copies:
        model_id = read_manifest(copy, verify=False)[0].model_id  # checked in full against the server's SHA-256
        if model_id not in served:
            raise ConfigurationError(f"--bundle {copy} is model {model_id!r}; no served model of that id is given "
                                     f"({', '.join(served) or 'no triton:// address'})",
                                     expected="--bundle only with the served model it is a copy of",
                                     fix=f"add triton://HOST:PORT/{model_id}, or leave --bundle out")
        out[served[model_id]] = copy
    return out


COMMANDS = {"inspect": cmd_inspect, "selftest": cmd_selftest}
