"""The facts the operator, the sidecar, the chart and the tests share: the API's
group, version and names, the ports and the label keys. Defined here once."""

GROUP = "modelserving.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelServing"
PLURAL = "modelservings"
SINGULAR = "modelserving"
SHORT_NAME = "msv"
# RBAC subresource that grants the right to call a serving's :predict paths.
PREDICT_SUBRESOURCE = "predict"

# The serving pod: the sidecar is the only port the Service exposes.
SIDECAR_CONTAINER = "sidecar"
SIDECAR_PORT = 8080
TFSERVING_CONTAINER = "tfserving"
TFSERVING_REST_PORT = 8501
TFSERVING_GRPC_PORT = 8500
# Where the sidecar reads its settings (the operator mounts the rendered ConfigMap there).
SIDECAR_CONFIG_FILE = "/etc/modelserving/sidecar.yaml"
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
PART_OF = "modelserving"
