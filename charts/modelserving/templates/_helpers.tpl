{{/*
Names, labels and images used by every template: defined once here.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "modelserving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of the release's objects: fullnameOverride, else the release
name when it already contains the chart's name, else "<release>-<chart>". 63
characters at most (a DNS label).
*/}}
{{- define "modelserving.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "modelserving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods; they never change across upgrades. */}}
{{- define "modelserving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelserving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The standard labels of every object of the release. */}}
{{- define "modelserving.labels" -}}
helm.sh/chart: {{ include "modelserving.chart" . }}
{{ include "modelserving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelserving
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "modelserving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelserving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is needed when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ClusterRole bound to the pods of servings with auth mode kubernetes. */}}
{{- define "modelserving.sidecarAuthClusterRole" -}}
{{- default (printf "%s-sidecar-auth" (include "modelserving.fullname" .)) .Values.sidecarAuth.clusterRoleName }}
{{- end }}

{{/* The ClusterRole the operator binds (RoleBinding) to the pods of servings that log. */}}
{{- define "modelserving.sidecarLogStatusClusterRole" -}}
{{- printf "%s-sidecar-log-status" (include "modelserving.fullname" .) }}
{{- end }}

{{/* The kopf peering object's name. */}}
{{/* The activator's name (its Deployment, Service and ServiceAccount), and the labels that
select its pods. */}}
{{- define "modelserving.activatorName" -}}
{{- printf "%s-activator" (include "modelserving.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelserving.activatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelserving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: activator
{{- end }}

{{- define "modelserving.activatorLabels" -}}
helm.sh/chart: {{ include "modelserving.chart" . }}
{{ include "modelserving.activatorSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelserving
{{- end }}

{{- define "modelserving.peeringName" -}}
{{- default (include "modelserving.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The operator's image; the tag defaults to the appVersion, the project's version. */}}
{{- define "modelserving.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The sidecar's image: the same image unless set apart. */}}
{{- define "modelserving.sidecarImage" -}}
{{- $repository := default .Values.image.repository .Values.sidecar.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* The TF Serving image of servings whose spec names none. */}}
{{- define "modelserving.tfservingImage" -}}
{{- printf "%s:%s" .Values.tfserving.image.repository .Values.tfserving.image.tag }}
{{- end }}
