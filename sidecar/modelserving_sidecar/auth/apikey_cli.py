"""`modelserving apikey`: make a new random API key for a serving, print the key once, and print
the Secret manifest that holds only its hash, so nobody hashes keys by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import yaml

from modelserving.api import APIKEYS_SECRET_SUFFIX, LABEL_INSTANCE, LABEL_PART_OF, PART_OF
from modelserving_sidecar.auth.api_keys import hash_api_key, new_api_key

_KEY_NAME = re.compile(r"[-._a-zA-Z0-9]+")  # what a Secret's data key may be


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Make a new API key for a ModelServing. The key goes to stderr, once: give it to the "
        "caller, who sends `Authorization: ApiKey <key>`. The Secret manifest holding its hash "
        "goes to stdout: `modelserving apikey --serving mnist -n demo | kubectl apply -f -`; "
        "the serving names that Secret in spec.auth.apiKeys.secretName."
    )
    parser.add_argument("--serving", required=True, help="the ModelServing's name")
    parser.add_argument("-n", "--namespace", default="default", help="its namespace")
    parser.add_argument(
        "--secret",
        help=f"the Secret's name, as in spec.auth.apiKeys.secretName (default SERVING"
        f"{APIKEYS_SECRET_SUFFIX})",
    )
    parser.add_argument(
        "--key-name",
        default="default",
        help="the key's name: callers are logged under it (default %(default)s)",
    )


def secret_manifest(
    serving: str, namespace: str, key_name: str, key_hash: str, secret: str | None = None
) -> dict[str, Any]:
    """The Secret of a serving's API keys, holding one key's hash under its name."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret or serving + APIKEYS_SECRET_SUFFIX,
            "namespace": namespace,
            "labels": {LABEL_INSTANCE: serving, LABEL_PART_OF: PART_OF},
        },
        "type": "Opaque",
        "stringData": {key_name: key_hash},
    }


def run(args: argparse.Namespace) -> int:
    if not _KEY_NAME.fullmatch(args.key_name):
        print(
            "modelserving apikey: --key-name may hold only letters, digits, '-', '_', '.'",
            file=sys.stderr,
        )
        return 2
    key = new_api_key()
    manifest = secret_manifest(
        args.serving, args.namespace, args.key_name, hash_api_key(key), args.secret
    )
    print(
        f"API key {args.key_name} for {args.namespace}/{args.serving} (shown only now):\n{key}",
        file=sys.stderr,
    )
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0
