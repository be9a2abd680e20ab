"""What the sidecar is measured against: bare aiohttp and grpc.aio proxies (modules here), and
the folders of nginx configurations (nginx/), KServe's agent (kserve_agent/) and the gRPC
upstream (grpc_upstream/), read from BASELINES."""

from pathlib import Path

BASELINES = Path(__file__).resolve().parent
