{{/* Name of the chart, overridable. */}}
{{- define "zori-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "zori-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "zori-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zori-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zori-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "zori-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: zori
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "zori-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "zori-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "zori-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Environment variables, each from a value or, when `secret` names one, from a Secret; a variable
with neither is left out. Call with a list of (dict "name" "ZORI_X" "value" "..." "secret" {...}).
*/}}
{{- define "zori-operator.envList" -}}
{{- range . }}
{{- $secret := .secret | default dict }}
{{- if $secret.name }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name | quote }}
      key: {{ required (printf "the Secret key of %s is required" .name) $secret.key | quote }}
{{- else if .value }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The rules the operator needs in the namespaces it watches: read its ZoriProjects and write
their finalizers and status; own the children it creates; publish Events.
*/}}
{{- define "zori-operator.projectRules" -}}
- apiGroups: ["zori.dev"]
  resources: ["zoriprojects"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["zori.dev"]
  resources: ["zoriprojects/status"]
  verbs: ["patch"]
- apiGroups: ["zori.dev"]
  resources: ["zoriprojects/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
