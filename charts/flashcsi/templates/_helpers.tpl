{{/*
Names, labels and images shared by every template.
*/}}

{{/* The CSI driver name: GetPluginInfo, the CSIDriver object, StorageClass provisioner (src/constants.ts). */}}
{{- define "flashcsi.driverName" -}}
flashcsi.io
{{- end -}}

{{/* The topology key of a volume's node (src/constants.ts TOPOLOGY_NODE_KEY). */}}
{{- define "flashcsi.topologyKey" -}}
topology.flashcsi.io/node
{{- end -}}

{{/* Prefix of every object name: "flashcsi" unless fullnameOverride says otherwise. */}}
{{- define "flashcsi.fullname" -}}
{{- default "flashcsi" .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "flashcsi.nodeName" -}}
{{ include "flashcsi.fullname" . }}-node
{{- end -}}

{{- define "flashcsi.coordinatorName" -}}
{{ include "flashcsi.fullname" . }}-coordinator
{{- end -}}

{{- define "flashcsi.snapshotControllerName" -}}
{{ include "flashcsi.fullname" . }}-snapshot-controller
{{- end -}}

{{/* Labels that select a component's pods (stable across upgrades). Pass (dict "ctx" . "component" "node"). */}}
{{- define "flashcsi.selectorLabels" -}}
app.kubernetes.io/name: flashcsi
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object. Pass (dict "ctx" . "component" "node"). */}}
{{- define "flashcsi.labels" -}}
{{ include "flashcsi.selectorLabels" . }}
app.kubernetes.io/part-of: flashcsi
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The flashcsi image. */}}
{{- define "flashcsi.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* A sidecar image from {repository, tag}. */}}
{{- define "flashcsi.sidecarImage" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}

{{/* Security context of a sidecar in the node pod: root (to reach the root-owned plugin and
registration sockets on the host) but with no capabilities, no privilege escalation and a read-only
root file system. */}}
{{- define "flashcsi.nodeSidecarSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Security context of every container in the coordinator and snapshot-controller pods. */}}
{{- define "flashcsi.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The env entries every pod uses to know itself. */}}
{{- define "flashcsi.downwardEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* The audience of SnapshotMetadata clients' tokens. */}}
{{- define "flashcsi.snapshotMetadataAudience" -}}
{{- default (include "flashcsi.driverName" .) .Values.snapshotMetadata.audience -}}
{{- end -}}
