"""The facts the operator, the sidecar, the chart and the tests share: the API's
group, version and names, the ports, the label keys and the defaults of the settings
they have in common. Defined here once."""

GROUP = "modelserving.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelServing"
PLURAL = "modelservings"
SINGULAR = "modelserving"
SHORT_NAME = "msv"
# The annotation each sidecar writes on its own Pod (through pods/status) with what TF Serving
# says of the model's versions, whether it answers, and whether the auth config is usable; the
# operator turns the pods' reports into status.versions and the ModelReady/AuthReady conditions.
MODEL_REPORT_ANNOTATION = f"{GROUP}/model"
# RBAC subresource that grants the right to call a serving's :predict paths.
PREDICT_SUBRESOURCE = "predict"

# The serving pod: the sidecar is the only port the Service exposes.
SIDECAR_CONTAINER = "sidecar"
SIDECAR_PORT = 8080
TFSERVING_CONTAINER = "tfserving"
TFSERVING_REST_PORT = 8501
# The sidecar serves TF Serving's gRPC API on TF Serving's own gRPC port number (what clients
# written for TF Serving dial), and TF Serving's gRPC port moves out of its way.
SIDECAR_GRPC_PORT = 8500
TFSERVING_GRPC_PORT = 8510
# The largest gRPC message the sidecar takes or passes on, either way, unless the serving says
# another (spec.sidecar.grpc.maxMessageBytes): gRPC's own 4 MiB is too small for many models.
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Where the sidecar reads its settings (the operator mounts the rendered ConfigMap there).
SIDECAR_CONFIG_FILE = "/etc/modelserving/sidecar.yaml"
# Which version answers (weights, labels, shadow, sticky key): the `routing.yaml` key of the
# same ConfigMap. For a serving that lists versions it is mounted as a directory of its own
# (not a subPath), so that the kubelet replaces the file in place when the ConfigMap changes
# and the sidecar re-reads it; for one version written the old way, by subPath, read once.
SIDECAR_ROUTING_FILE = "/etc/modelserving/routing/routing.yaml"
# A serving pod's shutdown, phase by phase, within its terminationGracePeriodSeconds. On SIGTERM
# the sidecar fails readiness and keeps serving while the endpoints stop routing to the pod
# (the delay), then stops listening and gives requests in flight their time (REST and gRPC
# at once), then drains the inference log to Kafka; what Kafka has not acknowledged by then
# stays in the spool, whose ledger is written before exit. TF Serving's container gets its
# SIGTERM (after a preStop sleep) only once the sidecar forwards nothing more.
SHUTDOWN_DELAY_SECONDS = 5
SHUTDOWN_REQUESTS_SECONDS = 20
# The log's drain unless the serving says another (spec.logging.drainTimeoutSeconds, up to
# LOG_DRAIN_SECONDS_MAX): how long a stopping pod waits for Kafka to take what is spooled.
LOG_DRAIN_SECONDS = 20
LOG_DRAIN_SECONDS_MAX = 3600
TFSERVING_STOP_AFTER_SECONDS = SHUTDOWN_DELAY_SECONDS + SHUTDOWN_REQUESTS_SECONDS
# After the drain: time to write the spool's ledger and exit before the kubelet's SIGKILL.
SPOOL_CLOSE_SECONDS = 15


def termination_grace_seconds(drain_seconds: int = LOG_DRAIN_SECONDS) -> int:
    """A serving pod's terminationGracePeriodSeconds: its phases and the spool's close."""
    return SHUTDOWN_DELAY_SECONDS + SHUTDOWN_REQUESTS_SECONDS + drain_seconds + SPOOL_CLOSE_SECONDS


# TF Serving re-reads its models.config this often (--model_config_file_poll_wait_seconds):
# the kubelet takes up to about a minute to update a mounted ConfigMap, so polling more
# often than this gains little, and each poll is one read of a small file.
TFSERVING_CONFIG_POLL_SECONDS = 10
# How long a new pod's TF Serving may go without answering before it counts as down
# (spec.server.startupAllowanceSeconds, the sidecar's upstream.startupAllowanceSeconds): TF
# Serving opens its ports only once it has loaded the model, which for a model of gigabytes
# read from object storage takes minutes. Until then the serving says ModelLoading (starting),
# not ServerUnavailable.
TFSERVING_STARTUP_ALLOWANCE_SECONDS = 600
# `modelserving apikey` names a serving's API key Secret `<serving name>` + this suffix unless
# told otherwise; the serving points at it with spec.auth.apiKeys.secretName.
APIKEYS_SECRET_SUFFIX = "-apikeys"

# Labels the operator puts on every child (the standard app.kubernetes.io keys).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "modelserving-operator"
# The app.kubernetes.io/name of a serving's children, its pods among them (with the serving's
# name as app.kubernetes.io/instance), and their app.kubernetes.io/component: what the
# activator's watch of serving pods selects (the chart's own pods share the name, not the
# component).
SERVING_APP_NAME = "modelserving"
SERVING_COMPONENT = "serving"
PART_OF = "modelserving"

# The image `make image` builds; the chart's image.repository and the operator's default
# sidecar image name it.
IMAGE_REPOSITORY = "localhost/modelserving"
# The TF Serving image of servings whose spec names none (--tfserving-image, the chart's
# tfserving.image).
TFSERVING_IMAGE_REPOSITORY = "tensorflow/serving"
TFSERVING_IMAGE_TAG = "2.18.0"

# The inference log of servings whose spec.logging leaves these out: the defaults of the
# operator's --log-* settings and of the chart's inferenceLog values (a test holds the chart
# to them). The sidecar's own defaults agree, for a config file that leaves them out.
LOG_MODE = "ALL"
LOG_DURABILITY = "spooled"
# zstd: cheaper per record than gzip and smaller on the topic (readers need Kafka >= 2.1).
LOG_COMPRESSION = "zstd"
LOG_SUCCESS_SAMPLE_RATE = 1.0
LOG_ERROR_SAMPLE_RATE = 1.0
LOG_MAX_PAYLOAD_BYTES = 256 * 1024  # per payload (request, answer); 0 means no limit
LOG_OVERSIZE_PAYLOAD = "truncate"
# Empty: unset. A payload that is not JSON is then left out of the record where a redaction
# rule applies to it (redaction fails closed) and kept as it came elsewhere; "keep" or "drop"
# apply to every serving whose spec does not say (modelserving_sidecar.log.policy decides).
LOG_NON_JSON_PAYLOAD = ""
# How often a sidecar forces its spool to disk (fsync), spec.logging.spool.fsyncIntervalSeconds:
# records written less than this long before a power loss (not a process crash) may be lost.
SPOOL_FSYNC_INTERVAL_SECONDS = 1.0
