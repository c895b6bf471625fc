{{- define "amperity-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "amperity-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "amperity-operator.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "amperity-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "amperity-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules for AmperityWorkflowRuns, AmperityWorkflowSchedules, Secrets and Events: exactly what the operator calls. */}}
{{- define "amperity-operator.rules" -}}
- apiGroups: ["amperity.dev"]
  resources: ["amperityworkflowruns"]
  # watch and list: the controllers; get: reads; patch: the finalizer (server-side apply)
  # and a schedule's Replace (spec.stop); delete: ttlSecondsAfterFinished and schedule
  # history; create: a schedule's runs.
  verbs: ["get", "list", "watch", "patch", "delete", "create"]
- apiGroups: ["amperity.dev"]
  resources: ["amperityworkflowruns/status"]
  # Status is written with server-side apply.
  verbs: ["patch"]
- apiGroups: ["amperity.dev"]
  resources: ["amperityworkflowschedules"]
  # watch and list: the controller; get: reads; patch: the finalizer (server-side apply).
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["amperity.dev"]
  resources: ["amperityworkflowschedules/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  # Only the Secret a resource names, read on each call; never listed or watched.
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
