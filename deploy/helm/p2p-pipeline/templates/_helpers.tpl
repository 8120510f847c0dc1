{{/* The objects' common name: the release, with the chart's name unless it holds it. */}}
{{- define "p2p.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "p2p.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "p2p.labels" -}}
{{ include "p2p.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Replicas never exceed the partition count: an instance without partitions is never ready. */}}
{{- define "p2p.replicas" -}}
{{- min (int .Values.replicas) (int .Values.topics.partitions) -}}
{{- end -}}

{{- define "p2p.maxReplicas" -}}
{{- min (int .Values.keda.maxReplicas) (int .Values.topics.partitions) -}}
{{- end -}}

{{/* The pod's memory: the state budget plus the clients' share (ADR 0012). */}}
{{- define "p2p.memoryRequestMib" -}}
{{- add (int .Values.pipeline.stateMemoryMib) (int .Values.pipeline.memoryOverheadMib) -}}
{{- end -}}

{{- define "p2p.passwordSecret" -}}
{{- if .Values.kafka.sasl.existingSecret -}}
{{- .Values.kafka.sasl.existingSecret -}}
{{- else -}}
{{- printf "%s-kafka" (include "p2p.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Topics a topology reads: each has a dead-letter queue. */}}
{{- define "p2p.readTopics" -}}
{{- $n := .Values.topics.names -}}
{{- list $n.requisition_events $n.po_events $n.grn_events $n.invoice_events $n.approval_decisions $n.invoice_decisions $n.org_config $n.supplier_master $n.payment_status $n.invoice_matched $n.invoice_exceptions $n.payment_schedule | toJson -}}
{{- end -}}

{{/* Topics the pipeline writes (DLQs aside). */}}
{{- define "p2p.writtenTopics" -}}
{{- $n := .Values.topics.names -}}
{{- list $n.invoice_matched $n.invoice_exceptions $n.invoice_status $n.approval_requests $n.po_status $n.audit_events $n.payment_schedule $n.payment_instructions | toJson -}}
{{- end -}}
