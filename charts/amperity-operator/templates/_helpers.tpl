{{/* The chart's name, or nameOverride: the app.kubernetes.io/name label. */}}
{{- define "amperity-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of the release's objects: fullnameOverride, or the release name with
the chart's name appended unless it already contains it. */}}
{{- define "amperity-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "amperity-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "amperity-operator.labels" -}}
app.kubernetes.io/name: {{ include "amperity-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "amperity-operator.selector" -}}
app.kubernetes.io/name: {{ include "amperity-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator's image: repository@digest when image.digest is set (the tag is then
not used), else repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "amperity-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
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
{{- if .Values.amperity.connections }}
- apiGroups: ["amperity.dev"]
  resources: ["amperityconnections"]
  # watch and list: the connection controller; get: a run reads the one it names.
  verbs: ["get", "list", "watch"]
- apiGroups: ["amperity.dev"]
  resources: ["amperityconnections/status"]
  verbs: ["patch"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Where the CA bundle is mounted, and the file the operator reads. */}}
{{- define "amperity-operator.caBundleDir" -}}/etc/amperity-operator/ca{{- end -}}

{{/* The CA bundle's volume source, or nothing when no bundle is configured. */}}
{{- define "amperity-operator.caBundleSource" -}}
{{- $ca := .Values.amperity.caBundle -}}
{{- if and $ca.configMapName $ca.secretName -}}
{{- fail "amperity.caBundle: set configMapName or secretName, not both" -}}
{{- end -}}
{{- $items := list (dict "key" $ca.key "path" $ca.key) -}}
{{- if $ca.configMapName -}}
configMap:
  name: {{ $ca.configMapName }}
  items: {{ toJson $items }}
{{- else if $ca.secretName -}}
secret:
  secretName: {{ $ca.secretName }}
  items: {{ toJson $items }}
{{- end -}}
{{- end -}}

{{/* The operator's environment: one variable per flag of `amperity-operator run`. */}}
{{- define "amperity-operator.env" -}}
- name: METRICS_ADDR
  value: "0.0.0.0:{{ .Values.metrics.port }}"
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: AMPERITY_RATE_LIMIT
  value: {{ .Values.amperity.rateLimit | quote }}
- name: AMPERITY_DEFAULT_ENDPOINT
  value: {{ .Values.amperity.defaultEndpoint | quote }}
- name: AMPERITY_ALLOWED_ENDPOINTS
  value: {{ join "," .Values.amperity.allowedEndpoints | quote }}
- name: AMPERITY_API_VERSION
  value: {{ .Values.amperity.apiVersion | quote }}
- name: AMPERITY_REQUEST_TIMEOUT
  value: {{ .Values.amperity.requestTimeoutSeconds | quote }}
- name: AMPERITY_MAX_BODY_BYTES
  value: {{ .Values.amperity.maxBodyBytes | int64 | quote }}
- name: AMPERITY_TLS_ROOTS
  value: {{ .Values.amperity.tlsRoots | quote }}
{{- if include "amperity-operator.caBundleSource" . }}
- name: AMPERITY_CA_FILE
  value: "{{ include "amperity-operator.caBundleDir" . }}/{{ .Values.amperity.caBundle.key }}"
{{- end }}
- name: AMPERITY_CHANGE_FEED
  value: {{ .Values.amperity.changeFeed | quote }}
- name: AMPERITY_CONNECTIONS
  value: {{ .Values.amperity.connections | quote }}
{{- with .Values.watchNamespaces }}
# Unset means all namespaces (an empty value would name the namespace "").
- name: WATCH_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
- name: RETRY_BACKOFF_SECS
  value: {{ .Values.controller.retryBackoffSeconds | quote }}
- name: STALLED_RECHECK_SECS
  value: {{ .Values.controller.stalledRecheckSeconds | quote }}
- name: START_SETTLE_SECS
  value: {{ .Values.controller.startSettleSeconds | quote }}
- name: DELETION_GRACE_SECS
  value: {{ .Values.controller.deletionGraceSeconds | quote }}
- name: STOP_GRACE_SECS
  value: {{ .Values.controller.stopGraceSeconds | quote }}
- name: CONTROLLER_CONCURRENCY
  value: {{ .Values.controller.concurrency | quote }}
- name: LEADER_ELECTION
  value: {{ .Values.leaderElection.enabled | quote }}
- name: LEASE_NAME
  value: {{ .Values.leaderElection.leaseName | quote }}
- name: LEASE_SECONDS
  value: {{ .Values.leaderElection.leaseSeconds | quote }}
- name: CLAIMS_CONFIGMAP
  value: {{ .Values.claimsConfigMap | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* The default pod anti-affinity (podAntiAffinity: soft or hard), used when `affinity` is empty. */}}
{{- define "amperity-operator.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "amperity-operator.selector" . | fromYaml)) -}}
{{- if eq .Values.podAntiAffinity "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm: {{ toJson $term }}
{{- else if eq .Values.podAntiAffinity "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{ toJson $term }}
{{- end -}}
{{- end -}}
