"""`modelserving operator`: run the operator that reconciles ModelServings (kopf, in-process)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from modelserving_operator.settings import SettingsError, settings_from
from modelserving_operator.settings import configure_parser as _settings_parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Flags override the environment variables named beside them. Credentials come from "
        "the pod's ServiceAccount, else from $KUBECONFIG."
    )
    _settings_parser(parser)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, os.environ)
    except SettingsError as exc:
        print(f"modelserving operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiokafka logs every failed connection attempt; the LoggingReady condition says it once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    import kopf

    from modelserving_operator import handlers  # noqa: F401 (registers the handlers)
    from modelserving_operator.runtime.kopf_internals import (
        handle_events_while_indexing,
        wake_toggle_waiters_on_change_only,
    )

    # A start over thousands of objects: see kopf_internals.
    handle_events_while_indexing()
    wake_toggle_waiters_on_change_only()

    if not settings.read_secrets:
        logging.getLogger("modelserving_operator").warning(
            "Secrets are not read (--read-secrets false): a Secret that spec.server.env or "
            "envFrom reads, changed in place, does not roll the pods (kubectl rollout restart "
            "does), and the topic admin cannot use Kafka credentials held in Secrets"
        )

    liveness = (
        f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    )
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering,
        memo=kopf.Memo(settings=settings),
        liveness_endpoint=liveness,
    )
    return 0
