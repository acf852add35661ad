{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "clusterset.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.fullname" -}}
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

{{- define "clusterset.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.dns.name" -}}
{{- printf "%s-dns" (include "clusterset.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.controller.name" -}}
{{- printf "%s-controller" (include "clusterset.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.hub.name" -}}
{{- printf "%s-hub" (include "clusterset.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.kubeconfig.name" -}}
{{- printf "%s-in-cluster-kubeconfig" (include "clusterset.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "clusterset.dns.serviceAccountName" -}}
{{- if .Values.dns.serviceAccount.create }}
{{- default (include "clusterset.dns.name" .) .Values.dns.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.dns.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clusterset.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "clusterset.controller.name" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "clusterset.hub.serviceAccountName" -}}
{{- default (include "clusterset.hub.name" .) .Values.memberRBAC.serviceAccount.name }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "clusterset.selectorLabels" -}}
app.kubernetes.io/name: {{ include "clusterset.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "clusterset.labels" -}}
helm.sh/chart: {{ include "clusterset.chart" . }}
{{ include "clusterset.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: clusterset
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* "clusterset.componentLabels" (list . "dns") */}}
{{- define "clusterset.componentLabels" -}}
{{ include "clusterset.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "clusterset.componentSelector" -}}
{{ include "clusterset.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Image and pod pieces --------------------------------------------------------------- */}}

{{- define "clusterset.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Global flags, before the subcommand. */}}
{{- define "clusterset.globalArgs" -}}
- --log-level={{ .Values.log.level }}
- --log-format={{ .Values.log.format }}
{{- end }}

{{/* Environment every container gets: its identity (leader election, logs) and a writable
     state directory on the emptyDir (the root filesystem is read-only). */}}
{{- define "clusterset.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: XDG_STATE_HOME
  value: /tmp/state
{{- end }}

{{/* "clusterset.scrapeAnnotations" port */}}
{{- define "clusterset.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end }}

{{- define "clusterset.inClusterKubeconfigPath" -}}
/etc/clusterset/in-cluster/kubeconfig
{{- end }}

{{/* "clusterset.leaseRules" leaseName: what kube/lease.py's LeaderElector does (GET the
     Lease, POST it when missing, PUT it to take or renew). create cannot be narrowed by name. */}}
{{- define "clusterset.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ . | quote }}]
  verbs: [get, update]
{{- end }}

{{/* The hub's identity in a member: the ServiceAccount made here and/or memberRBAC.subjects. */}}
{{- define "clusterset.hub.subjects" -}}
{{- if .Values.memberRBAC.serviceAccount.create }}
- kind: ServiceAccount
  name: {{ include "clusterset.hub.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
{{- with .Values.memberRBAC.subjects }}
{{ toYaml . }}
{{- end }}
{{- end }}
