{{/* Chart name, overridable. */}}
{{- define "latchkey.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every resource name (63 characters at most, a DNS label). */}}
{{- define "latchkey.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A name derived from the full name, for secondary resources: (dict "context" $ "suffix" "migrate"). */}}
{{- define "latchkey.suffixedName" -}}
{{- printf "%s-%s" (include "latchkey.fullname" .context | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component ("server", "migration" or "sweep"): they tell the pods of the
Deployment, the migration Job and the sweep CronJob apart, so the Service, the PodDisruptionBudget
and the NetworkPolicy only ever select the server.
Usage: include "latchkey.selectorLabels" (dict "context" $ "component" "server")
*/}}
{{- define "latchkey.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latchkey.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The standard labels of every resource, from this one helper.
Usage: include "latchkey.labels" (dict "context" $ "component" "server")
*/}}
{{- define "latchkey.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "latchkey.selectorLabels" . }}
app.kubernetes.io/version: {{ include "latchkey.imageTag" .context | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: latchkey
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end -}}

{{- define "latchkey.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* registry/repository:tag, or …@digest when a digest is given. */}}
{{- define "latchkey.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (include "latchkey.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{- define "latchkey.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "latchkey.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the server and the sweep Job read. */}}
{{- define "latchkey.secretName" -}}
{{- default (include "latchkey.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/*
The service's non-secret environment, as a YAML map of strings: the chart's defaults, then
.Values.env, then what the chart must control itself (ports, public URL, scheduler mode).
*/}}
{{- define "latchkey.environment" -}}
{{- $environment := dict "NODE_ENV" "production" -}}
{{- range $name, $value := .Values.env -}}
{{- $_ := set $environment $name (toString $value) -}}
{{- end -}}
{{- $_ := set $environment "GRPC_PORT" (toString .Values.containerPorts.grpc) -}}
{{- $_ := set $environment "HTTP_PORT" (toString .Values.containerPorts.http) -}}
{{- if .Values.publicUrl -}}
{{- $_ := set $environment "PUBLIC_URL" .Values.publicUrl -}}
{{- end -}}
{{- if eq .Values.scheduler.mode "cronJob" -}}
{{- $_ := set $environment "SCHEDULER_ENABLED" "false" -}}
{{- end -}}
{{- toYaml $environment -}}
{{- end -}}

{{/* The token issuer and audience the mesh checks: the service's own settings unless overridden. */}}
{{- define "latchkey.jwtIssuer" -}}
{{- .Values.istio.requestAuthentication.issuer | default .Values.env.JWT_ISSUER | default .Values.publicUrl -}}
{{- end -}}

{{/* Pod-level settings shared by the server, migration and sweep pods. */}}
{{- define "latchkey.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/* Container-level settings shared by the server, migration and sweep containers. */}}
{{- define "latchkey.containerCommon" -}}
image: {{ include "latchkey.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}
